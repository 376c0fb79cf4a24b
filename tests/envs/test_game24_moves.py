"""Game24 with the env as the game engine: the env writes each move's exact line, three legal moves
making 24 win, anything else loses; the warm start is random legal play with no solution in it
and no held-out puzzle."""

import random
from fractions import Fraction

import pytest

from tsllm.envs.base import TextState, random_play
from tsllm.envs.game24 import TARGET, solve
from tsllm.envs.game24_moves import Game24MovesEnv
from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings

ENV = Game24MovesEnv()


def played(numbers, moves):
    state = ENV.initial_state({"numbers": numbers})
    for move in moves:
        state = ENV.step(state, move)
    return state


def test_the_env_writes_each_line_and_three_moves_making_24_win():
    state = played([4, 9, 10, 13], ["13 - 9", "10 - 4 = 5 (left: whatever)", "4 * 6"])
    assert state.steps == ("13 - 9 = 4 (left: 4 4 10)", "10 - 4 = 6 (left: 4 6)", "4 * 6 = 24 (left: 24)")
    assert ENV.is_terminal(state) and ENV.reward(state) == 1.0 and ENV.answer(state) == "24"
    assert ENV.prompt(state).startswith("Input: 4 9 10 13\n13 - 9 = 4")


@pytest.mark.parametrize("moves", [["13 - 9", "10 + 4", "4 * 14"],  # three legal moves, 56 left
                                   ["13 - 7"],  # 7 is not left
                                   ["4 / 0"],  # no 0, and no division by zero
                                   ["9 9 9"],  # names no move
                                   ["13 - 9", "4 - 4", "10 / 0"]])  # a division by zero
def test_anything_else_ends_the_game_as_a_loss(moves):
    state = played([4, 9, 10, 13], moves)
    assert ENV.is_terminal(state) and ENV.reward(state) == -1.0


def test_fractions_and_negative_numbers_are_numbers_like_any_other():
    state = played([1, 3, 4, 6], ["1 / 4", "3 - 1/4", "6 / 1/4"])  # 6 / (1 - 3/4) = 24 is another path
    assert state.steps[0] == "1 / 4 = 1/4 (left: 1/4 3 6)"
    assert state.steps[1] == "3 - 1/4 = 11/4 (left: 11/4 6)"
    assert not ENV.is_terminal(played([1, 3, 4, 6], ["1 / 4", "1/4 - 3"]))
    assert played([1, 3, 4, 6], ["1 / 4", "1/4 - 3"]).steps[1] == "1/4 - 3 = -11/4 (left: -11/4 6)"
    win = played([1, 3, 4, 6], ["3 / 4", "1 - 3/4", "6 / 1/4"])
    assert ENV.reward(win) == 1.0


def test_the_mask_allows_exactly_the_moves_the_env_can_apply():
    root = ENV.initial_state({"numbers": [4, 9, 10, 13]})
    assert ENV.legal_step(root, "13 - 9") and ENV.legal_step(root, "4 / 9 = anything")
    assert not ENV.legal_step(root, "13 - 13") and not ENV.legal_step(root, "2 + 2")
    assert ENV.legal_step(ENV.initial_state({"numbers": [4, 4, 10, 13]}), "4 - 4")  # one each of two 4s
    broken = ENV.step(root, "7 + 7")
    assert ENV.legal_step(broken, "anything")  # after a broken rule nothing more is ruled out


def test_every_solver_trace_is_a_win_when_its_moves_are_named():
    rng = random.Random(0)
    for numbers in rng.sample([[a, b, c, d] for a in range(1, 14) for b in range(a, 14)
                               for c in range(b, 14) for d in range(c, 14)], 200):
        trace = solve(numbers)
        if trace is None:
            continue
        moves = [line.split(" = ")[0] for line in trace[:-1]]  # "4 / 4 = 1 (left: ...)" -> "4 / 4"
        assert ENV.reward(played(numbers, moves)) == 1.0, (numbers, trace)
        assert ENV.check({"numbers": numbers}, "\n".join(played(numbers, moves).steps))


def test_random_play_is_legal_and_ends_after_three_moves():
    rng = random.Random(1)
    for numbers in ([1, 1, 1, 1], [4, 9, 10, 13], [13, 13, 13, 13], [1, 2, 3, 4]):
        for _ in range(50):
            lines = random_play(ENV, {"numbers": numbers}, rng)[-1].steps
            left = ENV.board(TextState(" ".join(map(str, numbers)), lines, tuple(numbers)))  # replayed from the text
            assert len(lines) == 3 and left is not None and len(left) == 1
            assert played(numbers, lines).steps == lines  # written exactly as the env writes


def test_the_warm_start_holds_no_solution_and_no_held_out_puzzle():
    task = get_task("game24_moves")(TaskSettings(test_questions=256, train_questions=1106))
    held_out = {tuple(p["numbers"]) for p in task.test_problems()}
    rows = task.warmstart_rows()
    assert len(rows) > 8000 and {r["source"] for r in rows} == {"warmstart"}
    for row in rows:
        numbers = tuple(row["gold"])
        assert numbers not in held_out and row["question"] == " ".join(map(str, numbers))
        left = ENV.board(TextState(row["question"], tuple(row["steps"]), numbers))
        assert len(row["steps"]) == 3 and left is not None and left != [Fraction(TARGET)]
    pool = {tuple(p["numbers"]) for p in task.pool(0)}
    assert len(pool) == 1106 and not pool & held_out
    assert {tuple(r["gold"]) for r in rows} & pool  # the pool's puzzles are played, never solved
