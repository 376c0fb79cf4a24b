"""GSM8k: answer extraction on realistic model outputs, numeric comparison, the synthetic
generator (its arithmetic re-checked independently), local jsonl loading through `datasets`
with file:line errors, and the env."""

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.envs import gsm8k
from tsllm.envs.base import DataError
from tsllm.envs.gsm8k import GSM8kEnv, answers_equal, extract_answer, normalize_number

FIXTURES = Path(__file__).parent / "fixtures"


def test_extraction_on_realistic_model_outputs():
    cases = json.loads((FIXTURES / "gsm8k_model_outputs.json").read_text())
    for case in cases:
        assert extract_answer(case["text"]) == case["expected"], case["text"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 1,234", "1234"),
        ("The answer is $3.50.", "3.5"),
        ("The answer is -7", "-7"),
        ("The answer is +7", "7"),
        ("The answer is 0.250", "0.25"),
        ("The answer is 45%", "45"),
        ("We get 20-12=8", "8"),  # the '-' is an operator, not a sign
        ("#### 5\nThe answer is 6", "5"),  # '####' outranks 'answer is'
        ("the answer is 3. Later the answer is 4.", "4"),  # last one wins
        ("-$5", "-5"),
        ("", None),
        ("9" * 31, None),  # refuse absurdly long numbers
        ("We had 5, the answer is ١٢", "5"),  # other scripts' digits are not numbers here
    ],
)
def test_extraction_rules(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "a, b, equal",
    [("1,234", "1234", True), ("3.50", "3.5", True), ("$18", "18", True), ("-3", "3", False),
     ("+3", "3", True), ("0.1", "0.10", True), ("7", "7.01", False), (72, "72", True),
     (None, "1", False), ("abc", "abc", False)],
)
def test_numeric_comparison(a, b, equal):
    assert answers_equal(a, b) is equal


def test_normalize_number_round_trips():
    assert normalize_number("-0.50") == "-0.5" and normalize_number("$0.05") == "0.05"
    assert normalize_number("1,000,000") == "1000000" and normalize_number("x") is None


@settings(max_examples=1500)
@given(st.text(max_size=400))
def test_extraction_never_raises(text):
    out = extract_answer(text)
    assert out is None or isinstance(out, str)


def test_gold_answer_after_hashes():
    assert gsm8k.gold_answer("48/2 = <<48/2=24>>24\n#### 1,072") == "1072"
    with pytest.raises(ValueError):
        gsm8k.gold_answer("no marker")


# --- synthetic problems ---------------------------------------------------------------------
_CALC = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>(\d+)")


def test_synthetic_problems_are_consistent_multi_step_and_seeded():
    problems = gsm8k.synthetic(200, seed=5)
    assert problems == gsm8k.synthetic(200, seed=5)
    assert problems != gsm8k.synthetic(200, seed=6)
    lengths = set()
    for p in problems:
        lines = p["solution"].split("\n")
        assert lines[-1] == f"#### {p['answer']}" and gsm8k.gold_answer(p["solution"]) == p["answer"]
        steps = lines[:-1]
        lengths.add(len(steps))
        value = None
        for line in steps:
            # Re-do every calculator note with Fractions: each result must be an exact integer,
            # the visible number must match it, and each step must start from the last result.
            a, op, b, c, shown = _CALC.search(line).groups()
            exact = {"+": Fraction(a) + Fraction(b), "-": Fraction(a) - Fraction(b),
                     "*": Fraction(a) * Fraction(b), "/": Fraction(a) / Fraction(b)}[op]
            assert exact == int(c) == int(shown) and exact > 0, line
            assert value is None or int(a) == value, (value, line)
            value = int(c)
        assert str(value) == p["answer"]
        assert p["question"].split(" has ")[0] in p["question"]  # the named person recurs
        assert p["question"].endswith("have now?")
    assert lengths == {2, 3, 4}


def test_synthetic_gold_solution_earns_plus_one_in_the_env():
    env = GSM8kEnv()
    for p in gsm8k.synthetic(20, seed=1):
        state = env.initial_state(p)
        for step in gsm8k.solution_steps(p["solution"]):
            state = env.step(state, step)
        assert env.is_terminal(state) and env.reward(state) == 1.0
        assert "<<" not in env.prompt(state)  # calculator notes are stripped from steps


# --- loading -------------------------------------------------------------------------------
def test_load_local_jsonl_through_datasets(tmp_path):
    problems = gsm8k.load_gsm8k(str(FIXTURES / "gsm8k_sample.jsonl"), cache_dir=str(tmp_path / "cache"))
    assert [p["answer"] for p in problems] == ["72", "45", "1550"]
    assert problems[0]["question"].startswith("A baker makes 48 muffins")
    assert gsm8k.load_gsm8k(str(FIXTURES / "gsm8k_sample.jsonl"), limit=1,
                            cache_dir=str(tmp_path / "cache"))[0]["answer"] == "72"


def test_local_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "x\\n#### 3"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=rf"{bad}:2: missing field"):
        gsm8k.load_gsm8k(str(bad), cache_dir=str(tmp_path / "cache"))
    no_gold = tmp_path / "nogold.jsonl"
    no_gold.write_text('{"question": "q", "answer": "x\\n#### 3"}\n\n{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(DataError, match=rf"{no_gold}:3: .*####"):
        gsm8k.load_gsm8k(str(no_gold), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError):
        gsm8k.load_gsm8k(str(tmp_path / "missing.jsonl"))


def test_hub_name_goes_to_datasets_with_config_and_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"question": "q1", "answer": "1+1 = 2\n#### 2"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    problems = gsm8k.load_gsm8k("openai/gsm8k", split="train")
    assert calls[0][0] == ("openai/gsm8k", "main") and calls[0][1]["split"] == "train"
    assert problems == [{"question": "q1", "answer": "2", "solution": "1+1 = 2\n#### 2"}]


def test_a_hub_id_that_cannot_be_reached_is_one_line_naming_it():
    """The suite runs offline (HF_HUB_OFFLINE=1), as a machine without network does."""
    with pytest.raises(DataError) as error:
        gsm8k.load_gsm8k("tsllm-tests/no-such-gsm8k", split="test")
    message = str(error.value)
    assert message.startswith("tsllm-tests/no-such-gsm8k: the hub dataset cannot be loaded (")
    assert "give a local file instead" in message and "\n" not in message


# --- the environment -----------------------------------------------------------------------
def test_env_terminal_lines_answers_and_rewards():
    env = GSM8kEnv(max_steps=3)
    problem = {"question": "What is 1,000 + 234?", "answer": "1234"}
    s0 = env.initial_state(problem)
    assert env.prompt(s0) == "Question: What is 1,000 + 234?\nAnswer:\n"
    s1 = env.step(s0, "1000 + 234 = 1234")
    assert not env.is_terminal(s1) and env.reward(s1) == 0.0
    assert env.answer(s1) == "1234"  # last number, available before the end for votes
    done = env.step(s1, "The answer is $1,234.")
    assert env.is_terminal(done) and env.reward(done) == 1.0 and env.answer(done) == "1234"
    wrong = env.step(s1, "#### 1243")
    assert env.is_terminal(wrong) and env.reward(wrong) == -1.0
    capped = env.step(env.step(s1, "hmm"), "still thinking about 1234")
    assert env.is_terminal(capped) and env.reward(capped) == 1.0  # capped: the last number is read


# --- MATH-style \boxed{} answers -------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        (r"So the total is \boxed{1,234}.", "1234"),
        (r"\boxed{\$18}", "18"),
        (r"\boxed{18 \text{ dollars}}", "18"),
        (r"\boxed{45\%}", "45"),
        (r"\boxed{1{,}000}", "1000"),
        (r"\boxed{\frac{3}{4}}", "0.75"),  # the same canonical text as 0.75 written out: one vote
        (r"\boxed{-\dfrac{1}{3}}", "-1/3"),  # no finite decimal: p/q
        (r"\boxed{2/6}", "1/3"),
        (r"\boxed {12}", "12"),
        (r"#### 5, but then \boxed{6}", "6"),  # the box outranks '####' and 'answer is'
        (r"\boxed{0.5} and later \boxed{3}", "3"),  # the last box wins
        (r"\boxed{x + 1}", None),  # a box that holds no number is a wrong answer, not the last number
        (r"7 \boxed{5", None),  # never closed
        (r"\boxed{\frac{1}{0}}", None),
        ("\\boxed{" + "{" * 500, None),
    ],
)
def test_boxed_answers(text, expected):
    assert extract_answer(text) == expected


def test_boxed_final_line_ends_the_episode_and_is_checked():
    env = GSM8kEnv(max_steps=5)
    problem = {"question": "Half of 3 apples?", "answer": "1.5"}
    s1 = env.step(env.initial_state(problem), "3 / 2 = 1.5")
    done = env.step(s1, r"The total is \boxed{\frac{3}{2}}.")
    assert env.is_terminal(done) and env.reward(done) == 1.0 and env.answer(done) == "1.5"
    wrong = env.step(s1, r"\boxed{\frac{1}{3}}")
    assert env.is_terminal(wrong) and env.reward(wrong) == -1.0 and env.answer(wrong) == "1/3"
    assert answers_equal("1/3", r"2/6") and normalize_number("-2/6") == "-1/3"
