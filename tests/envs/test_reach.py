"""Reach: the step rules and the checker (model text is parsed, never evaluated), the legal-move
mask judged without the target, the generator's properties, and the jsonl loader's errors."""

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.envs import reach
from tsllm.envs.base import DataError, TextState
from tsllm.envs.reach import ReachEnv

PROBLEM = reach.make_problem(7, 46, ["+3", "*2"])
SOLUTION = ["7 * 2 = 14", "14 + 3 = 17", "17 + 3 = 20", "20 + 3 = 23", "23 * 2 = 46", "Answer: 46"]


def finish(env, problem, steps):
    state = env.initial_state(problem)
    for step in steps:
        state = env.step(state, step)
    return state


def test_a_legal_path_to_the_target_earns_plus_one_and_stops_at_the_answer():
    env = ReachEnv()
    state = finish(env, PROBLEM, SOLUTION)
    assert env.is_terminal(state) and env.reward(state) == 1.0
    assert env.prompt(env.initial_state(PROBLEM)) == "Start 7, reach 46, moves +3 *2.\n"
    assert env.answer(state) == 46


@pytest.mark.parametrize("steps", [
    ["7 * 2 = 14", "14 + 3 = 17", "Answer: 17"],                           # legal, not the target
    ["7 * 2 = 15", "15 + 3 = 18", "18 + 3 = 21", "21 + 3 = 24", "Answer: 46"],  # wrong arithmetic
    ["7 * 6 = 42", "42 + 4 = 46", "Answer: 46"],                             # moves not allowed
    ["8 * 2 = 16", "Answer: 46"],                                            # not the current value
    ["7 * 2 = 14", "Answer: 46"],                                            # answer is not the value reached
    ["Answer: 46"],
])
def test_a_wrong_or_rule_breaking_trace_earns_minus_one_when_strict(steps):
    env = ReachEnv(strict=True)
    state = finish(env, PROBLEM, steps)
    assert env.is_terminal(state) and env.reward(state) == -1.0


def test_without_strict_only_the_answer_counts():
    env = ReachEnv(strict=False)
    assert env.reward(finish(env, PROBLEM, ["7 * 6 = 42", "42 + 4 = 46", "Answer: 46"])) == 1.0
    assert env.reward(finish(env, PROBLEM, ["Answer: 45"])) == -1.0


def test_the_episode_ends_after_max_steps_lines_without_an_answer():
    env = ReachEnv()
    steps = ["7 + 3 = 10", "10 + 3 = 13", "13 + 3 = 16", "16 + 3 = 19", "19 + 3 = 22", "22 + 3 = 25", "25 + 3 = 28"]
    state = finish(env, PROBLEM, steps)
    assert env.max_steps == reach.MAX_MOVES + 1 and env.is_terminal(state) and env.reward(state) == -1.0


@pytest.mark.parametrize("line", [
    "__import__('os').system('echo hi')", "7 * 2 = 14 ", "7 *2 = 14", "07 * 2 = 14", "7 * 2 = 014",
    "7 × 2 = 14", "٧ * 2 = 14", "7 ** 2 = 49", "7 * 2 = 1" + "4" * 10, "Answer: 4 6", "Answer: 46.0", "", None,
])
def test_malformed_lines_are_rejected_and_never_raise(line):
    env = ReachEnv()
    state = env.initial_state(PROBLEM)
    assert reach.next_value(7, ("+3", "*2"), line if line is not None else "") is None or line == "7 * 2 = 14 "
    if isinstance(line, str) and line.strip() != "7 * 2 = 14":
        assert not env.legal_step(state, line)
    assert env.check(PROBLEM, line) is False


def test_the_mask_allows_every_legal_move_and_answer_whatever_the_target():
    env = ReachEnv()
    for target in (46, 9, 15):  # the mask judges rules only: the target never changes it
        state = finish(env, reach.make_problem(7, target, ["+3", "*2"]), ["7 + 3 = 10"])
        assert env.legal_step(state, "10 * 2 = 20") and env.legal_step(state, "10 + 3 = 13")
        assert env.legal_step(state, "Answer: 10")
        assert not env.legal_step(state, "Answer: 46") and not env.legal_step(state, "10 + 2 = 12")
        assert not env.legal_step(state, "7 + 3 = 10") and not env.legal_step(state, "10 * 2 = 21")


def test_after_an_answer_nothing_is_legal_and_after_a_broken_step_nothing_is_ruled_out():
    env = ReachEnv()
    answered = finish(env, PROBLEM, ["Answer: 7"])
    assert not env.legal_step(answered, "7 + 3 = 10")
    broken = finish(env, PROBLEM, ["7 + 4 = 11"])
    assert env.legal_step(broken, "anything")


@given(start=st.integers(1, 30), moves=st.lists(st.sampled_from(reach.MOVE_MENU), min_size=1, max_size=4, unique=True),
       picks=st.lists(st.integers(0, 3), max_size=6))
@settings(max_examples=60, deadline=None)
def test_any_random_legal_path_is_legal_step_by_step_and_wins_only_on_its_end(start, moves, picks):
    env = ReachEnv()
    value, steps = start, []
    for pick in picks:
        move = moves[pick % len(moves)]
        steps.append(reach.step_line(value, move))
        value = reach.apply_move(value, move)
    steps.append(reach.answer_line(value))
    state = env.initial_state(reach.make_problem(start, value, moves))
    for step in steps:
        assert env.legal_step(state, step)
        state = env.step(state, step)
    assert env.reward(state) == 1.0
    assert env.reward(finish(env, reach.make_problem(start, value + 1, moves), steps)) == -1.0


# --- the generator ---------------------------------------------------------------------------
def test_generated_problems_are_solvable_within_max_steps_by_their_stated_depth():
    env = ReachEnv()
    problems = reach.generate(300, seed="test")
    assert len({reach.key_of(p) for p in problems}) == 300
    for p in problems:
        assert 1 <= p["start"] <= reach.MAX_START and p["target"] <= reach.MAX_TARGET
        assert len(p["moves"]) == reach.MOVES_PER_PROBLEM and set(p["moves"]) <= set(reach.MOVE_MENU)
        solution = p["solution"].split("\n")
        assert len(solution) == p["depth"] + 1 <= env.max_steps
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
    assert reach.shortest_solution(5, 5, ["+1"]) == ["Answer: 5"]


# --- loading ---------------------------------------------------------------------------------
def test_jsonl_rows_load_and_bad_rows_name_their_file_and_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"start": 7, "target": 46, "moves": ["+3", "*2"], "id": 1}) + "\n")
    [p] = reach.load_jsonl(good)
    assert p["question"] == "Start 7, reach 46, moves +3 *2." and p["id"] == 1
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
