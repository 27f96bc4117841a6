"""Recommendations: baselines, BPR-MF, a hybrid re-ranker, and the predictor serving loads.

- :mod:`.data`: purchases (from facts exports or Online Retail) → interactions;
- :mod:`.metrics`: NDCG@k and Recall@k with full ranking;
- :mod:`.baselines`: popularity, item-kNN, EASE, repurchase, repurchase blends;
- :mod:`.model`: the ``nn.Module``s (BPR-MF, the re-ranker MLP);
- :mod:`.train`: one training trial (``train(config, data)``), deterministic for a seed;
- :mod:`.hybrid`: candidates and features for the re-ranker;
- :mod:`.evaluate`: the time-split protocol and the Online Retail benchmark;
- :mod:`.predict`: the torch-free :class:`~.predict.Recommender`.

Import the submodules directly; this package imports nothing heavy on its own.
"""
