"""Customers: segments, churn, 90-day value, association rules and cohorts.

- :mod:`.data`: ``customer_v1`` features at cut-offs (Feast) and labels from the orders after;
- :mod:`.model`: the ``nn.Module``s (autoencoder, churn and value MLPs);
- :mod:`.train`: one trial (all three networks), deterministic for a seed;
- :mod:`.tune`: Ray Tune over the trial, then registration as ``challenger``;
- :mod:`.baselines`: BG/NBD, Gamma-Gamma, historical average, logistic regression on log RFM;
- :mod:`.evaluate`: the held-out window for the gate and the quality benchmark;
- :mod:`.predict`: the torch-free :class:`~.predict.CustomerModel` serving loads;
- :mod:`.rules`: co-purchase association rules; :mod:`.cohorts`: acquisition cohort tables.

Import the submodules directly; this package imports nothing heavy on its own.
"""
