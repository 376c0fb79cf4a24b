"""The reach task: disjoint and fresh pools, an oracle-free warm start (legal random play that
solves no training-pool or held-out problem), one tiny loop round and `tsllm eval` on it."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.launch import LIBRARY_DEFAULTS
from tsllm.cli import main
from tsllm.envs import reach
from tsllm.envs.base import TextState
from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings
from tsllm.tasks.reach import EXCLUDED_ROUNDS

SETTINGS = TaskSettings(seed=3, train_questions=96, test_questions=64)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_held_out_problems_are_disjoint_from_every_round_s_fresh_pool():
    task = get_task("reach")(SETTINGS)
    train, test = task.problems()
    held_out = {reach.key_of(p) for p in test}
    assert len(held_out) == 64 and len(train) == 96
    pools = [{reach.key_of(p) for p in task.train_problems(round=k)} for k in range(3)]
    assert pools[0] == {reach.key_of(p) for p in train}  # round 0 is the loop's pool
    assert all(len(pool) == 96 and not pool & held_out for pool in pools)
    assert len(pools[0] & pools[1]) < 10 and len(pools[1] & pools[2]) < 10  # fresh, not the same pool again


def shipped_settings() -> TaskSettings:
    from tsllm.config import load_config
    from tsllm.loop_config import LoopConfig

    config = load_config(LoopConfig, "configs/reach/tiny.yaml", [])
    assert config.rounds <= EXCLUDED_ROUNDS  # every round's pool is one the warm start keeps clear of
    return TaskSettings.of(config)


@pytest.mark.parametrize("settings", [SETTINGS, "shipped"], ids=["small", "configs/reach/tiny.yaml"])
def test_warm_start_rows_are_legal_play_and_solve_no_pool_or_held_out_problem(settings):
    task = get_task("reach")(shipped_settings() if settings == "shipped" else settings)
    rows = task.warmstart_rows()
    assert len(rows) > 1000
    targets = defaultdict(set)  # (start, moves) -> every target the loop learns from or is judged on
    problems = task.test_problems() + [p for k in range(EXCLUDED_ROUNDS) for p in task.train_problems(round=k)]
    for p in problems:
        targets[p["start"], tuple(p["moves"])].add(p["target"])
    env = task.env
    lengths = set()
    for row in rows:
        start, target, moves = reach.parse_question(row["question"])
        state = env.initial_state(row["question"])
        for step in row["steps"]:
            assert env.legal_step(state, step), (row, step)  # no flawed steps
            state = env.step(state, step)
        assert env.is_terminal(state) and env.reward(state) == -1.0 == row["reward"]  # not its own solution
        assert state.steps == tuple(row["steps"])  # written as the env writes them
        passed = {env.answer(TextState(row["question"], tuple(row["steps"][:k]), (start, target, moves)))
                  for k in range(1, len(row["steps"]) + 1)}  # the values the play went through
        assert not passed & targets[start, moves]  # nor a solution of any problem the loop uses
        lengths.add(len(row["steps"]))
    assert lengths == set(range(1, reach.MAX_STEPS + 1))  # plays end by passing the target or at the cap


def test_a_tiny_reach_round_runs_and_evaluates(tmp_path):
    out = tmp_path / "run"
    tiny = ["task=reach", "rounds=1", "train_questions=4", "test_questions=3", "warmstart.max_seconds=4",
            "warmstart.num_train_epochs=1", "samples_per_question=2", "max_step_tokens=16",
            "search.knobs={num_simulations: 2, width: 2}", "value.num_train_epochs=1", "policy.num_train_epochs=1",
            "tracking.report_to=none", "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"]
    assert main(["run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", *tiny]) == 0
    sampled = read_jsonl(out / "round_0" / "sample" / "trajectories.jsonl")
    assert len(sampled) == 4 * 2 and {r["task"] for r in sampled} == {"reach"}
    pool = get_task("reach")(TaskSettings(train_questions=4, test_questions=3)).train_problems()
    assert [r["question"] for r in sampled[::2]] == [p["question"] for p in pool]
    warm = read_jsonl(out / "warmstart" / "trajectories.jsonl")
    assert {r["source"] for r in warm} == {"warmstart"} and all(r["reward"] == -1.0 for r in warm)
    assert [r["round"] for r in read_jsonl(out / "rounds.jsonl")] == [0, 1]

    data = tmp_path / "problems.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [{"start": 7, "target": 46, "moves": ["+3", "*2"]},
                                                       {"start": 2, "target": 3, "moves": ["+1"]}]) + "\n")
    result = tmp_path / "eval.json"
    assert main(["eval", "--task", "reach", "--policy", str(out / "warmstart" / "model"),
                 "--value", str(out / "round_0" / "value" / "model"), "--data", str(data),
                 "--methods", "greedy,mcts_alpha", "--set", "mcts_alpha.num_simulations=2",
                 "--set", "mcts_alpha.width=2", "--max-step-tokens", "16", "--out", str(result)]) == 0
    written = json.loads(result.read_text())
    assert written["task"] == "reach" and written["questions"] == 2
    for method in ("greedy", "mcts_alpha"):
        per_question = written["methods"][method]["per_question"]
        assert [q["question"] for q in per_question] == ["Start 7, reach 46, moves +3 *2. 39 to go.",
                                                         "Start 2, reach 3, moves +1. 1 to go."]


def test_eval_names_the_file_and_line_of_a_bad_problem_row(tmp_path, capsys):
    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"start": 7, "target": 46, "moves": "+3"}) + "\n")
    policy = tmp_path / "policy"  # passes the model-folder check; the bad row stops eval before it loads
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (policy / "model.safetensors").write_bytes(b"")
    assert main(["eval", "--task", "reach", "--policy", str(policy), "--data", str(data), "--methods", "greedy"]) == 2
    assert f"{data}:1" in capsys.readouterr().err
