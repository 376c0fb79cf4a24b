"""The loop in two real processes: `torchrun --nproc_per_node 2 recipes/iterate.py` (gloo on CPU)
runs one small round, each rank samples, searches and evaluates its own share of the problems,
rank 0 merges the shares into the files a one-process run writes, and the training stages run
through the trainers with both processes (DDP). `accelerate launch --multi_gpu --num_processes 2`
starts the same processes; it is checked by hand (README), not here, to keep the suite short."""

import json
import os
from pathlib import Path

import pytest

from tests.launch import LIBRARY_DEFAULTS, TORCHRUN, run_launcher
from tsllm.envs.game24 import Game24Env, split

pytestmark = pytest.mark.all_cores  # two processes: alone on the machine (tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]
TRAIN_QUESTIONS, SAMPLES = 6, 2
# one round on 6 questions, a warm start of a few optimizer steps, the smallest tiny model
TINY = ["rounds=1", f"train_questions={TRAIN_QUESTIONS}", "test_questions=4", "warmstart.max_steps=5",
        f"samples_per_question={SAMPLES}", "max_step_tokens=24", "search.knobs={num_simulations: 2, width: 2}",
        "value.num_train_epochs=1", "policy.num_train_epochs=1", "tracking.report_to=none",
        "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_processes_shard_generation_and_train_together(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2",  # standalone: a free port
               str(REPO / "recipes" / "iterate.py"), *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress",
               *TINY]
    _, stderr = run_launcher(command, tmp_path, env)
    assert "2 process(es)" in stderr

    # each rank sampled, searched and evaluated its own problems: problems[rank::2] (every problem
    # leaves a row in these parts; a search may find no complete path, so its trajectories may not)
    shares = {"sample/trajectories": TRAIN_QUESTIONS, "search/tokens": TRAIN_QUESTIONS, "eval/eval_greedy": 4}
    for name, count in shares.items():
        parts = [read_jsonl(out / "round_0" / f"{name}.rank{r}-of-2.jsonl") for r in (0, 1)]
        for r, part in enumerate(parts):
            assert {p["index"] for p in part} == set(range(r, count, 2)), f"{name}: rank {r} ran the wrong problems"
    for stage in ("sample", "search"):
        parts = [read_jsonl(out / "round_0" / stage / f"trajectories.rank{r}-of-2.jsonl") for r in (0, 1)]
        merged = read_jsonl(out / "round_0" / stage / "trajectories.jsonl")
        assert merged == [p["row"] for p in sorted(parts[0] + parts[1], key=lambda p: p["index"])]
    # the merged file is what one process writes: all samples, grouped by question, in problem order
    questions = [row["question"] for row in read_jsonl(out / "round_0" / "sample" / "trajectories.jsonl")]
    env = Game24Env()
    train = [env.initial_state(p).question for p in split(seed=0, test_size=4)[0][:TRAIN_QUESTIONS]]
    assert questions == [q for q in train for _ in range(SAMPLES)]

    # every stage finished with both processes, and the trainers trained with both
    for stage in ("warmstart", "round_0/sample", "round_0/value", "round_0/eval", "round_0/search", "round_1/eval"):
        assert json.loads((out / stage / "done.json").read_text())["world_size"] == 2
    value = json.loads((out / "round_0" / "value" / "done.json").read_text())
    assert value["trainer_processes"] == 2 and value["distributed_type"] == "MULTI_CPU"
    assert json.loads((out / "warmstart" / "done.json").read_text())["trainer_processes"] == 2

    rows = read_jsonl(out / "rounds.jsonl")  # tracked once, by rank 0
    assert [r["round"] for r in rows] == [0, 1]
    assert all(0.0 <= r["greedy_accuracy"] <= 1.0 for r in rows)
    evaluated = json.loads((out / "round_0" / "eval" / "results.json").read_text())
    assert all(len(m["per_question"]) == 4 for m in evaluated["methods"].values())  # both shards merged
    assert not list(out.glob("**/*.tmp"))


def test_two_processes_run_the_rft_baseline_at_a_measured_training_budget(tmp_path):
    """improve=sampling with a training search budget unlike evaluation's: rank 0 measures the
    training search's compute per problem and both ranks sample their own problems to it."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(REPO / "recipes" / "iterate.py"),
               *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", *TINY, "improve=sampling",
               "search.train_knobs={num_simulations: 3}"]
    run_launcher(command, tmp_path, env)
    parts = [read_jsonl(out / "round_0" / f"sampling/tokens.rank{r}-of-2.jsonl") for r in (0, 1)]
    for r, part in enumerate(parts):
        assert {p["index"] for p in part} == set(range(r, TRAIN_QUESTIONS, 2))
        assert all(p["row"]["rollouts"] >= 1 for p in part)
    done = json.loads((out / "round_0" / "sampling" / "done.json").read_text())
    assert done["world_size"] == 2 and done["problems"] == TRAIN_QUESTIONS and done["target_compute"] > 0
    evaluated = json.loads((out / "round_0" / "eval" / "done.json").read_text())
    assert done["target_compute"] != evaluated["search_compute_per_question"]  # measured, not the held-out search's
    assert not (out / "round_0" / "search").exists()
    rows = read_jsonl(out / "rounds.jsonl")
    assert rows[0]["improve"] == "sampling" and rows[0]["train_problems"] == TRAIN_QUESTIONS
