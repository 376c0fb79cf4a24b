"""Every file in configs/ runs as shipped: what users run is what is tested.

A CPU loop config runs one round end to end through its own launch line's program, with overrides
that shrink only counts (rounds, questions, samples, simulations, optimizer steps) and never a
shape the file sets (model size, step and rollout budgets, widths). A GPU config is validated with
real paths in tests/test_loop_tasks.py. A trainer config trains a few steps through its recipe. A
config added without an entry here fails `test_every_shipped_config_is_tested`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch import TORCHRUN, run_launcher
from tests.test_loop_tasks import GPU_CONFIGS
from tsllm.config import load_config
from tsllm.envs.base import TextState
from tsllm.loop_config import MAIN_JOB, LoopConfig
from tsllm.tasks import TaskSettings, get_task

REPO = Path(__file__).resolve().parents[1]
# counts and budgets only: one round over a handful of problems, a few optimizer steps per trainer,
# a small search
SHRINK = ["rounds=1", "train_questions=4", "test_questions=4", "samples_per_question=1",
          "warmstart.max_steps=8", "value.max_steps=4", "policy.max_steps=4", "tracking.report_to=none",
          "search.max_compute=2000", "search.train_max_compute=2000"]
CPU_LOOPS = {  # config -> processes its launch line starts
    "configs/game24/tiny_oracle.yaml": 1,
    "configs/game24/moves.yaml": 1,
    "configs/game24/tiny_oracle_zero2.yaml": 2,
    "configs/prontoqa/game.yaml": 1,
    "configs/prontoqa/tiny.yaml": 1,
    "configs/reach/tiny.yaml": 1,
}
TRAINERS = {  # config -> its recipe and the arguments that give it data and shrink its steps
    "configs/value/tiny.yaml": ("recipes/train_value.py", ["--demo-data", "40", "max_steps=3"]),
    "configs/policy/tiny_oracle.yaml": ("recipes/train_policy.py", ["max_steps=3"]),
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def shipped() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml"))


def test_every_shipped_config_is_tested():
    gpu = {str(p.relative_to(REPO)) for p in GPU_CONFIGS}
    untested = [c for c in shipped() if c not in CPU_LOOPS and c not in TRAINERS and c not in gpu]
    assert not untested, f"configs without a test here: {untested}; add them to CPU_LOOPS or TRAINERS"


@pytest.mark.parametrize("config", [pytest.param(c, marks=[pytest.mark.all_cores] if CPU_LOOPS[c] > 1 else [])
                                    for c in sorted(CPU_LOOPS)])  # several processes: alone (tests/conftest.py)
def test_cpu_loop_config_runs_one_round(config, tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(REPO / config), "--output-dir", str(out), "--no-progress", *SHRINK]
    if CPU_LOOPS[config] == 1:
        command = [sys.executable, "-m", "tsllm.cli", "run", *args]
        result = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    else:  # the launch line's launcher; DeepSpeed json paths in the file are relative to the repo root
        command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(CPU_LOOPS[config]),
                   str(REPO / "recipes" / "iterate.py"), *args]
        run_launcher(command, REPO, ENV, timeout=900)
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    saved = json.loads((out / "config.json").read_text())
    shipped_text = (REPO / config).read_text()
    assert saved["task"] in shipped_text and saved["rounds"] == 1


@pytest.mark.parametrize("config", sorted(TRAINERS))
def test_trainer_config_trains_through_its_recipe(config, tmp_path):
    recipe, extra = TRAINERS[config]
    if recipe.endswith("train_policy.py"):  # it needs trajectories: the warm start's own rows
        rows = tmp_path / "rows.jsonl"
        subprocess.run([sys.executable, "-m", "tsllm.tasks.warmstart", "--out", str(rows)],
                       cwd=REPO, env=ENV, check=True, capture_output=True, timeout=600)
        extra = [*extra, f"data_files=[{rows}]"]
    command = [sys.executable, str(REPO / recipe), "--config", str(REPO / config), *extra,
               f"output_dir={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["global_step"] == 3


def test_the_packaged_main_job_is_the_shipped_reach_config():
    # `tsllm run` without --config runs the package's copy; it must be the file the README names
    assert Path(MAIN_JOB).read_text() == (REPO / "configs" / "reach" / "tiny.yaml").read_text()


def solved_problems(task, rows: list[dict], problems: list) -> list[str]:
    """Questions of `problems` that a row solves: a row asked the same question whose steps, or a
    prefix of them, end in a terminal state the checker rewards."""
    by_question: dict[str, list[dict]] = {}
    for row in rows:
        by_question.setdefault(row["question"], []).append(row)
    solved = []
    for problem in problems:
        start = task.env.initial_state(problem)
        for row in by_question.get(start.question, []):
            prefixes = (TextState(start.question, tuple(row["steps"][:i]), start.gold)
                        for i in range(1, len(row["steps"]) + 1))
            if any(task.env.is_terminal(s) and task.env.reward(s) > 0 for s in prefixes):
                solved.append(start.question)
                break
    return solved


@pytest.mark.parametrize("config", sorted(CPU_LOOPS))
def test_only_an_oracle_config_warm_starts_on_solutions_of_its_own_problems(config):
    """AlphaZero's start: the warm start teaches the rules, never a solution of a problem the loop
    learns from (every round's pool) or is judged on. A config that breaks this says so in its name."""
    cfg = load_config(LoopConfig, str(REPO / config), ["tracking.report_to=none"])
    assert cfg.base_model is None  # every CPU loop warm-starts the tiny model
    task = get_task(cfg.task)(TaskSettings.of(cfg))
    problems = [p for k in range(cfg.rounds) for p in task.pool(k)] + task.test_problems()
    solved = solved_problems(task, task.warmstart_rows(), problems)
    if "oracle" in Path(config).name:  # the check finds what the name admits
        assert solved, f"{config} is named an oracle but its warm start solves none of its problems"
    else:
        assert not solved, f"{config}'s warm start solves {len(solved)} of its own problems, e.g. {solved[:3]}; " \
                           "rename it with `oracle` in its name and say why in its first comment"


@pytest.mark.parametrize("output_dir", ["/proc/tsllm/run", "/dev/null", "a_file"])
def test_impossible_output_dirs_stop_the_run_at_start(output_dir, tmp_path):
    (tmp_path / "a_file").write_text("x")
    command = [sys.executable, "-m", "tsllm.cli", "run", "--output-dir", output_dir, "tracking.report_to=none"]
    result = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("tsllm: output_dir: "), result.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
