"""Game24: the exact answer checker (hand examples, hostile input, fuzzing, a differential test
against an independent evaluator), the step checker, the solver over all 1362 puzzles, data
loading, and the env."""

import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsllm.envs import game24
from tsllm.envs.base import DataError
from tsllm.envs.game24 import Game24Env, check_answer, check_step, check_trace, extract_expression, solve

FIXTURES = Path(__file__).parent / "fixtures"
NUMS = [4, 9, 10, 13]


# --- the answer checker: hand examples ---------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "(10-4)*(13-9)",
        "(10-4)*(13-9) = 24",
        "(13 - 9) * (10 - 4)=24",
        "((13-9)*(10-4))",
        "(13-9)*(10-4)\t=  24",
    ],
)
def test_accepts_correct_expressions(text):
    assert check_answer(NUMS, text) is True


def test_accepts_exact_fraction_arithmetic():
    # 8/(3-8/3) = 8/(1/3) = 24: only exact rationals get this right (floats give 23.99...).
    assert check_answer([3, 3, 8, 8], "8/(3-8/3)") is True
    assert check_answer([1, 5, 5, 5], "5*(5-1/5) = 24") is True


@pytest.mark.parametrize(
    "text, why",
    [
        ("(10-4)*(13-9) = 25", "claims the wrong total"),
        ("(10-4)*(13-9) = 24 = 24", "two equals signs"),
        ("10*13-9-4", "value 117"),
        ("(10-4)*(13-9)*1", "uses a number not given"),
        ("(10-4)*(13-4)", "uses 4 twice and drops 9"),
        ("(10-4)*4", "drops numbers"),
        ("(10-4)**(13-9)", "power is not allowed"),
        ("-(4-10)*(13-9)", "unary minus is not allowed"),
        ("+(10-4)*(13-9)", "unary plus is not allowed"),
        ("(10-4)*(13-9", "unbalanced parenthesis"),
        ("(10-4))*(13-9)", "unbalanced parenthesis"),
        ("()", "empty parentheses"),
        ("", "empty"),
        ("24", "just the target"),
        ("(10-4)(13-9)", "implicit multiplication"),
        ("(10-04)*(13-9)", "leading zero"),
        ("(10.0-4)*(13-9)", "decimal point"),
        ("(10-4)×(13-9)", "unicode times sign"),
        ("(１0-4)*(13-9)", "fullwidth digit"),
        ("(10-4)*(13-9) # 24", "junk"),
        ("__import__('os').system('echo hi')", "code"),
        ("x*(13-9)", "a name"),
        ("13/(9-9)+4+10", "division by zero (and 9 twice)"),
    ],
)
def test_rejects_wrong_or_malformed(text, why):
    assert check_answer(NUMS, text) is False, why


def test_division_by_zero_is_false_not_an_error():
    # 1/(1-1) divides by zero inside an otherwise well-formed expression over the right numbers.
    assert check_answer([1, 1, 1, 24], "1/(1-1)+24") is False


HOSTILE = [
    "**",
    "__import__('os')",
    "1/0",
    "9" * 1_000_000,
    "(" * 1_000_000,
    "(" * 100 + "4" + ")" * 100,
    "(" * 16 + "(10-4)*(13-9)" + ")" * 16,  # 17 levels: over the depth bound
    "4" * 5000 + "*9*10*13",
    "99999999999999999999*9*10*13",
    "\x00\x01\x02",
    "٤*٩*١٠*١٣",  # Arabic-Indic digits
    "𝟒*𝟗",
    "4 9 10 13",
    "lambda: 24",
    "=24",
    "= 24",
    ")(",
    "\n(10-4)*(13-9)\n",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_return_false(text):
    assert check_answer(NUMS, text) is False


def test_paren_depth_limit_is_a_clean_false():
    # 17 redundant pairs exceed the depth bound even though the expression is fine and short.
    deep = "(" * 17 + "(10-4)*(13-9)" + ")" * 17
    assert len(deep) < game24.MAX_EXPR_CHARS and check_answer(NUMS, deep) is False
    assert check_answer(NUMS, "(" * 10 + "(10-4)*(13-9)" + ")" * 10) is True


def test_non_string_inputs_are_false():
    for value in (None, 24, b"(10-4)*(13-9)", ["(10-4)*(13-9)"]):
        assert check_answer(NUMS, value) is False


# --- the answer checker: fuzzing --------------------------------------------------------------
# Pieces that hit every parser path: digits, operators, parens, junk, multi-char tricks.
EXPR_PIECES = st.sampled_from(list("0123456789+-*/()= \t.x_") + ["**", "１", "٣", "\n", "((", "24", "13"])


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EXPR_PIECES, max_size=40).map("".join))
def test_fuzz_expression_like_strings_never_raise(text):
    assert isinstance(check_answer(NUMS, text), bool)


@settings(max_examples=1000)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_unicode_never_raises(text):
    assert check_answer(NUMS, text) in (True, False)


def _random_expression(numbers, rng):
    """A random fully parenthesised expression over `numbers` and its exact value (or None on
    division by zero), computed independently of the checker."""
    items = [(str(n), Fraction(n)) for n in numbers]
    while len(items) > 1:
        a = items.pop(rng.randrange(len(items)))
        b = items.pop(rng.randrange(len(items)))
        op = rng.choice("+-*/")
        if a[1] is None or b[1] is None or (op == "/" and b[1] == 0):
            value = None
        else:
            value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1], "/": a[1] / b[1] if b[1] else None}[op]
        items.append((f"({a[0]}{op}{b[0]})", value))
    return items[0]


@settings(max_examples=1000)
@given(st.lists(st.integers(1, 13), min_size=4, max_size=4), st.integers(0, 2**32))
def test_checker_agrees_with_independent_evaluation(numbers, seed):
    text, value = _random_expression(numbers, random.Random(seed))
    assert check_answer(numbers, text) == (value == 24)
    assert game24.evaluate_expression(numbers, text) == value


# --- the step checker --------------------------------------------------------------------------
def test_step_checker_accepts_valid_steps_and_returns_what_is_left():
    assert check_step([4, 9, 10, 13], "13 - 9 = 4 (left: 4 4 10)") == [4, 4, 10]
    assert check_step([4, 4, 10], "(left: 4 4 10)") is None
    assert check_step([Fraction(8, 3), 3, 8], "3 - 8/3 = 1/3 (left: 1/3 8)") == [Fraction(1, 3), 8]
    assert check_step([Fraction(1, 3), 8], "8 / 1/3 = 24 (left: 24)") == [24]
    assert check_step([4, 9, 10, 13], "13 - 9 = 4 (left: 10 4 4)") == [4, 4, 10]  # any order


@pytest.mark.parametrize(
    "line, why",
    [
        ("13 - 9 = 5 (left: 4 5 10)", "wrong arithmetic"),
        ("13 - 8 = 5 (left: 4 5 10)", "8 is not available"),
        ("13 - 13 = 0 (left: 0 4 9 10)", "13 used twice"),
        ("13 - 9 = 4 (left: 4 10)", "remainder drops a number"),
        ("13 - 9 = 4 (left: 4 4 10 10)", "remainder invents a number"),
        ("13 - 9 = 4", "no left list"),
        ("13-9=4 (left: 4 4 10)", "missing spaces"),
        ("13 ** 9 = 4 (left: 4 4 10)", "bad operator"),
        ("13 / 0 = 0 (left: 0 4 10)", "division by zero"),
        ("13 - 9/0 = 4 (left: 4 4 10)", "zero denominator"),
        ("9" * 100 + " - 9 = 4 (left: 4 4 10)", "huge number"),
        ("x" * 1_000_000, "huge line"),
        ("١٣ - 9 = 4 (left: 4 4 10)", "Arabic-Indic digits"),
    ],
)
def test_step_checker_rejects(line, why):
    assert check_step([4, 9, 10, 13], line) is None, why


def test_extract_expression_reads_the_last_answer_line():
    text = "13 - 9 = 4 (left: 4 4 10)\nAnswer: (13-9)*(10-4) = 24"
    assert extract_expression(text) == "(13-9)*(10-4)"
    assert extract_expression("answer:  6*4") == "6*4"
    assert extract_expression("no answer here") is None


# --- the solver and the 1362 puzzles ---------------------------------------------------------
def test_known_trace_format():
    # Integer-only pass; pairs in ascending order, ops + * - /. Pair (4, 9): 13 -> {10,13,13},
    # 36 -> {10,13,36}, 5 -> {5,10,13} all dead ends (no 24 reachable), 4-9 and the
    # divisions are not natural. Pair (4, 10): 14 -> {9,13,14} and 40 -> {9,13,40} are dead,
    # then 10-4 = 6 -> {6,9,13}, and 13-9 = 4, 6*4 = 24.
    assert solve([4, 9, 10, 13]) == [
        "10 - 4 = 6 (left: 6 9 13)",
        "13 - 9 = 4 (left: 4 6)",
        "6 * 4 = 24 (left: 24)",
        "Answer: (10-4)*(13-9) = 24",
    ]
    assert solve([1, 1, 1, 1]) is None


def test_exactly_1362_puzzles_and_every_trace_checks():
    puzzles = game24.all_puzzles()
    assert len(puzzles) == 1362 and len(set(puzzles)) == 1362
    assert (1, 1, 4, 6) in puzzles and (1, 1, 1, 1) not in puzzles
    for numbers in puzzles:
        trace = solve(numbers)
        assert trace is not None and len(trace) == 4, numbers
        text = "\n".join(trace)
        assert check_trace(numbers, text), (numbers, text)
        assert check_answer(numbers, extract_expression(text)), (numbers, text)


def test_solver_prefers_integer_steps_when_they_exist():
    # 1 1 4 6 is solvable as 6*4*1*1 without fractions or negatives.
    for line in solve([1, 1, 4, 6])[:-1]:
        assert "/" not in line.split("(left")[0] and "= -" not in line


def test_check_trace_rejects_tampered_traces():
    good = solve([4, 9, 10, 13])
    assert check_trace(NUMS, "\n".join(good))
    bad_step = ["10 - 4 = 7 (left: 7 9 13)"] + good[1:]
    assert not check_trace(NUMS, "\n".join(bad_step))
    assert not check_trace(NUMS, "\n".join(good[:-1]))  # no answer line
    assert not check_trace(NUMS, "\n".join(good[:-1] + ["Answer: 10*13-9-4 = 24"]))
    assert not check_trace(NUMS, "Answer: (10-4)*(13-9) = 24")  # the steps are missing


def test_split_is_seeded_disjoint_and_complete():
    train, test = game24.split(seed=3, test_size=100)
    train2, test2 = game24.split(seed=3, test_size=100)
    assert [p["numbers"] for p in test] == [p["numbers"] for p in test2]
    assert len(train) == 1262 and len(test) == 100
    keys = {tuple(p["numbers"]) for p in train} | {tuple(p["numbers"]) for p in test}
    assert len(keys) == 1362
    other, _ = game24.split(seed=4, test_size=100)
    assert [p["numbers"] for p in other[:20]] != [p["numbers"] for p in train[:20]]
    assert all(check_trace(p["numbers"], p["solution"]) for p in test)
    with pytest.raises(ValueError):
        game24.split(test_size=2000)


# --- loading --------------------------------------------------------------------------------
def test_load_tot_csv_with_rank_filter():
    problems = game24.load_tot_csv(FIXTURES / "24_tot_sample.csv")
    assert [p["question"] for p in problems][:2] == ["1 1 4 6", "1 1 11 11"]
    assert len(problems) == 6 and problems[0]["rank"] == 1
    test = game24.load_tot_csv(FIXTURES / "24_tot_sample.csv", ranks=(901, 1000))
    assert [p["rank"] for p in test] == [901, 902, 1000]
    assert all(check_trace(p["numbers"], p["solution"]) for p in problems)


def test_load_tot_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Rank,Puzzles,AMT (s)\n1,1 1 4 6,3.0\n2,1 1 four 6,3.1\n")
    with pytest.raises(DataError, match=rf"{path}:3:"):
        game24.load_tot_csv(path)


def test_load_jsonl_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"numbers": [4, 9, 10, 13], "id": 7}\n{"question": "1 1 4 6"}\n')
    problems = game24.load_jsonl(good)
    assert problems[0]["numbers"] == NUMS and problems[0]["id"] == 7
    assert problems[1]["numbers"] == [1, 1, 4, 6]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"numbers": [4, 9, 10, 13]}\n{"numbers": [4, 9, "x", 13]}\n')
    with pytest.raises(DataError, match=rf"{bad}:2:"):
        game24.load_jsonl(bad)


def test_load_tsllm_jsonl_fixture():
    """TS-LLM's layout: `question` "1 1 4 6" and an `answer` trace, kept but never used to score."""
    import json

    rows = [json.loads(line) for line in (FIXTURES / "game24_tsllm.jsonl").read_text().splitlines()]
    problems = game24.load_jsonl(FIXTURES / "game24_tsllm.jsonl")
    assert [p["question"] for p in problems] == [r["question"] for r in rows]
    assert [p["numbers"] for p in problems] == [[int(n) for n in r["question"].split()] for r in rows]
    assert [p["answer"] for p in problems] == [r["answer"] for r in rows]
    env = Game24Env(strict=True)
    for p in problems:  # the solver's own trace is the solution, and the checker reads only the numbers
        assert check_trace(p["numbers"], p["solution"])
        assert env.check(env.problem_of(env.initial_state(p)), p["solution"])


# --- the environment ------------------------------------------------------------------------
def _run(env, problem, steps):
    state = env.initial_state(problem)
    for s in steps:
        assert not env.is_terminal(state)
        state = env.step(state, s)
    return state


def test_env_gold_trace_gets_plus_one_and_wrong_answer_minus_one():
    env = Game24Env()
    problem = game24.make_problem(NUMS)
    s0 = env.initial_state(problem)
    assert env.prompt(s0) == "Input: 4 9 10 13\n"
    gold = problem["solution"].split("\n")
    end = _run(env, problem, gold)
    assert env.is_terminal(end) and env.reward(end) == 1.0 and env.answer(end) == "(10-4)*(13-9)"
    assert env.check_steps(end)
    wrong = _run(env, problem, gold[:-1] + ["Answer: 10*13-9-4 = 24"])
    assert env.reward(wrong) == -1.0
    half = _run(env, problem, gold[:2])
    assert not env.is_terminal(half) and env.reward(half) == 0.0 and env.answer(half) is None


def test_env_strict_mode_requires_valid_steps():
    problem = game24.make_problem(NUMS)
    sloppy = ["4 + 4 = 8 (left: 8)", "Answer: (10-4)*(13-9) = 24"]
    assert Game24Env().reward(_run(Game24Env(), problem, sloppy)) == 1.0
    strict = Game24Env(strict=True)
    state = _run(strict, problem, sloppy)
    assert strict.reward(state) == -1.0 and not strict.check_steps(state)


def test_legal_steps_follow_the_rules_from_the_puzzle_alone():
    env = Game24Env()
    root = env.initial_state({"question": "1 6 8 13"})  # no solution given: the rules need none
    assert env.legal_step(root, "6 * 1 = 6 (left: 6 8 13)")
    assert not env.legal_step(root, "8 + 6 = 11 (left: 1 11 13)")  # wrong sum
    assert not env.legal_step(root, "8 + 6 = 14 (left: 14 13)")  # the 1 went missing
    assert env.legal_step(root, "Answer: 13+8+6*1 = 24")  # each number once: legal, though it is 27
    assert not env.legal_step(root, "Answer: 13+8+3 = 24")  # 3 is not a number of the puzzle
    after = env.step(root, "13 - 6 = 7 (left: 1 7 8)")
    assert env.legal_step(after, "8 - 1 = 7 (left: 7 7)") and not env.legal_step(after, "13 - 6 = 7 (left: 1 7 8)")
    end = env.step(env.step(after, "8 - 1 = 7 (left: 7 7)"), "7 * 7 = 49 (left: 49)")
    assert not env.legal_step(end, "49 - 1 = 48 (left: 48)")  # one number left: only the answer
    assert not env.legal_step(env.step(end, "Answer: (13-6)*(8-1) = 24"), "1 + 1 = 2 (left: 2)")
    sampled = env.step(root, "8 + 6 = 11 (left: 1 11 13)")  # an illegal history rules nothing out
    assert env.legal_step(sampled, "anything")


def test_env_depth_cap_and_question_forms():
    env = Game24Env(max_steps=4)
    state = _run(env, [4, 9, 10, 13], ["a", "b", "c", "d"])
    assert env.is_terminal(state) and env.reward(state) == -1.0 and env.answer(state) is None
    assert env.initial_state("4 9 10 13") == env.initial_state({"numbers": NUMS}) == env.initial_state(NUMS)
