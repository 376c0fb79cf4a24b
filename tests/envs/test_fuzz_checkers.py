"""Fuzzing every task's extractors and checkers with model-like and arbitrary text: they never
raise, return their documented types, and agree with a simple independent reference where one
is easy (an answer appended to any text is the one read back; a number's value is known from
how it was written). Game24's expression checker has its own reference test in test_game24.py.
The toy env takes node ids, not text, so it has nothing here."""

import re
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.envs import game24, gsm8k, prontoqa
from tsllm.envs.base import TextState, split_steps
from tsllm.envs.rlhf import RLHFEnv, TokenState

PIECES = st.sampled_from([
    "answer", "The answer is", " is", " ", "\n", "\t", ":", "####", "$", "-", "+", "%", ",", ".",
    "0", "7", "24", "1,234", "3.50", "١", "true", "false", "Answer:", "(", ")", "*", "/", " = 24",
    "(left: 24)", "4 * 6 = 24 ", "Alex is a wumpus.", "Every wumpus is a tumpus.", "not ", "x",
])
MODEL_TEXT = st.one_of(st.lists(PIECES, max_size=30).map("".join), st.text(max_size=200))
FUZZ = settings(max_examples=200, deadline=None)


# --- gsm8k -------------------------------------------------------------------------------------
@st.composite
def written_numbers(draw) -> tuple[str, Fraction]:
    """A number as a model might write it ("-$1,234.50", "45%") and its exact value."""
    whole = draw(st.integers(0, 10**12))
    places = draw(st.integers(0, 4))
    fraction = draw(st.integers(0, 10**places - 1)) if places else 0
    negative = draw(st.booleans()) and (whole or fraction)
    body = f"{whole:,}" if draw(st.booleans()) else str(whole)
    if places:
        body += "." + str(fraction).rjust(places, "0")
    text = ("-" if negative else draw(st.sampled_from(["", "+"]))) + draw(st.sampled_from(["", "$"])) + body
    text += draw(st.sampled_from(["", "%"]))
    value = whole + Fraction(fraction, 10**places)
    return text, -value if negative else value


@FUZZ
@given(MODEL_TEXT)
def test_gsm8k_extraction_returns_a_canonical_number_or_none(text):
    out = gsm8k.extract_answer(text)
    assert out is None or (isinstance(out, str) and gsm8k.normalize_number(out) == out)


@FUZZ
@given(MODEL_TEXT, written_numbers(), st.sampled_from(["The answer is {}.", "answer is: {}", "#### {}"]))
def test_gsm8k_reads_back_the_answer_appended_to_any_text(prefix, number, form):
    written, value = number
    if "####" in prefix and not form.startswith("####"):
        prefix = prefix.replace("#", "")  # "####" outranks "answer is" by the documented rules
    text = prefix + "\n" + form.format(written)
    assert Fraction(gsm8k.extract_answer(text)) == value  # Fraction reads the canonical text itself
    env = gsm8k.GSM8kEnv()
    state = TextState("q", tuple(split_steps(text)), value)  # a Fraction gold is compared as is
    assert env.reward(state) == 1.0
    assert env.reward(TextState("q", state.steps, value + 1)) == -1.0


@FUZZ
@given(MODEL_TEXT, MODEL_TEXT)
def test_gsm8k_env_and_comparison_never_raise(text, gold):
    env = gsm8k.GSM8kEnv(max_steps=3)
    state = TextState("q", tuple(split_steps(text))[:3], "42")
    assert env.reward(state) in (0.0, 1.0, -1.0)
    assert isinstance(env.is_final_step(text), bool)
    assert gsm8k.answers_equal(text, gold) in (True, False)
    assert gsm8k.parse_number(text) is None or isinstance(gsm8k.parse_number(text), Fraction)


# --- prontoqa ----------------------------------------------------------------------------------
QUESTION = "Every wumpus is a tumpus. Alex is a wumpus. True or false: Alex is a tumpus."


@FUZZ
@given(MODEL_TEXT)
def test_prontoqa_checkers_return_their_types(text):
    assert prontoqa.extract_answer(text) in (True, False, None)
    assert isinstance(prontoqa.parse_sentence(text), (prontoqa.Rule, prontoqa.Fact, type(None)))
    assert prontoqa.entailed([text, "Alex is a wumpus."], text) in (True, False, None)
    for strict in (False, True):
        env = prontoqa.ProntoQAEnv(strict=strict)
        assert env.check({"question": QUESTION, "query": "", "answer": "True"}, text) in (True, False)


@FUZZ
@given(MODEL_TEXT, st.booleans(), st.sampled_from(["The answer is {}.", "the answer is: {}", "{}"]))
def test_prontoqa_reads_back_the_answer_appended_to_any_text(prefix, label, form):
    while form == "{}" and re.search("answer", prefix, re.IGNORECASE):  # "answer is" outranks a last line
        prefix = re.sub("answer", "", prefix, flags=re.IGNORECASE)
    text = prefix + "\n" + form.format(str(label).lower() if "answer" in form else str(label))
    assert prontoqa.extract_answer(text) is label


# --- game24 ------------------------------------------------------------------------------------
@FUZZ
@given(MODEL_TEXT)
def test_game24_checkers_return_their_types(text):
    numbers = [4, 6, 1, 1]
    expr = game24.extract_expression(text)
    assert expr is None or (isinstance(expr, str) and expr == expr.strip())
    assert game24.check_answer(numbers, text) in (True, False)
    left = game24.check_step([Fraction(n) for n in numbers], text)
    assert left is None or (all(isinstance(x, Fraction) for x in left) and left == sorted(left))
    assert game24.check_trace(numbers, text) in (True, False)
    env = game24.Game24Env()
    state = TextState("4 6 1 1", tuple(split_steps(text))[:3], (4, 6, 1, 1))
    assert env.legal_step(state, text) in (True, False)
    assert env.check({"numbers": numbers}, text) in (True, False)
    assert env.check_steps(state) in (True, False)


@FUZZ
@given(st.lists(MODEL_TEXT, max_size=4), st.sampled_from(["4*6*1*1", "(4*6-1+1)", "4 * 6 / (1 * 1)"]),
       st.sampled_from(["Answer: {} = 24", "answer:{}", "ANSWER :  {}  =24"]))
def test_game24_reads_back_the_answer_line_after_any_text(lines, expr, form):
    text = "\n".join(lines + [form.format(expr)])
    assert game24.extract_expression(text) == expr.strip()
    assert game24.Game24Env().check({"numbers": [4, 6, 1, 1]}, text) is True


# --- rlhf: the text comes from decoding token ids, the check is the reward model ----------------
@FUZZ
@given(st.lists(st.integers(0, 0x10FFFF), max_size=12), st.integers(1, 12))
def test_rlhf_rewards_are_the_reward_of_the_decoded_response_before_eos(tokens, max_depth):
    eos = 0
    env = RLHFEnv(lambda prompt, response: float(len(response)), eos_id=eos,
                  decode=lambda ids: "".join(chr(i) for i in ids), max_depth=max_depth)
    state = TokenState("prompt", tuple(tokens[:max_depth]))
    response = state.tokens[:-1] if state.tokens and state.tokens[-1] == eos else state.tokens
    expected = float(len(response)) if env.is_terminal(state) else 0.0
    assert env.reward(state) == expected
    assert env.answer(state) == "".join(chr(i) for i in response)
