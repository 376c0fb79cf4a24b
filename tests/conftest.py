"""Suite-wide settings, and the `wandb_env` fixture (W&B with no login, every file under tmp_path).

One intra-op thread per test process: the suite runs under pytest-xdist on a 2-core machine, and
torch's default of one thread per core makes the workers fight over the cores (a tiny `generate`
measured 0.04 s with one thread and up to 1 s with two under that contention). Set before any
test module imports torch, which reads it at import.

A test that starts several processes (torchrun, `all_cores` marker) runs alone: the other worker
finishes its current test and waits. Two training processes that share one core with the other
worker's test wait on each other at every collective, and such a test took several times as long
in the suite as alone.
"""

import fcntl
import os
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; fail fast instead of retrying


def pytest_configure(config):
    config.addinivalue_line("markers", "all_cores: starts several processes; runs while no other test does")


@pytest.fixture(autouse=True)
def _cores(request, tmp_path_factory):
    """A readers-writer lock over the xdist workers (files in their shared temp folder): a test holds
    it shared, an `all_cores` test exclusively. A waiting exclusive test holds the turnstile, so
    the other worker's next test queues behind it instead of starving it."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent
    alone = request.node.get_closest_marker("all_cores") is not None
    with open(shared / "cores.turnstile", "a") as turnstile, open(shared / "cores.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


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
