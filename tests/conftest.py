"""Suite-wide settings.

One intra-op thread per test process: the suite runs under pytest-xdist on a 2-core machine, and
torch's default of one thread per core makes the workers fight over the cores (a tiny `generate`
measured 0.04 s with one thread and up to 1 s with two under that contention). Set before any
test module imports torch, which reads it at import.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; fail fast instead of retrying
