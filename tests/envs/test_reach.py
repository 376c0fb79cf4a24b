"""Reach: the env applies the moves the policy's lines name (model text is parsed, never
evaluated), the game ends on reaching or passing the target, the legal-move mask is judged without
the target, the generator's properties, and the jsonl loader's errors."""

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.envs import reach
from tsllm.envs.base import DataError, TextState
from tsllm.envs.reach import ReachEnv

PROBLEM = reach.make_problem(7, 46, ["+3", "*2"])
SOLUTION = ["7 * 2 = 14, 32 to go", "14 + 3 = 17, 29 to go", "17 + 3 = 20, 26 to go", "20 + 3 = 23, 23 to go",
            "23 * 2 = 46"]  # as the env writes them


def finish(env, problem, steps):
    state = env.initial_state(problem)
    for step in steps:
        state = env.step(state, step)
    return state


def test_reaching_the_target_earns_plus_one_and_ends_the_game():
    env = ReachEnv()
    assert env.prompt(env.initial_state(PROBLEM)) == "Start 7, reach 46, moves +3 *2. 39 to go.\n"
    state = env.initial_state(PROBLEM)
    for step in SOLUTION:
        assert not env.is_terminal(state) and env.reward(state) == 0.0
        state = env.step(state, step)
    assert env.is_terminal(state) and env.reward(state) == 1.0 and env.answer(state) == 46


def test_the_env_writes_the_exact_result_of_the_move_a_line_names():
    env = ReachEnv()  # the policy chooses moves; the arithmetic is the env's, whatever the line says
    state = finish(env, PROBLEM, ["7 * 2 = 15", "99 + 3 = 0, 1 to go"])
    assert state.steps == ("7 * 2 = 14, 32 to go", "14 + 3 = 17, 29 to go") and env.answer(state) == 17
    sloppy = ["1 * 2 = 1", "1 + 3 = 1", "1 + 3 = 1", "1 + 3 = 1", "1 * 2 = 1"]
    assert finish(env, PROBLEM, sloppy).steps == tuple(SOLUTION)


@pytest.mark.parametrize("steps", [
    ["7 * 2 = 14", "14 * 2 = 28", "28 * 2 = 56"],                 # passes the target
    ["7 + 3 = 10"] * 7,                                            # the move cap: 7 moves, 28
    ["7 * 6 = 42"],                                                # a move not allowed
    ["7 * 2 = 14", "Answer: 46"],                                  # not a move at all
])
def test_passing_the_target_the_move_cap_or_a_broken_rule_ends_the_game_at_minus_one(steps):
    env = ReachEnv()
    state = finish(env, PROBLEM, steps)
    assert env.is_terminal(state) and env.reward(state) == -1.0
    assert env.check(PROBLEM, "\n".join(steps)) is False


def test_check_reads_lines_as_the_env_applies_them():
    env = ReachEnv()
    assert env.check(PROBLEM, "\n".join(SOLUTION)) and env.check(PROBLEM, "\n\n".join(SOLUTION))
    assert not env.check(PROBLEM, "\n".join(SOLUTION + ["46 + 3 = 49"]))  # the game had ended at 46
    assert not env.check(PROBLEM, "") and not env.check(PROBLEM, None)


@pytest.mark.parametrize("line", [
    "__import__('os').system('echo hi')", "7 *2 = 14", "07 * 2 = 14", "7 * 23 = 161", "7 * 20",
    "7 × 2 = 14", "٧ * 2 = 14", "7 ** 2 = 49", "1" * 10 + " * 2", "Answer: 46", "", None,
])
def test_malformed_lines_are_rejected_and_never_raise(line):
    env = ReachEnv()
    state = env.initial_state(PROBLEM)
    assert env.apply(state.board, line) is None
    if isinstance(line, str):
        assert not env.legal_step(state, line)
        assert env.is_terminal(env.step(state, line)) and env.reward(env.step(state, line)) == -1.0
    assert env.check(PROBLEM, line) is False


def test_the_mask_allows_every_allowed_move_whatever_the_target_or_the_numbers_stated():
    env = ReachEnv()
    for target in (46, 19, 15):  # the mask judges rules only: the target never changes it
        state = finish(env, reach.make_problem(7, target, ["+3", "*2"]), ["7 + 3 = 10"])
        assert env.legal_step(state, "10 * 2 = 20") and env.legal_step(state, "10 + 3 = 13")
        assert env.legal_step(state, "3 * 2 = 21")
        assert not env.legal_step(state, "10 + 2 = 12") and not env.legal_step(state, "Answer: 10")


def test_after_a_broken_rule_nothing_is_ruled_out():
    env = ReachEnv()
    broken = finish(env, PROBLEM, ["7 + 4 = 11"])
    assert broken.steps == ("7 + 4 = 11",) and env.legal_step(broken, "anything")


@given(start=st.integers(1, 30), moves=st.lists(st.sampled_from(reach.MOVE_MENU), min_size=1, max_size=4, unique=True),
       picks=st.lists(st.integers(0, 3), min_size=1, max_size=reach.MAX_STEPS))
@settings(max_examples=60, deadline=None)
def test_any_legal_path_wins_on_the_problem_it_ends_on_and_on_no_other(start, moves, picks):
    env = ReachEnv()
    value, steps = start, []
    for pick in picks:
        move = moves[pick % len(moves)]
        steps.append(f"{value} {move[0]} {move[1:]}")  # the env writes the rest
        value = reach.apply_move(value, move)
    state = env.initial_state(reach.make_problem(start, value, moves))
    for step in steps:
        assert env.legal_step(state, step) and not env.is_terminal(state)
        state = env.step(state, step)
    assert env.reward(state) == 1.0 and env.answer(state) == value
    assert env.reward(finish(env, reach.make_problem(start, value + 1, moves), steps)) in (-1.0, 0.0)


# --- the generator ---------------------------------------------------------------------------
def test_generated_problems_are_solvable_within_max_steps_by_their_stated_depth():
    env = ReachEnv()
    problems = reach.generate(300, seed="test")
    assert len({reach.key_of(p) for p in problems}) == 300
    for p in problems:
        assert 1 <= p["start"] <= reach.MAX_START and p["target"] <= reach.MAX_TARGET
        assert len(p["moves"]) == reach.MOVES_PER_PROBLEM and set(p["moves"]) <= set(reach.MOVE_MENU)
        solution = p["solution"].split("\n")
        assert len(solution) == p["depth"] <= env.max_steps
        assert env.reward(finish(env, p, solution)) == 1.0
        # no shorter path exists: BFS over every move sequence one shorter finds no target
        assert reach.distances(p["start"], p["moves"], p["depth"] - 1).get(p["target"]) is None


def test_the_generator_spreads_shortest_solution_lengths_over_one_to_max_moves():
    depths = Counter(p["depth"] for p in reach.generate(600, seed="spread"))
    assert set(depths) == set(range(1, reach.MAX_MOVES + 1))
    assert min(depths.values()) > 600 / reach.MAX_MOVES / 2


def test_the_same_seed_gives_the_same_problems_and_excluded_keys_never_appear():
    first = reach.generate(200, seed="a")
    assert first == reach.generate(200, seed="a")
    second = reach.generate(200, seed="a", exclude={reach.key_of(p) for p in first[:100]})
    assert not {reach.key_of(p) for p in first[:100]} & {reach.key_of(p) for p in second}


def test_shortest_solution_is_none_when_the_target_is_out_of_reach():
    assert reach.shortest_solution(10, 7, ["+1"]) is None
    assert reach.shortest_solution(1, 100, ["+1"]) is None  # 99 moves needed
    assert reach.shortest_solution(5, 5, ["+1"]) == []
    assert reach.shortest_solution(5, 7, ["+1", "+2"]) == ["5 + 2 = 7"]
    assert reach.shortest_solution(5, 8, ["+1", "+2"]) == ["5 + 1 = 6, 2 to go", "6 + 2 = 8"]


# --- loading ---------------------------------------------------------------------------------
def test_jsonl_rows_load_and_bad_rows_name_their_file_and_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"start": 7, "target": 46, "moves": ["+3", "*2"], "id": 1}) + "\n")
    [p] = reach.load_jsonl(good)
    assert p["question"] == "Start 7, reach 46, moves +3 *2. 39 to go." and p["id"] == 1
    for row, message in [({"start": 7, "moves": ["+3"]}, "missing field"),
                         ({"start": "7", "target": 46, "moves": ["+3"]}, "'start' must be an integer"),
                         ({"start": 7, "target": 46, "moves": ["-3"]}, "'moves' must be"),
                         ({"start": 7, "target": 46, "moves": []}, "'moves' must be")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"start": 1, "target": 2, "moves": ["+1"]}) + "\n\n" + json.dumps(row) + "\n")
        with pytest.raises(DataError, match=rf"bad.jsonl:3: .*{message}"):
            reach.load_jsonl(bad)


def test_a_state_rebuilt_from_its_question_text_has_the_same_gold():
    env = ReachEnv()
    assert env.initial_state(PROBLEM["question"]) == env.initial_state(PROBLEM)
    assert env.initial_state(PROBLEM).gold == (7, 46, ("+3", "*2"))
    assert env.problem_of(TextState(PROBLEM["question"], (), (7, 46, ("+3", "*2"))))["target"] == 46
