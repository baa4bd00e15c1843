"""Synthetic data sets for the benchmarks and the tests (not part of the installed package): the cluttered
scenes (``scenes``, drawn by ``scene_draw``). The demo's shapes stay in gfldet.data.synthetic (the demo uses them)."""
