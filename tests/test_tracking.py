"""Tracking: the no-op tracker, W&B modes (offline, auto, online fallback), rounds.jsonl, plots.

W&B tests run with HOME, netrc and wandb's config/cache dirs inside tmp_path and no W&B variables
from the outer environment; wandb's process-wide state is torn down around each test, because
wandb reads environment variables once per setup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import _teardown_wandb
from tsllm import tracking
from tsllm.tracking import (
    RUN_ID_FILE,
    MultiTracker,
    NoOpTracker,
    RoundsLog,
    Tracker,
    TrackingFallbackWarning,
    WandbTracker,
    make_tracker,
    plot_accuracy_per_round,
    plot_accuracy_vs_tokens,
    wandb_login_present,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_files(out: Path, run_id: str) -> list[Path]:
    """The binary run logs wandb wrote for `run_id` (one per offline session).

    `run.finish()` can return a few ms before wandb's service process has flushed the file;
    tearing the service down waits for that.
    """
    _teardown_wandb()
    return sorted(out.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))  # wandb adds "-1" on a clash


# ------------------------------------------------------------------------------------------- no-op


def test_noop_tracker_does_nothing_and_never_imports_wandb(tmp_path):
    # In a fresh interpreter: other tests in this process import wandb.
    code = (
        "import sys\n"
        "from tsllm.tracking import NoOpTracker, WandbTracker, make_tracker\n"
        "for t in (NoOpTracker(), make_tracker('none'), WandbTracker('p', dir=sys.argv[1], mode='disabled')):\n"
        "    t.log({'greedy_accuracy': 0.5}, step=0); t.summary({'best': 0.5}); t.finish()\n"
        "assert type(make_tracker('none')).__name__ == 'NoOpTracker'\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []  # disabled W&B writes no files, not even the run-id file
    assert isinstance(NoOpTracker(), Tracker)


# --------------------------------------------------------------------------------------------- W&B


def test_offline_run_is_written_under_dir_and_holds_the_rows(wandb_env, monkeypatch):
    # The explicit mode wins over WANDB_MODE in the environment (disabled would write nothing).
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = WandbTracker("tsllm-test", "offline-run", {"lr": 3e-4}, dir=wandb_env, mode="offline")
    assert tracker.mode == "offline"
    tracker.log({"greedy_accuracy": 0.8125, "search_accuracy": 0.9375}, step=0)
    tracker.log({"greedy_accuracy": 0.875}, step=1)
    tracker.summary({"best_search_accuracy": 0.9375})
    tracker.finish()
    tracker.finish()  # idempotent

    run_id = (wandb_env / RUN_ID_FILE).read_text().strip()
    assert run_id == tracker.run_id
    [run_file] = _run_files(wandb_env, run_id)
    data = run_file.read_bytes()
    # History records keep key names and JSON-encoded values as plain bytes.
    for token in (b"greedy_accuracy", b"search_accuracy", b"0.8125", b"0.875", b"best_search_accuracy"):
        assert token in data, token


def test_resumed_tracker_reuses_the_saved_run_id(wandb_env):
    first = WandbTracker("tsllm-test", dir=wandb_env, mode="offline")
    first.log({"a_accuracy": 0.1}, step=0)
    first.finish()
    second = WandbTracker("tsllm-test", dir=wandb_env, mode="offline")
    second.finish()
    assert second.run_id == first.run_id
    assert len(_run_files(wandb_env, first.run_id)) == 2  # two offline sessions of one W&B run
    # An explicit resume id wins over the saved one and becomes the saved one.
    third = WandbTracker("tsllm-test", dir=wandb_env, mode="offline", resume_id="chosen01")
    third.finish()
    assert third.run_id == "chosen01"
    assert (wandb_env / RUN_ID_FILE).read_text().strip() == "chosen01"


def test_auto_without_login_goes_offline_with_one_notice(wandb_env, capsys):
    assert not wandb_login_present()
    tracker = WandbTracker("tsllm-test", dir=wandb_env, mode="auto")
    tracker.log({"greedy_accuracy": 0.5}, step=0)
    tracker.finish()
    captured = capsys.readouterr()
    notices = [line for line in (captured.out + captured.err).splitlines() if line.startswith("tsllm:")]
    assert len(notices) == 2, notices  # one when it starts, the upload command when it ends
    assert "offline" in notices[0]
    assert tracker.mode == "offline"
    [run_file] = _run_files(wandb_env, tracker.run_id)
    assert notices[1].endswith(f"wandb sync {run_file.parent}")


def test_auto_follows_wandb_mode_from_the_environment_silently(wandb_env, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's own choice: no notice, no run files
    tracker = WandbTracker("tsllm-test", dir=wandb_env, mode="auto")
    tracker.log({"greedy_accuracy": 0.5}, step=0)
    tracker.finish()
    assert tracker.mode == "disabled"
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("tsllm:")]
    assert not (wandb_env / "wandb").exists()


def test_login_detection_sees_env_key_and_netrc(wandb_env, monkeypatch):
    host = "http://127.0.0.1:9"
    assert not wandb_login_present(host)
    Path(os.environ["NETRC"]).write_text(f"machine 127.0.0.1:9\n  login user\n  password {'b' * 40}\n")
    assert wandb_login_present(host)
    Path(os.environ["NETRC"]).unlink()
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    assert wandb_login_present(host)


def test_unreachable_online_init_falls_back_to_offline_with_one_warning(wandb_env, monkeypatch, capsys):
    # A key is present, so "auto" tries online; port 9 on localhost refuses connections.
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    # silent skips wandb's account lookup (10 s of retries here); base_url is repeated in the
    # settings so no request can go anywhere but the closed port.
    settings = {"init_timeout": 2, "silent": True, "base_url": "http://127.0.0.1:9"}
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = WandbTracker("tsllm-test", dir=wandb_env, mode="auto", settings=settings)
    assert time.monotonic() - started < 15
    fallbacks = [w for w in caught if issubclass(w.category, TrackingFallbackWarning)]
    assert len(fallbacks) == 1, [str(w.message) for w in caught]
    assert "offline" in str(fallbacks[0].message)
    assert tracker.mode == "offline"
    tracker.log({"search_accuracy": 0.625}, step=3)
    tracker.finish()
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tsllm:")]
    [run_file] = _run_files(wandb_env, tracker.run_id)
    assert notices == [f"tsllm: W&B run logged offline; upload it with: wandb sync {run_file.parent}"]
    assert b"0.625" in run_file.read_bytes()


def test_unreachable_server_is_given_up_after_the_tracker_default_not_wandbs_90_s(wandb_env, monkeypatch):
    import wandb

    assert tracking.INIT_TIMEOUT_S <= wandb.Settings().init_timeout / 4  # the point of the default
    # No init_timeout passed, so only the tracker's default can end the wait: were wandb's 90 s
    # in force, the bound below would fail. The default is shrunk so the test stays quick.
    monkeypatch.setattr(tracking, "INIT_TIMEOUT_S", 2.0)
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = WandbTracker("tsllm-test", dir=wandb_env, mode="online",
                               settings={"silent": True, "base_url": "http://127.0.0.1:9"})
    assert time.monotonic() - started < 15
    assert [issubclass(w.category, TrackingFallbackWarning) for w in caught].count(True) == 1
    assert tracker.mode == "offline"
    tracker.finish()


def test_make_tracker_fans_out_to_rounds_log_and_wandb(wandb_env):
    tracker = make_tracker("wandb", wandb_env, run_name="fan-out", config={"seed": 1}, mode="offline")
    assert isinstance(tracker, MultiTracker)
    assert [type(t).__name__ for t in tracker.trackers] == ["RoundsLog", "WandbTracker"]
    tracker.log({"greedy_accuracy": 0.4375}, step=0)
    tracker.finish()
    assert RoundsLog(wandb_env / "rounds.jsonl").rows() == [{"round": 0, "greedy_accuracy": 0.4375}]
    [run_file] = _run_files(wandb_env, tracker.trackers[1].run_id)
    assert b"0.4375" in run_file.read_bytes()
    assert isinstance(make_tracker("none", wandb_env), RoundsLog)
    with pytest.raises(ValueError, match="'wandb' or 'none'"):
        make_tracker("tensorboard", wandb_env)
    with pytest.raises(ValueError, match="mode"):
        WandbTracker("p", dir=wandb_env, mode="sometimes")


class _Recorder:
    def __init__(self, fail_finish=False):
        self.calls, self.fail_finish = [], fail_finish

    def log(self, row, step):
        self.calls.append(("log", row, step))

    def summary(self, values):
        self.calls.append(("summary", values))

    def finish(self):
        self.calls.append(("finish",))
        if self.fail_finish:
            raise RuntimeError("upload failed")


def test_multi_tracker_finishes_every_tracker_even_when_one_fails():
    first, second = _Recorder(fail_finish=True), _Recorder()
    multi = MultiTracker([first, second])
    multi.log({"x": 1}, step=2)
    multi.summary({"y": 2})
    with pytest.raises(RuntimeError, match="upload failed"):
        multi.finish()
    expected = [("log", {"x": 1}, 2), ("summary", {"y": 2}), ("finish",)]
    assert first.calls == expected and second.calls == expected


# ------------------------------------------------------------------------------------ rounds.jsonl


def test_rounds_log_reads_back_and_replaces_a_relogged_round(tmp_path):
    log = RoundsLog(tmp_path / "out" / "rounds.jsonl")
    assert log.rows() == []
    log.log({"greedy_accuracy": 0.25, "tokens_per_question": 100}, step=0)
    log.log({"greedy_accuracy": 0.5}, step=1)
    log.log({"greedy_accuracy": 0.375, "note": "after resume"}, step=0)  # round 0 again: replaces
    assert log.rows() == [{"round": 0, "greedy_accuracy": 0.375, "note": "after resume"},
                          {"round": 1, "greedy_accuracy": 0.5}]
    lines = (tmp_path / "out" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1]  # no duplicate left in the file
    with pytest.raises(ValueError, match="round=3"):
        log.log({"round": 3}, step=2)


def test_rounds_log_survives_a_truncated_last_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    log = RoundsLog(path)
    log.log({"greedy_accuracy": 0.25}, step=0)
    log.log({"greedy_accuracy": 0.5}, step=1)
    whole = path.read_bytes()
    path.write_bytes(whole[:-9])  # a kill in the middle of writing round 1
    with pytest.warns(UserWarning, match="partial last line"):
        assert log.rows() == [{"round": 0, "greedy_accuracy": 0.25}]
    with pytest.warns(UserWarning, match="partial last line"):
        log.log({"greedy_accuracy": 0.625}, step=1)  # the redo of round 1 repairs the file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log.rows() == [{"round": 0, "greedy_accuracy": 0.25}, {"round": 1, "greedy_accuracy": 0.625}]
    assert path.read_text().endswith("}\n")

    # A last line that lost only its newline is whole: kept, and the next append does not glue onto it.
    path.write_bytes(path.read_bytes()[:-1])
    log.log({"greedy_accuracy": 0.75}, step=2)
    assert [row["round"] for row in log.rows()] == [0, 1, 2]


def test_rounds_log_names_file_and_line_of_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"round": 0}\nnot json\n{"round": 1}\n')
    with pytest.raises(ValueError, match=r"rounds.jsonl:2"):
        RoundsLog(path).rows()


def test_rounds_log_writes_numpy_values_as_plain_numbers(tmp_path):
    np = pytest.importorskip("numpy")
    log = RoundsLog(tmp_path / "rounds.jsonl")
    log.log({"search_accuracy": np.float32(0.5), "counts": np.array([1, 2])}, step=np.int64(0).item())
    assert log.rows() == [{"round": 0, "search_accuracy": 0.5, "counts": [1, 2]}]


def test_rounds_and_each_stage_s_curve_get_their_own_axes(wandb_env):
    tracker = WandbTracker("tsllm-test", dir=wandb_env, mode="offline")
    tracker.log({"greedy_accuracy": 0.25}, step=0)
    for step, loss in ((5, 1.0), (10, 0.5), (5, 0.9), (10, 0.4)):  # two trainings of one stage
        tracker.log_series("value", {"loss": loss}, step)
    tracker.log({"greedy_accuracy": 0.5}, step=1)  # after the trainers' points: not dropped
    tracker.finish()
    rows, axes = offline_history(_run_files(wandb_env, tracker.run_id)[0])
    assert [(r["round"], r["greedy_accuracy"]) for r in rows if "greedy_accuracy" in r] == [(0, 0.25), (1, 0.5)]
    assert [r["value/step"] for r in rows if "value/loss" in r] == [5, 10, 15, 20]  # the second continues
    assert axes["greedy_accuracy"] == "round" and axes["value/loss"] == "value/step"


# ------------------------------------------------------------------------------------------- plots

ROWS = [
    {"round": 0, "greedy_accuracy": 0.1, "greedy_tokens_per_question": 40, "search_accuracy": 0.3,
     "tokens_per_question": 900, "baseline_accuracy": 0.2, "baseline_tokens_per_question": 1000},
    {"round": 1, "greedy_accuracy": 0.18, "greedy_tokens_per_question": 38, "search_accuracy": 0.42,
     "tokens_per_question": 850, "baseline_accuracy": 0.25, "baseline_tokens_per_question": 1000},
    {"round": 2, "greedy_accuracy": 0.22, "search_accuracy": 0.5, "tokens_per_question": 820},
]


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS, []], ids=["one-row", "three-rows", "no-rows"])
@pytest.mark.parametrize("plot", [plot_accuracy_per_round, plot_accuracy_vs_tokens])
def test_plots_write_png_files(tmp_path, plot, rows):
    path = tmp_path / "plots" / f"{plot.__name__}.png"
    assert plot(rows, path) == path
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_plot_methods_and_token_keys():
    """Which lines the plots draw: every `<method>_accuracy`, and for tokens the method's own key,
    with search falling back to the plain `tokens_per_question`."""
    from tsllm.tracking import _methods, _tokens_key

    assert _methods(ROWS + [{"round": 3, "_accuracy": 1.0, "x_accuracy": None}]) == ["baseline", "greedy", "search"]
    assert _tokens_key("search", ROWS[0]) == "tokens_per_question"
    assert _tokens_key("search", {"search_tokens_per_question": 5}) == "search_tokens_per_question"
    assert _tokens_key("greedy", ROWS[0]) == "greedy_tokens_per_question"


def offline_history(run_file: Path) -> tuple[list[dict], dict[str, str]]:
    """(history rows, metric -> its step metric) of an offline run's binary log: wandb's record
    log format (a 7-byte file header, 32 KiB blocks of records with a 7-byte header each, a
    record split over blocks as first/middle/last pieces) holding protobuf `Record`s."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", "not a wandb run log"
    pos, block, pending, rows, axes = 7, 32768, b"", [], {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first start a record
        if kind not in (1, 4):  # first/middle: the record goes on
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif record.WhichOneof("record_type") == "metric":
            axes[record.metric.name] = record.metric.step_metric
    return rows, axes
