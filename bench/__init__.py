"""gfldet's benchmark scripts (run as ``python bench/NAME.py``) and the synthetic data sets they share (bench.synth)."""
