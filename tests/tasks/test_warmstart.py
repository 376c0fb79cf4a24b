"""Warm-start data: solver traces and gold proofs that check, a flawed share that matches the knob
and fails the strict checkers, train-split puzzles only, prompts exactly as the envs render them."""

import json
import subprocess
import sys
from collections import Counter
from fractions import Fraction

import pytest

from tsllm import tasks
from tsllm.config import ConfigError, load_config
from tsllm.envs import game24, prontoqa
from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, check_trace, solve, split
from tsllm.envs.prontoqa import ProntoQAEnv, check_proof, split_question
from tsllm.tasks.warmstart import (
    WarmStartConfig,
    build_warmstart,
    game24_rows,
    prontoqa_rows,
    write_jsonl,
)
from tsllm.training.policy_trainer import read_examples


@pytest.fixture(scope="module")
def default_rows():
    return build_warmstart(WarmStartConfig(prontoqa_problems=300))


def numbers(row):
    return [int(n) for n in row["question"].split()]


def test_game24_rows_are_solver_traces_or_flawed_and_labelled_by_the_strict_checker(default_rows):
    rows = [r for r in default_rows if r["task"] == "game24"]
    assert rows and all(r["source"] == "warmstart" for r in rows)
    for row in rows:
        text = "\n".join(row["steps"])
        assert row["gold"] == numbers(row)
        if row["reward"] == 1.0:
            assert row["steps"] == solve(numbers(row)) and check_trace(numbers(row), text)
        else:
            assert row["reward"] == -1.0 and not check_trace(numbers(row), text)
            assert len(row["steps"]) == 4 and row["steps"][-1].startswith("Answer: ")


def test_only_train_split_puzzles_appear(default_rows):
    train, test = split()
    questions = [r["question"] for r in default_rows if r["task"] == "game24"]
    assert sorted(questions) == sorted(p["question"] for p in train)  # every train puzzle, once
    assert not set(questions) & {p["question"] for p in test}
    other = split(seed=3, test_size=200)
    config = WarmStartConfig(game24_split_seed=3, game24_test_size=200, prontoqa_problems=0)
    assert {r["question"] for r in game24_rows(config)} == {p["question"] for p in other[0]}


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_imperfect_share_matches_the_knob_exactly(fraction):
    config = WarmStartConfig(game24_puzzles=150, prontoqa_problems=120, imperfect_fraction=fraction, seed=5)
    rows = build_warmstart(config)
    counts = Counter((r["task"], r["reward"] < 0) for r in rows)
    assert counts[("game24", True)] == round(fraction * 150)
    assert counts[("prontoqa", True)] == round(fraction * 120)
    assert counts[("game24", False)] + counts[("game24", True)] == 150


def valid_steps(nums, steps):
    """How many leading steps are valid arithmetic on the numbers left, and the numbers left then."""
    left = [Fraction(n) for n in nums]
    for count, step in enumerate(steps):
        after = game24.check_step(left, step)
        if after is None:
            return count, left
        left = after
    return len(steps), left


def flaw_kind(row):
    nums, steps = numbers(row), row["steps"]
    gold = solve(nums)
    answer_ok = game24.check_answer(nums, game24.extract_expression(steps[-1]))
    valid, left = valid_steps(nums, steps[:-1])
    if steps[:-1] == gold[:-1] and not answer_ok:
        return "wrong_answer"  # right steps, wrong expression
    if steps[-1] == gold[-1] and valid < 3:
        return "slip"  # a false step, the right expression
    if valid == 3 and left != [24] and not answer_ok:
        return "wrong_branch"  # true arithmetic that cannot end at 24
    return "unexplained"


def test_every_kind_of_flaw_is_used_and_each_is_what_it_claims():
    rows = game24_rows(WarmStartConfig(game24_puzzles=240, prontoqa_problems=0, imperfect_fraction=1.0))
    kinds = Counter(flaw_kind(row) for row in rows)
    assert set(kinds) == {"slip", "wrong_answer", "wrong_branch"} and min(kinds.values()) > 40, kinds
    # a slip is exactly one false step: the steps before it are the solver's
    for row in rows:
        if flaw_kind(row) == "slip":
            valid, _ = valid_steps(numbers(row), row["steps"][:-1])
            assert row["steps"][:valid] == solve(numbers(row))[:valid]


def test_prontoqa_rows_are_gold_proofs_or_flawed():
    rows = prontoqa_rows(WarmStartConfig(prontoqa_problems=200, imperfect_fraction=0.5))
    problems = {f"{p['question']} {p['query']}": p for p in prontoqa.generate(200, seed=1)}
    flaws = Counter()
    for row in rows:
        problem = problems[row["question"]]
        assert row["gold"] == (problem["answer"] == "True")
        ok = check_proof(row["question"], row["steps"], row["gold"])
        assert ok == (row["reward"] == 1.0)
        if ok:
            assert row["steps"] == problem["solution"].split("\n")
        else:
            right_answer = prontoqa.extract_answer(row["steps"][-1]) == row["gold"]
            flaws["skipped_step" if right_answer else "wrong_answer_or_branch"] += 1
    assert flaws["skipped_step"] > 20 and flaws["wrong_answer_or_branch"] > 20


def test_prompts_are_exactly_what_the_envs_render(default_rows, tmp_path):
    path = write_jsonl(default_rows, tmp_path / "warm.jsonl")
    examples = read_examples([path], min_reward=None, formats=tasks)
    assert len(examples) == len(default_rows)
    envs = {"game24": Game24Env(), "prontoqa": ProntoQAEnv()}
    problems = {p["question"]: p for p in split()[0]}
    problems.update({f"{p['question']} {p['query']}": p for p in prontoqa.generate(300, seed=1)})
    for row, example in zip(default_rows, examples):
        env = envs[row["task"]]
        state = env.initial_state(problems[row["question"]])
        assert example["prompt"] == env.prompt(state)
        assert example["prompt"] + example["completion"] == env.prompt(TextState(state.question, tuple(row["steps"])))
    assert examples[0]["prompt"].startswith("Input: ")
    assert split_question(examples[-1]["prompt"].strip())[1] is not None  # a PrOntoQA query is in its prompt
    assert len(read_examples([path], formats=tasks)) == sum(r["reward"] > 0 for r in default_rows)


def test_seeded_and_written_by_the_command_line(tmp_path):
    a = game24_rows(WarmStartConfig(game24_puzzles=100, prontoqa_problems=0, seed=1))
    assert a == game24_rows(WarmStartConfig(game24_puzzles=100, prontoqa_problems=0, seed=1))
    assert a != game24_rows(WarmStartConfig(game24_puzzles=100, prontoqa_problems=0, seed=2))
    out = tmp_path / "sub" / "warm.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "tsllm.tasks.warmstart", "--out", str(out), "game24_puzzles=100",
         "prontoqa_problems=10", "imperfect_fraction=0.1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 110 and sum(r["reward"] < 0 for r in rows) == 10 + 1
    assert [p.name for p in out.parent.iterdir()] == ["warm.jsonl"]  # no temporary file left
    with pytest.raises(ConfigError, match="imperfect_fraction"):
        load_config(WarmStartConfig, None, ["imperfect_fraction=1.5"])


def test_the_command_line_writes_a_tasks_own_warm_start_rows(tmp_path):
    from tsllm.tasks import TaskSettings, get_task
    from tsllm.tasks.warmstart import main

    out = tmp_path / "prontoqa.jsonl"
    assert main(["--out", str(out), "--task", "prontoqa", "--seed", "2"]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == json.loads(json.dumps(get_task("prontoqa")(TaskSettings(seed=2)).warmstart_rows()))
    assert written != json.loads(json.dumps(get_task("prontoqa")(TaskSettings(seed=3)).warmstart_rows()))
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--task", "prontoqa", "prontoqa_problems=3"])
