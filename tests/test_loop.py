"""The iteration loop: stage atomicity and resume, output-dir safety, config errors, and a real
kill of a running loop that must resume to the same trajectories and rounds as an uninterrupted
run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch import LIBRARY_DEFAULTS
from tsllm.config import ConfigError, load_config
from tsllm.loop import LoopConfig, check_output_dir, run_stage

# a loop small enough for CI: 1 round on 6 questions, warm start of a few seconds
TINY = ["rounds=1", "train_questions=6", "test_questions=4", "warmstart.max_seconds=4",
        "samples_per_question=2", "max_step_tokens=24", "search.knobs={num_simulations: 2, width: 2}",
        "value.num_train_epochs=1", "policy.num_train_epochs=1", "tracking.report_to=none",
        "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"]


def test_run_stage_skips_complete_and_redoes_interrupted_stages(tmp_path):
    calls = []

    def work(tmp):
        calls.append(tmp)
        (tmp / "out.txt").write_text("x")
        return {"n": len(calls)}

    stage = tmp_path / "round_0" / "sample"
    assert run_stage(stage, work)["n"] == 1
    assert (stage / "out.txt").is_file() and (stage / "done.json").is_file()
    assert run_stage(stage, work)["n"] == 1 and len(calls) == 1  # complete: skipped

    other = tmp_path / "round_0" / "search"
    partial = other.with_name("search.tmp")
    partial.mkdir()
    (partial / "half.jsonl").write_text("{}")
    run_stage(other, work)  # not resumable: the partial work is discarded
    assert not (other / "half.jsonl").exists()

    trainer = tmp_path / "round_0" / "value"
    kept = trainer.with_name("value.tmp")
    kept.mkdir()
    (kept / "checkpoint").write_text("step 3")

    def resume(tmp):
        return {"resumed_from": (tmp / "checkpoint").read_text()}

    assert run_stage(trainer, resume, resumable=True)["resumed_from"] == "step 3"


def test_output_dir_of_another_run_is_refused_unless_told(tmp_path):
    first = load_config(LoopConfig, None, [f"output_dir={tmp_path}", "rounds=1"])
    check_output_dir(first)
    check_output_dir(first)  # same config: a plain restart resumes
    other = load_config(LoopConfig, None, [f"output_dir={tmp_path}", "rounds=3"])
    with pytest.raises(ConfigError, match=r"different config \(keys \['rounds'\]\).*--resume.*--overwrite"):
        check_output_dir(other)
    check_output_dir(other, "resume")
    assert json.loads((tmp_path / "config.json").read_text())["rounds"] == 3
    (tmp_path / "round_0").mkdir()
    check_output_dir(first, "overwrite")
    assert not (tmp_path / "round_0").exists()


def test_a_run_saved_before_a_key_existed_is_the_same_run_while_the_key_keeps_its_default(tmp_path):
    config = load_config(LoopConfig, None, [f"output_dir={tmp_path}", "rounds=1"])
    check_output_dir(config)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["policy"]["nll_weight"]  # as a run written before the key was added
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_output_dir(config)  # the default: the same run, resumed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    changed = load_config(LoopConfig, None, [f"output_dir={tmp_path}", "rounds=1", "policy.nll_weight=0"])
    with pytest.raises(ConfigError, match=r"different config \(keys \['policy'\]\)"):
        check_output_dir(changed)
    saved["policy"]["a_key_since_removed"] = 1  # unreadable now: compared as saved, so another run
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="different config"):
        check_output_dir(config)


@pytest.mark.parametrize("override, message", [
    (["rounds=0"], "config key 'rounds': must be >= 1"),
    (["search.algorithm=mcts_beta"], "config key 'search.algorithm': unknown algorithm 'mcts_beta'"),
    (["value.lrr=1"], "unknown config key 'value.lrr'"),
    (["policy.output_dir=x"], "unknown config key 'policy.output_dir'"),
    (["warmstart.num_train_epochs=many"], "config key 'warmstart.num_train_epochs': expected float"),
    (["value.max_steps=1.5"], "config key 'value.max_steps': expected int"),
    (["base_model=/no/such/model"], "config key 'base_model': /no/such/model does not exist"),
    (["task=chess"], "config key 'task': must be one of"),
    (["backend=onnx"], "config key 'backend': must be one of"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LoopConfig, None, override)


def test_trainer_sections_are_typed_at_load():
    # YAML reads 1e-3 (no dot) as a string; the trainer would fail on it rounds later
    cfg = load_config(LoopConfig, None, ["warmstart.learning_rate=1e-3", "policy.num_train_epochs=3"])
    assert cfg.warmstart.learning_rate == 0.001 and isinstance(cfg.warmstart.learning_rate, float)
    assert cfg.policy.num_train_epochs == 3.0 and isinstance(cfg.policy.num_train_epochs, float)


def test_shipped_configs_load():
    for path in sorted(Path("configs").glob("*/*.yaml")):
        if path.parent.name in ("game24", "prontoqa"):  # gsm8k/rlhf: tests/test_loop_tasks.py
            cfg = load_config(LoopConfig, path)
            assert cfg.rounds >= 1
            launch = path.read_text().splitlines()[0]
            assert re.match(rf"# (tsllm run|torchrun .*recipes/iterate.py) --config {path}$", launch), \
                f"{path} must open with its launch line"


def _tsllm(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tsllm.cli", "run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress",
            *TINY, *extra]


def _summary(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    counts = {str(p.relative_to(out)): sum(1 for _ in open(p))
              for p in sorted(out.glob("round_*/*/trajectories.jsonl"))}
    return {"rounds": [r["round"] for r in rows], "trajectories": counts}


def test_killed_loop_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    straight = tmp_path / "straight"
    subprocess.run(_tsllm(straight), env=env, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_tsllm(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "round_0" / "value" / "done.json").exists():  # mid-round: after sample and value
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "round_0" / "policy" / "done.json").exists()  # really interrupted mid-round

    resumed = subprocess.run(_tsllm(killed), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _summary(killed) == _summary(straight)
    assert _summary(killed)["rounds"] == [0, 1]
    assert not list(killed.glob("round_*/*.tmp"))  # nothing half-written left behind
    # the finished run, moved elsewhere and named by a relative path, resumes from its own models
    # (stage results name them relative to the run folder) and redoes nothing
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    straight.rename(moved)
    before = {str(p.relative_to(moved)): p.read_text() for p in moved.glob("**/done.json")}
    again = subprocess.run([*_tsllm(Path("moved"))], cwd=moved.parent, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {str(p.relative_to(moved)): p.read_text() for p in moved.glob("**/done.json")} == before
    assert all(str(tmp_path / "straight") not in text for text in before.values())


def test_output_dir_is_checked_at_start_for_what_it_holds(tmp_path, monkeypatch):
    config = load_config(LoopConfig, None, [f"output_dir={tmp_path / 'run'}", "rounds=1"])
    (tmp_path / "run" / "round_0").mkdir(parents=True)  # stages with no config.json: whose are they?
    with pytest.raises(ConfigError, match=r"holds stage folders \(round_0\) but no config.json.*--overwrite"):
        check_output_dir(config)
    check_output_dir(config, "overwrite")
    (tmp_path / "run" / "round_1").write_text("x")  # a file where a stage folder goes
    with pytest.raises(ConfigError, match=r"holds files where the run's stage folders go \(\['round_1'\]\)"):
        check_output_dir(config)
    (tmp_path / "run" / "round_1").unlink()
    monkeypatch.chdir(tmp_path)  # the same run by a relative path is the same run, not "a different config"
    check_output_dir(load_config(LoopConfig, None, ["output_dir=run", "rounds=1"]))
