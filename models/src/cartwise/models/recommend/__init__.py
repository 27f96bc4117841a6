"""Recommendations: baselines, BPR-MF, a two-tower hybrid, a session GRU, and the predictor.

- :mod:`.data`: purchases (from facts exports, a ``Source`` or Online Retail) → interactions,
  and shopper events → session sequences;
- :mod:`.features`: ``recommend_v1`` / ``product_v1`` rows → tower inputs;
- :mod:`.dataset`: a ``Source`` → the time split, the catalogue with MiniLM vectors, tower data;
- :mod:`.metrics`: NDCG@k and Recall@k with full ranking; next-item HR@k and MRR@k;
- :mod:`.baselines`: popularity, item-kNN, EASE, repurchase, repurchase blends, session
  transitions;
- :mod:`.model`: the ``nn.Module``s (BPR-MF, the two-tower, the session GRU, the re-ranker MLP);
- :mod:`.train`: one training trial of each, deterministic for a seed;
- :mod:`.hybrid`: candidates and features for the re-ranker;
- :mod:`.tune`: Ray Tune over the two-tower, then registration as ``challenger``;
- :mod:`.evaluate`: the time-split protocol (Online Retail), MovieLens 100K, the session
  benchmark, the gate's ``holdout`` and the quality bench's ``benchmark``;
- :mod:`.predict`: the torch-free :class:`~.predict.Recommender`.

Import the submodules directly; this package imports nothing heavy on its own.
"""
