"""Oracle-free warm-start rows obey the task's rules and never hold a solution of a problem the
loop learns from; PrOntoQA's legal-move mask admits gold proofs and rejects rule-breaking steps."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from experiments.oracle_free import (
    ANSWER_LINES,
    ProntoQARulesEnv,
    all_multisets,
    game24_play,
    game24_random_play,
    prontoqa_moves,
    prontoqa_random_chaining,
)
from tsllm.envs import game24, prontoqa
from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, check_answer, extract_expression


def walk_legal(env, state: TextState, steps: list[str]) -> bool:
    for step in steps:
        if not env.legal_step(state, step):
            return False
        state = env.step(state, step)
    return env.is_terminal(state)


# ---------------------------------------------------------------------------------- Game24


@pytest.fixture(scope="module")
def game24_rows():
    _, test = game24.split(seed=0, test_size=256)
    return test, game24_random_play(3, exclude=[p["numbers"] for p in test], seed=0)


def test_all_multisets_cover_every_puzzle():
    multisets = set(all_multisets())
    assert len(multisets) == 1820
    assert set(game24.all_puzzles()) <= multisets


def test_game24_plays_follow_the_rules(game24_rows):
    _, rows = game24_rows
    env = Game24Env(strict=True)
    for row in rows[:4000]:
        state = env.initial_state({"numbers": row["gold"]})
        assert len(row["steps"]) == 4 and walk_legal(env, state, row["steps"]), row


def test_game24_rows_hold_no_solution_and_no_held_out_puzzle(game24_rows):
    test, rows = game24_rows
    held_out = {tuple(sorted(p["numbers"])) for p in test}
    assert rows, "random play produced nothing"
    for row in rows:
        assert tuple(sorted(row["gold"])) not in held_out
        assert row["reward"] == -1.0
        assert not check_answer(row["gold"], extract_expression(row["steps"][-1]))
    # the training pool's puzzles are all there, as rules practice only
    train, _ = game24.split(seed=0, test_size=256)
    assert {tuple(sorted(p["numbers"])) for p in train} <= {tuple(sorted(r["gold"])) for r in rows}


def test_game24_play_answer_composes_its_steps():
    rng = random.Random(3)
    for numbers in [(1, 2, 3, 4), (13, 13, 13, 13), (1, 1, 1, 1), (3, 3, 8, 8)]:
        for _ in range(50):
            steps, value = game24_play(numbers, rng)
            assert game24.evaluate_expression(numbers, extract_expression(steps[-1])) == value
            assert steps[-2].split(" = ")[1].startswith(game24.format_number(Fraction(value)))


def test_game24_plays_are_not_duplicated(game24_rows):
    _, rows = game24_rows
    keys = [(r["question"], tuple(r["steps"])) for r in rows]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------------------------- PrOntoQA


@pytest.fixture(scope="module")
def problems():
    return prontoqa.generate(300, seed=7)


def test_gold_proofs_are_legal(problems):
    env = ProntoQARulesEnv(strict=True)
    for p in problems:
        assert walk_legal(env, env.initial_state(p), p["solution"].split("\n")), p["solution"]


def test_random_chainings_follow_the_rules(problems):
    env = ProntoQARulesEnv(strict=True)
    rows = prontoqa_random_chaining(problems, plays_per_problem=2, seed=1)
    assert len(rows) > len(problems)
    reached = 0
    for row in rows:
        label = prontoqa.parse_label(row["gold"])
        state = TextState(row["question"], (), label)
        assert walk_legal(env, state, row["steps"]), row["steps"]
        assert row["steps"][-1] in ANSWER_LINES and len(row["steps"]) <= env.max_steps
        facts = row["steps"][:-1]
        if _query_established(row["question"], facts):  # then the steps are a valid proof (checker's own test)
            reached += 1
            assert prontoqa.check_proof(row["question"], facts + [ANSWER_LINES[0 if label else 1]], label)
    assert reached > 50


def _query_established(question: str, steps: list[str]) -> bool:
    _, query = prontoqa.split_question(question)
    q = prontoqa.parse_sentence(query)
    return any(isinstance(f, prontoqa.Fact) and f.concept == q.concept for f in map(prontoqa.parse_sentence, steps))


def test_answer_line_carries_no_information(problems):
    """Random answers: where the chain reached the query, the answer is right about half the time
    (a strategy would push it towards 1, deliberately flawed traces towards 0)."""
    rows = prontoqa_random_chaining(problems * 4, plays_per_problem=1, stop_probability=0.0, seed=2)
    reached = [r for r in rows if _query_established(r["question"], r["steps"][:-1])]
    assert len(reached) > 300
    right = sum(r["reward"] > 0 for r in reached) / len(reached)
    assert 0.4 < right < 0.6


def test_excluded_questions_never_appear(problems):
    env = ProntoQARulesEnv()
    taken = {env.question_text(p) for p in problems[:100]}
    rows = prontoqa_random_chaining(problems, exclude=taken, seed=0)
    assert len(rows) == 200 and not taken & {r["question"] for r in rows}


def test_mask_rejects_rule_breaking_steps():
    p = prontoqa.generate_one(random.Random(0), depth=3)
    env = ProntoQARulesEnv(strict=True)
    state = env.initial_state(p)
    proof = p["solution"].split("\n")
    assert not env.legal_step(state, "The answer is true.")  # no answer before any fact
    assert not env.legal_step(state, proof[1])  # a rule before the fact it applies to
    after_fact = env.step(state, proof[0])
    assert not env.legal_step(after_fact, proof[2])  # a fact no rule has given yet
    assert not env.legal_step(after_fact, "The answer is maybe.")
    context, _ = prontoqa.split_question(state.question)
    entity = prontoqa.parse_sentence(proof[0]).entity
    known = prontoqa.parse_sentence(proof[0]).concept
    unusable = [s for s in context if isinstance(r := prontoqa.parse_sentence(s), prontoqa.Rule)
                and r.subject != known]
    assert unusable and not any(env.legal_step(after_fact, s) for s in unusable)
    assert all(env.legal_step(after_fact, s) for s in prontoqa_moves(state.question, [proof[0]]))
    assert env.legal_step(after_fact, "The answer is false.")
    after_rule = env.step(after_fact, proof[1])
    assert prontoqa_moves(state.question, proof[:2]) == [proof[2]]
    assert not env.legal_step(after_rule, f"{entity} is a {known}.")
