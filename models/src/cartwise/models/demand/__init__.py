"""Demand: global quantile forecasts per SKU, reorder points, supplier scores, decomposition.

- :mod:`.data`: daily units through ``demand_v1`` (or Online Retail) → a :class:`~.data.Panel`;
- :mod:`.windows`: the numpy featurisation shared by training and serving;
- :mod:`.model`: the ``nn.Module`` (an MLP encoder and a per-day decoder of ordered quantiles);
- :mod:`.train`: one training trial (``train(config, panel)``), deterministic for a seed;
- :mod:`.tune`: Ray Tune and registration of the ``demand`` challenger;
- :mod:`.predict`: the torch-free :class:`~.predict.DemandForecaster` serving loads;
- :mod:`.metrics`, :mod:`.baselines`, :mod:`.evaluate`: WAPE/MASE/pinball/coverage, the
  baselines, the gate's holdout and the Online Retail benchmark;
- :mod:`.inventory`: safety stock, reorder points and order quantities from the quantiles;
- :mod:`.suppliers`: on-time rate, fill rate and lead-time spread from purchase orders;
- :mod:`.decompose`: trend + weekly season of one SKU.

Import the submodules directly; this package imports nothing heavy on its own.
"""
