"""PrOntoQA: generated labels are right (re-derived by an independent reasoner written here),
gold proofs pass the proof checker and earn +1, tampered proofs fail, the published json shape
and TS-LLM's test jsonl layout load, and bad rows name their file and line."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.envs import prontoqa
from tsllm.envs.base import DataError
from tsllm.envs.prontoqa import Fact, ProntoQAEnv, Rule, check_proof, extract_answer, parse_sentence

FIXTURES = Path(__file__).parent / "fixtures"


def independent_label(context: str, query: str) -> bool | None:
    """A second reasoner using plain word splitting (not the module's regexes): collect the
    concepts the entity belongs to by following positive rules, then read the rule into the
    queried concept from any of them. Concepts are compared without their trailing e/s letters,
    so a plural rule ("Wumpuses are not shy.") meets its singular facts ("Max is a wumpus.")."""
    def words(s):
        return s.rstrip(".").split()

    def concept(word):
        return word.lower().rstrip("es")
    rules, start = [], None
    for sentence in context.split(". "):
        w = words(sentence)
        if w[0] in ("Every", "Each"):
            negated = w[3] == "not"
            rules.append((concept(w[1]), concept(w[-1]), not negated))
        elif w[1] == "are":
            rules.append((concept(w[0]), concept(w[-1]), w[2] != "not"))
        else:
            start = concept(w[-1])
    q = words(query.removeprefix("True or false: "))
    target, query_positive = concept(q[-1]), q[2] != "not"
    member, frontier = {start}, [start]
    while frontier:
        c = frontier.pop()
        for subject, obj, positive in rules:
            if subject == c and positive and obj not in member:
                member.add(obj)
                frontier.append(obj)
    if target in member:
        return query_positive
    for subject, obj, positive in rules:
        if subject in member and obj == target and not positive:
            return not query_positive
    return None


PROBLEMS = prontoqa.generate(300, seed=11)


def test_generated_labels_match_an_independent_reasoner():
    for p in PROBLEMS:
        assert independent_label(p["question"], p["query"]) == (p["answer"] == "True"), p


def test_generator_covers_depths_labels_and_distractors():
    assert set(Counter(p["depth"] for p in PROBLEMS)) == {1, 2, 3, 4, 5}
    labels = Counter(p["answer"] for p in PROBLEMS)
    assert labels["True"] > 100 and labels["False"] > 100
    for p in PROBLEMS:
        target = p["query"].rstrip(".").split()[-1]
        rules_on_target = [s for s in p["question"].split(". ") if s.rstrip(".").endswith(" " + target)]
        polarities = {" not " in s for s in rules_on_target}
        assert polarities == {True, False}, p  # the tempting opposite rule is always there
        assert len(p["chain_of_thought"]) == 2 * p["depth"] + 1
    assert prontoqa.generate(5, seed=1) == prontoqa.generate(5, seed=1)


def test_gold_proofs_pass_the_proof_checker_and_earn_plus_one():
    env, strict = ProntoQAEnv(), ProntoQAEnv(strict=True)
    for p in PROBLEMS:
        steps = p["solution"].split("\n")
        assert check_proof(f"{p['question']} {p['query']}", steps, p["answer"] == "True"), p
        state = env.initial_state(p)
        for step in steps:
            assert not env.is_terminal(state)
            state = env.step(state, step)
        assert env.is_terminal(state)
        assert env.reward(state) == 1.0 and strict.reward(state) == 1.0
        assert env.answer(state) == (p["answer"] == "True")


def test_tampered_proofs_fail():
    p = next(q for q in PROBLEMS if q["depth"] == 3)
    question, label = f"{p['question']} {p['query']}", p["answer"] == "True"
    steps = p["solution"].split("\n")
    assert check_proof(question, steps, label)
    assert not check_proof(question, steps[:1] + steps[3:], label)  # skips a rule and its conclusion
    flipped_answer = steps[:-1] + [f"The answer is {'false' if label else 'true'}."]
    assert not check_proof(question, flipped_answer, label)
    assert not check_proof(question, steps, not label)
    invented = steps[:1] + ["Every wumpus is a jompus."] + steps[1:]
    if "Every wumpus is a jompus." not in p["question"]:
        assert not check_proof(question, invented, label)
    last_fact = steps[-2]
    flipped_fact = (last_fact.replace(" is not ", " is ") if " not " in last_fact
                    else last_fact.replace(" is ", " is not "))
    assert not check_proof(question, steps[:-2] + [flipped_fact, steps[-1]], label)
    assert not check_proof(question, steps[:-1], label)  # no answer line
    # The wrong final answer still ends the episode, with reward -1.
    env = ProntoQAEnv()
    state = env.initial_state(p)
    for step in flipped_answer:
        state = env.step(state, step)
    assert env.is_terminal(state) and env.reward(state) == -1.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Alex is a wumpus.\nThe answer is true.", True),
        ("The answer is: False", False),
        ("the answer is TRUE. Wait, the answer is false.", False),
        ("Alex is a wumpus.\nFalse", False),
        ("true", True),
        ("Alex is a wumpus.", None),
        ("The answer is maybe.", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) is expected


@settings(max_examples=1000)
@given(st.text(max_size=300))
def test_checkers_never_raise(text):
    assert extract_answer(text) in (True, False, None)
    question = "Every a is a b. Alex is a a. True or false: Alex is a b."
    assert check_proof(question, text.split("\n"), True) in (True, False)


def test_load_published_json_fixture():
    problems = prontoqa.load_json(FIXTURES / "prontoqa_sample.json")
    assert [p["id"] for p in problems] == ["example1", "example2"]
    first = problems[0]  # the nested test_example, not the in-context example
    assert first["query"] == "True or false: Max is a rompus." and first["answer"] == "False"
    env = ProntoQAEnv(strict=True)
    for p in problems:
        assert env.check(p, p["solution"])
        label = p["answer"] == "True"
        assert check_proof(f"{p['question']} {p['query']}", p["solution"].split("\n"), label)
        assert independent_label(p["question"], p["query"]) == label


def test_loading_errors_name_file_and_line(tmp_path):
    rows = tmp_path / "p.jsonl"
    good = {"question": "Every a is a b. Sam is a a.", "query": "True or false: Sam is a b.", "answer": "True"}
    rows.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": "Maybe"}) + "\n")
    with pytest.raises(DataError, match=rf"{rows}:2: .*True or False"):
        prontoqa.load_jsonl(rows)
    broken = tmp_path / "p.json"
    broken.write_text('{\n  "example1": {\n    "question": "x",\n  }\n}\n')
    with pytest.raises(DataError, match=rf"{broken}:4:"):
        prontoqa.load_json(broken)
    missing = tmp_path / "m.json"
    missing.write_text(json.dumps({"ok": {**good, "id": "ex"}, "ex": {"question": "x"}}, indent=1))
    with pytest.raises(DataError, match=rf"{missing}:8: example 'ex': missing"):  # the key's line, not the value's
        prontoqa.load_json(missing)
    rows.write_text(json.dumps(good) + "\n")
    assert prontoqa.load_jsonl(rows)[0]["answer"] == "True"


@pytest.mark.parametrize("sentence, parsed", [
    ("Wumpuses are tumpuses.", Rule("wumpus", "tumpus", True)),
    ("Jompuses are not shy.", Rule("jompus", "shy", False)),
    ("Butterflies are not nervous.", Rule("butterfly", "nervous", False)),
    ("Cats are mammals.", Rule("cat", "mammal", True)),
    ("Every wumpus is an impus.", Rule("wumpus", "impus", True)),
    ("Max is not bitter.", Fact("Max", "bitter", False)),
    ("Max and Fae are wumpuses.", None),
])
def test_plural_rules_name_their_concepts_in_the_singular(sentence, parsed):
    assert parse_sentence(sentence) == parsed


def test_load_tsllm_test_jsonl_fixture():
    """TS-LLM's released test split: the query inside `question`, proofs as {text, correct}."""
    rows = [json.loads(line) for line in (FIXTURES / "prontoqa_tsllm_test.jsonl").read_text().splitlines()]
    problems = prontoqa.load_jsonl(FIXTURES / "prontoqa_tsllm_test.jsonl")
    env = ProntoQAEnv(strict=True)
    assert len(problems) == len(rows) == 3
    for row, p in zip(rows, problems):
        assert p["query"].startswith("True or false: ") and p["query"] in row["question"]
        assert env.initial_state(p).question == row["question"]  # the prompt the policy sees is the row's text
        label = p["answer"] == "True"
        assert independent_label(p["question"], p["query"]) == label  # the label the correct proof concludes
        steps = p["solution"].split("\n")
        assert check_proof(env.initial_state(p).question, steps, label) and env.check(p, p["solution"])
        for wrong in (x["text"] for x in row["answer"] if not x["correct"]):  # a wrong proof fails strictly
            assert not env.check(p, "\n".join(prontoqa.sentences(wrong)))
    assert problems[1]["query"] == "True or false: Max is not bitter." and problems[1]["answer"] == "False"


def test_load_tsllm_published_test_jsonl_layout():
    """The layout of TS-LLM's published test.jsonl (rows composed here): the query is worded 'Is the
    statement "..." true or false?' inside `question`, `i` numbers the row, and the one correct proof
    has one step a line. Each row loads with the label its proof concludes, the prompt is the row's
    own text, the gold proof passes the strict checker and the opposite answer fails. The last row
    is of PrOntoQA's real-world kind: a number as the entity, concepts of two words."""
    path = FIXTURES / "prontoqa_tsllm_published.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    problems = prontoqa.load_jsonl(path)
    env = ProntoQAEnv(strict=True)
    assert len(problems) == len(rows) == 5 and [p["i"] for p in problems] == [r["i"] for r in rows]
    for row, p in zip(rows, problems):
        assert row["question"].endswith(f" {p['query']}") and p["query"].startswith("Is the statement")
        assert env.initial_state(p).question == row["question"]
        statement = p["query"].split('"')[1]
        label = p["answer"] == "True"
        if " number" not in p["question"]:  # the word-splitting reasoner here takes one-word concepts only
            assert independent_label(p["question"], statement) == label
        assert prontoqa.entailed(prontoqa.sentences(p["question"]), statement) == label
        assert p["solution"] == row["answer"][0]["text"]
        assert env.check(p, p["solution"]) and ProntoQAEnv().check(p, p["solution"])
        flipped = p["solution"].rsplit("\n", 1)[0] + f"\nThe answer is {'false' if label else 'true'}."
        assert not env.check(p, flipped) and not ProntoQAEnv().check(p, flipped)
    assert [p["answer"] for p in problems] == ["True", "False", "True", "False", "True"]


@pytest.mark.parametrize("sentence, parsed", [
    ("127 is a natural number.", Fact("127", "natural number", True)),
    ("Every natural number is positive.", Rule("natural number", "positive", True)),
    ("Mersenne primes are not composite numbers.", Rule("mersenne prime", "composite number", False)),
    ("Each prime number is a natural number.", Rule("prime number", "natural number", True)),
    ("Max and Fae are wumpuses.", None),
])
def test_real_world_ontology_sentences_parse(sentence, parsed):
    assert parse_sentence(sentence) == parsed


@pytest.mark.parametrize("query, statement", [
    ('Is the statement "Alex is six-legged" true or false?', "Alex is six-legged."),
    ('is the statement  "Max is not sour." TRUE or false ?', "Max is not sour."),
    ("True or false: Max is a rompus.", "Max is a rompus."),
    ('Is the statement "Alex is six-legged" true?', None),
    ("Alex is six-legged.", None),
])
def test_query_statement_reads_both_wordings(query, statement):
    assert prontoqa.query_statement(query) == statement


@pytest.mark.parametrize("row, message", [
    ({"question": "Every a is a b. Sam is a a.", "answer": [{"text": "The answer is true.", "correct": True}]},
     "no 'True or false: ...' or 'Is the statement \"...\" true or false?' sentence"),
    ({"question": "Sam is a a. True or false: Sam is a a.", "answer": [{"text": "The answer is true.",
                                                                         "correct": False}]},
     "no proof in 'answer' is marked correct"),
    ({"question": "Sam is a a. True or false: Sam is a a.", "answer": [{"text": "Sam is a a.", "correct": True}]},
     "does not end in true or false"),
    ({"question": "Sam is a a. True or false: Sam is a a.", "answer": [
        {"text": "The answer is true.", "correct": True}, {"text": "The answer is false.", "correct": True}]},
     "conclude both true and false"),
    ({"question": "Sam is a a. True or false: Sam is a a.", "answer": [{"text": "The answer is true."}]},
     "a non-empty list of"),
])
def test_tsllm_rows_that_cannot_be_read_name_their_line(row, message, tmp_path):
    good = json.loads((FIXTURES / "prontoqa_tsllm_test.jsonl").read_text().splitlines()[0])
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: .*{re.escape(message)}"):
        prontoqa.load_jsonl(path)
