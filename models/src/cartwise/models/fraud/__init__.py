"""Fraud: a classifier MLP and an autoencoder, stacked into a calibrated risk with decisions.

- :mod:`.data`: customer orders → ``fraud_v1`` feature rows (Feast, point in time) + labels;
- :mod:`.model`: the ``nn.Module``s (classifier MLP, autoencoder) and their numpy export;
- :mod:`.calibrate`: the logistic stacker and the precision-targeted thresholds;
- :mod:`.metrics`: PR-AUC (optionally re-weighted to a real base rate), recall at an FPR;
- :mod:`.baselines`: logistic regression and gradient boosting;
- :mod:`.train`: one training trial, deterministic for a seed;
- :mod:`.tune`: Ray Tune over the trial, registering the ``fraud`` challenger;
- :mod:`.evaluate`: the gate's held-out window and the quality benchmark;
- :mod:`.predict`: the torch-free :class:`~.predict.FraudScorer` serving loads.

Import the submodules directly; this package imports nothing heavy on its own.
"""
