"""Search: BM25 + MiniLM hybrid retrieval, typo correction, a learned ranker, autocomplete.

- :mod:`.data`: the catalog, searches with their clicks (events), ``search_rank_v1`` stats;
- :mod:`.model`: the ranker ``nn.Module`` and its listwise loss;
- :mod:`.train`: candidate lists from clicks and one training trial (``train(config, ...)``);
- :mod:`.tune`: Ray Tune over the ranker, registering the best predictor as ``challenger``;
- :mod:`.evaluate`: the gate's holdout (MRR@10 on recent clicks) and the typo benchmark;
- :mod:`.predict`: the torch-free :class:`~.predict.SearchPredictor` serving loads.

Import the submodules directly; this package imports nothing heavy on its own.
"""
