"""The prontoqa_moves task: fresh pools disjoint from the held-out problems, and an oracle-free warm
start (random legal play that proves nothing, on contexts no pool or held-out problem has)."""

import pytest

from tsllm.envs import prontoqa
from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings
from tsllm.tasks.prontoqa_moves import EXCLUDED_ROUNDS, context_of

SETTINGS = TaskSettings(seed=3, train_questions=96, test_questions=64)


def test_held_out_problems_are_disjoint_from_every_round_s_fresh_pool():
    task = get_task("prontoqa_moves")(SETTINGS)
    train, test = task.problems()
    held_out = {context_of(p) for p in test}
    assert len(held_out) == 64 and len(train) == 96
    pools = [{context_of(p) for p in task.train_problems(round=k)} for k in range(3)]
    assert pools[0] == {context_of(p) for p in train}  # round 0 is the loop's pool
    assert all(len(pool) == 96 and not pool & held_out for pool in pools)
    assert not pools[0] & pools[1] and not pools[1] & pools[2]  # fresh, not the same pool again


@pytest.fixture(scope="module")
def warm():
    task = get_task("prontoqa_moves")(SETTINGS)
    return task, task.warmstart_rows()


def test_warm_start_rows_are_legal_play_that_proves_nothing(warm):
    task, rows = warm
    env = task.env
    assert len(rows) > 1000 and {r["source"] for r in rows} == {"warmstart"}
    lengths = set()
    for row in rows:
        state = env.initial_state({"question": row["question"], "answer": row["gold"][1]})
        for step in row["steps"]:
            assert env.legal_step(state, step), (row, step)  # no flawed steps
            state = env.step(state, step)
        assert state.steps == tuple(row["steps"])  # written as the env writes them
        assert env.is_terminal(state) and env.reward(state) == -1.0 == row["reward"]
        assert env.answer(state) is None and "The answer is" not in row["steps"][-1]  # no query proved
        lengths.add(len(row["steps"]))
    assert min(lengths) == 1 and max(lengths) >= 4  # dead ends off early and late facts of the chain


def test_warm_start_rows_share_no_context_with_a_pool_or_held_out_problem(warm):
    task, rows = warm
    problems = task.test_problems() + [p for k in range(EXCLUDED_ROUNDS) for p in task.train_problems(round=k)]
    used = {context_of(p) for p in problems}
    seen = {frozenset(prontoqa.split_question(r["question"])[0]) for r in rows}
    assert len(seen) > 500 and not seen & used
