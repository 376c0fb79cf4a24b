"""PrOntoQA: true/false questions over a fictional ontology, answered by a chain of modus ponens.

A problem is a context of rules ("Every wumpus is a tumpus.", "Each tumpus is not a rompus.")
and one fact ("Alex is a wumpus."), plus a query "True or false: Alex is a rompus.". Its gold
proof alternates facts and rules, one sentence per step, and ends with the answer line:

    Alex is a wumpus.
    Every wumpus is a tumpus.
    Alex is a tumpus.
    Each tumpus is not a rompus.
    Alex is not a rompus.
    The answer is false.

`generate` builds such problems with depth 1-5 (rules applied) and distractor rules, including a
rule of the opposite polarity about the queried concept from a concept Alex is not. Labels are
correct by construction and re-derived by forward chaining (`entailed`) before a problem is kept.
`load_json` reads the published format (examples keyed by id, each holding question, query,
chain_of_thought and answer, optionally nested under "test_example"); `load_jsonl` reads rows of
that shape, or of TS-LLM's released test split: `question` holding the facts, rules and the query
sentence ('Is the statement "Alex is six-legged" true or false?'), `answer` a list of
`{"text": <proof>, "correct": bool}`.

The checker reads the last "answer is true/false" (or a last line that is just true/false).
`check_proof` additionally validates every step: a sentence of the context, or a fact that
follows from an established fact and a context rule.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tsllm.envs.base import DataError, TextEnv, TextState, iter_jsonl

CONCEPTS = [
    "wumpus", "yumpus", "zumpus", "dumpus", "rompus", "numpus", "tumpus", "vumpus", "impus",
    "jompus", "gorpus", "shumpus", "lempus", "sterpus", "grimpus", "lorpus", "brimpus", "felpus",
]
NAMES = ["Alex", "Sally", "Max", "Rex", "Fae", "Polly", "Stella", "Sam", "Wren"]
QUERY_PREFIX = "True or false:"

# Every unbounded repeat is possessive (`*+`, `++`): it never gives characters back, so a match
# attempt reads each character once. Greedy `\s*:?\s*` split a run of n spaces n^2 ways before
# failing. The repeats stop where the next element cannot match anyway, so results are unchanged.
# A concept is one to three words ("wumpus", "six-legged", "natural number", "Mersenne prime"): PrOntoQA's
# real-world ontologies have multi-word ones, and numbers as entities ("127 is a natural number.").
_CONCEPT = r"[\w-]++(?:\s++(?!and\b)[\w-]++){0,2}"  # "Max and Fae are ..." names two entities: no rule
_RULE_RE = re.compile(rf"^(?:every|each)\s++({_CONCEPT})\s++is\s++(not\s++)?(?:(?:a|an)\s++)?({_CONCEPT})\s*+\.?$",
                      re.I)
# PrOntoQA also states rules in the plural ("Wumpuses are tumpuses.", "Jompuses are not shy.")
_PLURAL_RULE_RE = re.compile(rf"^([A-Za-z][\w-]*+(?:\s++(?!and\b)[\w-]++){{0,2}})\s++are\s++(not\s++)?"
                             rf"({_CONCEPT})\s*+\.?$")
_FACT_RE = re.compile(rf"^([A-Z0-9][\w-]*+)\s++is\s++(not\s++)?(?:(?:a|an)\s++)?({_CONCEPT})\s*+\.?$")
# TS-LLM's released split words the query 'Is the statement "Alex is six-legged" true or false?'.
_STATEMENT_QUERY_RE = re.compile(r'^is\s++the\s++statement\s*+"([^"]{1,200})"\s*+true\s++or\s++false\s*+\?$', re.I)
_ANSWER_RE = re.compile(r"answer\s++is\s*+:?\s*+(true|false)\b", re.I)
_FINAL_STEP_RE = re.compile(r"answer\s++is", re.I)
_SENTENCE_END_RE = re.compile(r"(?<=[.?!])\s++")


class Rule(NamedTuple):
    subject: str
    concept: str
    positive: bool


class Fact(NamedTuple):
    entity: str
    concept: str
    positive: bool


def singular(word: str) -> str:
    """The singular of a concept named in the plural ("wumpuses" -> "wumpus", "butterflies" ->
    "butterfly", "cats" -> "cat"); adjectives ("shy", "nervous") come back unchanged."""
    w = word.lower()
    if w.endswith("uses"):
        return w[:-2]
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith("s") and not w.endswith(("ss", "us")):
        return w[:-1]
    return w


def parse_sentence(sentence: str) -> Rule | Fact | None:
    """A rule ("Every/Each X is (not) (a) Y.", "Xs are (not) Ys.") or a fact ("Max is (not) (a) Y.")
    of the restricted grammar, or None. Plural concepts are stored in the singular, so a plural
    rule applies to the facts that name its subject."""
    s = sentence.strip()
    if len(s) > 200:
        return None
    if m := _RULE_RE.match(s):
        return Rule(_phrase(m[1]), _phrase(m[3]), m[2] is None)
    if m := _PLURAL_RULE_RE.match(s):
        return Rule(_phrase(m[1], plural=True), _phrase(m[3], plural=True), m[2] is None)
    if m := _FACT_RE.match(s):
        return Fact(m[1], _phrase(m[3]), m[2] is None)
    return None


def _phrase(text: str, plural: bool = False) -> str:
    """A concept as rules and facts store it: lower case, single spaces, the last word in the
    singular when the sentence names it in the plural ("Prime numbers" -> "prime number")."""
    words = text.lower().split()
    if plural:
        words[-1] = singular(words[-1])
    return " ".join(words)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END_RE.split(text.strip()) if s.strip()]


def query_statement(sentence: str) -> str | None:
    """The statement a query sentence asks about, in either wording: "True or false: Max is a
    rompus." (PrOntoQA's `query` field) or 'Is the statement "Max is a rompus" true or false?'
    (how TS-LLM's released files state it inside the question); None for any other sentence."""
    if sentence.lower().startswith(QUERY_PREFIX.lower()):
        return sentence[len(QUERY_PREFIX):].strip()
    if m := _STATEMENT_QUERY_RE.match(sentence):
        return m[1].strip().rstrip(".") + "."
    return None


def split_query(text: str) -> tuple[list[str], str | None]:
    """(context sentences, the query sentence as written) of a question text."""
    context, query = [], None
    for s in sentences(text):
        if query_statement(s) is not None:
            query = s
        else:
            context.append(s)
    return context, query


def split_question(text: str) -> tuple[list[str], str | None]:
    """(context sentences, the statement the query asks about) of a question text."""
    context, query = split_query(text)
    return context, None if query is None else query_statement(query)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def rule_text(rule: Rule) -> str:
    if rule.positive:
        return f"Every {rule.subject} is {_article(rule.concept)} {rule.concept}."
    return f"Each {rule.subject} is not {_article(rule.concept)} {rule.concept}."


def fact_text(fact: Fact) -> str:
    neg = "" if fact.positive else "not "
    return f"{fact.entity} is {neg}{_article(fact.concept)} {fact.concept}."


def entailed(context: list[str], query: str) -> bool | None:
    """Forward chaining: True if the query fact follows, False if its negation does, None if
    neither (or the query does not parse). Only positive memberships trigger rules."""
    q = parse_sentence(query)
    if not isinstance(q, Fact):
        return None
    parsed = [parse_sentence(s) for s in context]
    rules = [p for p in parsed if isinstance(p, Rule)]
    known = {(f.entity, f.concept): f.positive for f in parsed if isinstance(f, Fact)}
    changed = True
    while changed:
        changed = False
        for (entity, concept), positive in list(known.items()):
            if not positive:
                continue
            for r in rules:
                if r.subject == concept and (entity, r.concept) not in known:
                    known[(entity, r.concept)] = r.positive
                    changed = True
    if (q.entity, q.concept) not in known:
        return None
    return known[(q.entity, q.concept)] == q.positive


# --- answers and proofs ----------------------------------------------------------------------
def extract_answer(text: str) -> bool | None:
    """True/False from the last "answer is true/false", else from a last line that is just
    "true"/"false" (punctuation ignored), else None."""
    if not isinstance(text, str):
        return None
    matches = _ANSWER_RE.findall(text[-10_000:])
    if matches:
        return matches[-1].lower() == "true"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    last = lines[-1].strip(" .!").lower() if lines else ""
    return {"true": True, "false": False}.get(last)


def parse_label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    label = {"true": True, "false": False}.get(str(value).strip().lower())
    if label is None:
        raise ValueError(f"answer must be True or False, got {value!r}")
    return label


def check_proof(question: str, steps: list[str], label: bool) -> bool:
    """Every step is a context sentence or follows by one rule from an established fact; the
    last step is the answer line, and the query concept was established with the polarity
    that makes that answer (which must equal `label`)."""
    context, query = split_question(question)
    q = parse_sentence(query or "")
    if not steps or not isinstance(q, Fact) or extract_answer(steps[-1]) is None:
        return False
    parsed_context = {parse_sentence(s) for s in context} - {None}
    rules = {p for p in parsed_context if isinstance(p, Rule)}
    known = {(f.entity, f.concept): f.positive for f in parsed_context if isinstance(f, Fact)}
    established: dict[tuple[str, str], bool] = {}
    for step in steps[:-1]:
        p = parse_sentence(step)
        if isinstance(p, Rule) and p in rules:
            continue
        if not isinstance(p, Fact):
            return False
        in_context = known.get((p.entity, p.concept)) == p.positive
        follows = any(
            r.concept == p.concept and r.positive == p.positive
            and (established.get((p.entity, r.subject)) or known.get((p.entity, r.subject)))
            for r in rules
        )
        if not (in_context or follows):
            return False
        established[(p.entity, p.concept)] = p.positive
    if (q.entity, q.concept) not in established:
        return False
    answer = established[(q.entity, q.concept)] == q.positive
    return answer == label == extract_answer(steps[-1])


# --- generation ------------------------------------------------------------------------------
def generate_one(rng: random.Random, depth: int, distractors: int = 3) -> dict[str, Any]:
    """One problem: a chain of `depth` rules from the fact's concept to the queried concept,
    plus `distractors` rules that do not change the answer."""
    if not 1 <= depth <= 5:
        raise ValueError(f"depth must be in 1..5, got {depth}")
    names = rng.sample(CONCEPTS, depth + 1 + max(distractors, 1))
    chain, target, spare = names[:depth], names[depth], names[depth + 1 :]
    entity = rng.choice(NAMES)
    final_positive = rng.random() < 0.5
    query_positive = rng.random() < 0.5
    rules = [Rule(a, b, True) for a, b in zip(chain, chain[1:])]
    rules.append(Rule(chain[-1], target, final_positive))
    proof = [fact_text(Fact(entity, chain[0], True))]
    for rule in rules:
        proof += [rule_text(rule), fact_text(Fact(entity, rule.concept, rule.positive))]
    extra: list[Rule] = []
    if distractors:
        # The tempting wrong rule: the target with the opposite polarity, from a concept Alex is not.
        extra.append(Rule(spare[0], target, not final_positive))
    for d in spare[1:distractors]:
        if rng.random() < 0.5:
            extra.append(Rule(rng.choice(chain), d, rng.random() < 0.5))  # a dead end off the chain
        else:
            extra.append(Rule(d, rng.choice(chain + [target]), rng.random() < 0.5))  # unreachable
    context = [rule_text(r) for r in rules + extra] + [fact_text(Fact(entity, chain[0], True))]
    rng.shuffle(context)
    query = fact_text(Fact(entity, target, query_positive))
    label = final_positive == query_positive
    assert entailed(context, query) == label, "generator bug: label disagrees with the context"
    proof.append(f"The answer is {'true' if label else 'false'}.")
    return {
        "question": " ".join(context),
        "query": f"{QUERY_PREFIX} {query}",
        "chain_of_thought": proof[:-1],
        "answer": "True" if label else "False",
        "solution": "\n".join(proof),
        "depth": depth,
    }


def generate(n: int, seed: int = 0, min_depth: int = 1, max_depth: int = 5,
             distractors: int = 3) -> list[dict[str, Any]]:
    """`n` seeded problems with depths drawn uniformly from min_depth..max_depth."""
    rng = random.Random(seed)
    problems = []
    for i in range(n):
        problem = generate_one(rng, rng.randint(min_depth, max_depth), distractors)
        problems.append({"id": f"gen{seed}_{i}", **problem})
    return problems


# --- loading ---------------------------------------------------------------------------------
def _tsllm_problem(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A row of TS-LLM's released test jsonl (`tsllm/envs/prontoqa/train_data/test.jsonl` there):
    `question` holds the facts, the rules and the query sentence ('... Is the statement "Max is
    not bitter" true or false?', or "... True or false: Max is not bitter."), `i` its index, and
    `answer` a list of proofs `{"text": <one step a line>, "correct": bool}`. The query sentence is
    kept as written, so the prompt is the row's own text. The label is what the correct proofs conclude (an incorrect
    proof may be wrong in a step, not in its conclusion, so it says nothing about the label); the
    first correct proof is kept as the solution."""
    if not isinstance(row["question"], str):
        raise DataError(f"{where}: 'question' must be a string")
    context, query = split_query(row["question"])
    if not query:
        raise DataError(f"{where}: the question has no '{QUERY_PREFIX} ...' or 'Is the statement \"...\" true "
                        "or false?' sentence and the row no 'query' field")
    proofs = row["answer"]
    if not (proofs and all(isinstance(p, Mapping) and isinstance(p.get("text"), str)
                           and isinstance(p.get("correct"), bool) for p in proofs)):
        raise DataError(f"{where}: 'answer' must be True/False or a non-empty list of "
                        '{"text": <proof>, "correct": true/false} objects')
    correct = [p["text"] for p in proofs if p["correct"]]
    if not correct:
        raise DataError(f"{where}: no proof in 'answer' is marked correct, so the label is unknown")
    labels = {extract_answer(text) for text in correct}
    if None in labels:
        raise DataError(f"{where}: a correct proof does not end in true or false ('The answer is true.')")
    if len(labels) > 1:
        raise DataError(f"{where}: the correct proofs in 'answer' conclude both true and false")
    problem = {k: v for k, v in row.items() if k not in ("question", "answer")}
    problem.update(question=" ".join(context), query=query, answer="True" if labels.pop() else "False")
    problem.setdefault("solution", "\n".join(sentences(correct[0])))  # one sentence a step, as the env takes
    return problem


def _problem(example: Mapping[str, Any], where: str, key: str | None = None) -> dict[str, Any]:
    if "test_example" in example:
        example = example["test_example"]
    if "query" not in example and isinstance(example.get("answer"), list) and "question" in example:
        return _tsllm_problem(example, where)
    missing = [k for k in ("question", "query", "answer") if k not in example]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}")
    try:
        label = parse_label(example["answer"])
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None
    problem = dict(example)
    problem["answer"] = "True" if label else "False"
    chain = problem.get("chain_of_thought")
    if chain is not None:
        if not (isinstance(chain, list) and all(isinstance(s, str) for s in chain)):
            raise DataError(f"{where}: chain_of_thought must be a list of strings")
        problem.setdefault("solution", "\n".join(chain + [f"The answer is {problem['answer'].lower()}."]))
    if key is not None:
        problem.setdefault("id", key)
    return problem


def _key_position(text: str, key: str, start: int) -> int:
    """Where the object key `key` ("key" then a colon) first occurs in JSON `text` from `start`, or -1."""
    quoted = json.dumps(key, ensure_ascii=False)
    found = text.find(quoted, start)
    while found >= 0 and not text[found + len(quoted):found + len(quoted) + 64].lstrip().startswith(":"):
        found = text.find(quoted, found + 1)
    return found


def load_json(path: str | Path) -> list[dict[str, Any]]:
    """Problems from the published PrOntoQA json (a dict of id -> example). An error in an example
    names the line of its id (the id's first occurrence as a key after the previous id: json keeps
    no positions)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}:1: expected an object keyed by example id")
    out, pos = [], 0
    for key, example in data.items():
        found = _key_position(text, key, pos)
        pos = max(found, pos)
        where = f"{path}:{text.count(chr(10), 0, found) + 1}: example {key!r}" if found >= 0 else \
            f"{path}: example {key!r}"
        if not isinstance(example, dict):
            raise DataError(f"{where} is not an object")
        out.append(_problem(example, where, key))
    return out


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Problems from jsonl rows in the same shape (e.g. saved `generate` output), or in the layout
    of TS-LLM's released test split (the query inside `question`, proofs in `answer`)."""
    return [_problem(row, f"{path}:{lineno}") for lineno, row in iter_jsonl(path)]


# --- the environment -------------------------------------------------------------------------
class ProntoQAEnv(TextEnv):
    """PrOntoQA as an MDP over sentences (one per line). Terminal at an "answer is" line or
    the depth cap (default 16: a depth-5 proof takes 12 lines). Reward +1 iff the final
    true/false matches the label; `strict=True` also requires `check_proof`."""

    template = "{question}\n"

    def __init__(self, max_steps: int = 16, template: str | None = None, strict: bool = False):
        super().__init__(max_steps=max_steps, template=template)
        self.strict = strict

    def question_text(self, problem: Any) -> str:
        if isinstance(problem, Mapping):
            return f"{problem['question']} {problem['query']}".strip()
        return str(problem)

    def gold_of(self, problem: Any) -> Hashable:
        if isinstance(problem, Mapping) and "answer" in problem:
            return parse_label(problem["answer"])
        return None

    def is_final_step(self, step: str) -> bool:
        return _FINAL_STEP_RE.search(step) is not None

    def extract_answer(self, text: str) -> bool | None:
        return extract_answer(text)

    def check(self, problem: Any, text: str) -> bool:
        label = parse_label(problem["answer"])
        if self.strict:
            steps = [line.strip() for line in text.split("\n") if line.strip()]
            return check_proof(self.question_text(problem), steps, label)
        return extract_answer(text) == label

    def problem_of(self, state: TextState) -> dict[str, Any]:
        return {"question": state.question, "query": "", "answer": state.gold}
