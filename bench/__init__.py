"""Benchmark of rnnkernels against torch.nn: `python bench/run.py` or `python -m bench`."""
