"""Suite-wide settings, and the `wandb_env` fixture (W&B with no login, every file under tmp_path).

One intra-op thread per test process: the suite runs under pytest-xdist on a 2-core machine, and
torch's default of one thread per core makes the workers fight over the cores (a tiny `generate`
measured 0.04 s with one thread and up to 1 s with two under that contention). Set before any
test module imports torch, which reads it at import.
"""

import os
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; fail fast instead of retrying


def _teardown_wandb() -> None:
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """No credentials anywhere, nothing written outside tmp_path."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR",
                 "WANDB_SILENT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))  # does not exist
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "wandb-data"))
    _teardown_wandb()
    yield tmp_path / "out"
    _teardown_wandb()
