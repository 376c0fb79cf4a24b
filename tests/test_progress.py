"""Progress bars are drawn on a terminal only: a CI log gets no redraws."""

from __future__ import annotations

import io

from tsllm.progress import show_progress
from tsllm.training.policy_trainer import PolicyTrainConfig


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("TSLLM_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a file or a CI log
    assert not show_progress() and not show_progress(True)
    assert PolicyTrainConfig().trainer_arguments(None)["disable_tqdm"]  # transformers/TRL bars too
    monkeypatch.setattr("sys.stderr", Terminal())
    assert show_progress() and not show_progress(False)
    assert not PolicyTrainConfig().trainer_arguments(None)["disable_tqdm"]
    monkeypatch.setenv("TSLLM_PROGRESS", "0")
    assert not show_progress()
