r"""GSM8k: grade-school math word problems with a numeric final answer.

Steps are lines of the solution; a state is terminal at a line holding "The answer is", "####"
or "\boxed{", or at the depth cap. Answers are compared as exact numbers (`Fraction`), after removing
"$", thousands commas and a trailing "%", so "1,234" == 1234 and "3.50" == 3.5.

Answer extraction from model text, first rule that matches wins:
  1. the last `\boxed{...}` (MATH-style: "\boxed{1,234}", "\boxed{\$18}", "\boxed{\frac{3}{4}}",
     "\boxed{45\%}"); a box holding anything but a number is a wrong answer (None);
  2. the number after the last "####";
  3. the number after the last "answer is" ("The answer is $1,234.50.", "the final answer is: 7");
  4. the last number in the text.
Numbers longer than 30 digits are refused (None), so hostile text cannot build huge values.
Canonical answers are decimals ("0.75"), or "p/q" for a fraction with no finite decimal ("1/3").

`load_gsm8k` reads the HF dataset (hub name, needs network) or a local jsonl with question and
answer fields; `datasets` is imported inside it only. `synthetic` generates small seeded
multi-step word problems with GSM8k-style solutions so everything runs offline.
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from tsllm.envs.base import DataError, TextEnv, iter_jsonl, load_hub_dataset

MAX_NUMBER_DIGITS = 30
# Every unbounded repeat is possessive (`*+`, `++`): it never gives characters back, so a match
# attempt reads each character once. Greedy `\s*:?\s*` split a run of n spaces n^2 ways before
# failing. The repeats stop where the next element cannot match anyway, so results are unchanged.
# A sign counts only when not glued to a preceding word/number ("20-12" is 20 and 12).
_NUMBER = r"(?:(?<![\w.)])[-+])?\$?(?:\d{1,3}(?:,\d{3})++|\d++)(?:\.\d++)?%?"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)  # ASCII digits only
_HASH_RE = re.compile(r"####\s*+(" + _NUMBER + ")", re.ASCII)
_ANSWER_IS_RE = re.compile(r"answer\s++is\s*+:?\s*+(" + _NUMBER + ")", re.IGNORECASE | re.ASCII)
_FINAL_STEP_RE = re.compile(r"answer\s++is|####|\\boxed\s*+\{", re.IGNORECASE)
_BOXED = "\\boxed"
MAX_BOXED_CHARS = 200  # a box longer than this is no number anyway
# inside a box: LaTeX spacing, dollar and percent signs, units in \text{...}, "{,}" thousands commas
_BOX_NOISE_RE = re.compile(r"\\(?:text|mathrm|mbox)\s*+\{[^{}]*+\}|\\[!,;: ]|\\?[$%]|\^\s*+\{?\\circ\}?|~|\{,\}")
_FRAC_RE = re.compile(r"([-+]?)\\[dt]?frac\s*+\{([^{}]++)\}\s*+\{([^{}]++)\}")
_RATIO_RE = re.compile(r"([-+]?[0-9]++(?:\.[0-9]++)?)/([0-9]++(?:\.[0-9]++)?)")
_CALCULATOR_RE = re.compile(r"<<[^<>]*+>>")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?[0-9]++(?:\.[0-9]++)?")


def parse_number(text: str) -> Fraction | None:
    """Exact value of a number like "-$1,234.50", "3.5", "+7", "45%", or a ratio "1/3" (the
    canonical form of a fraction without a finite decimal); None if not one."""
    if not isinstance(text, str) or len(text) > 4 * MAX_NUMBER_DIGITS:
        return None
    s = text.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip("%")
    if sum(c.isdigit() for c in s) > MAX_NUMBER_DIGITS:
        return None
    if m := _RATIO_RE.fullmatch(s):
        denominator = Fraction(m[2])
        return Fraction(m[1]) / denominator if denominator else None
    if not _PLAIN_NUMBER_RE.fullmatch(s):
        return None
    return Fraction(s)  # Fraction parses decimal strings exactly


def _finite_decimal(x: Fraction) -> bool:
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def format_number(x: Fraction) -> str:
    """Canonical text of a number: "1234", "3.5", "-0.25" (answers vote on this); "p/q" ("1/3")
    for a fraction whose decimal never ends."""
    if x.denominator == 1:
        return str(x.numerator)
    if not _finite_decimal(x):
        return f"{x.numerator}/{x.denominator}"
    places = 0
    while (x * 10**places).denominator != 1:  # terminates: the denominator has only 2s and 5s
        places += 1
    digits = str(abs((x * 10**places).numerator)).rjust(places + 1, "0")
    return ("-" if x < 0 else "") + digits[:-places] + "." + digits[-places:]


def normalize_number(text: str) -> str | None:
    """`parse_number` then `format_number`: "$1,234.50" -> "1234.5"."""
    value = parse_number(text)
    return None if value is None else format_number(value)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced), or None when there is none or
    it is not closed within MAX_BOXED_CHARS characters."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    rest = text[start + len(_BOXED):start + len(_BOXED) + MAX_BOXED_CHARS + 2].lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:i]
    return None


def boxed_number(content: str) -> Fraction | None:
    """The number in a box's content ("1,234", "\\$18", "45\\%", "\\frac{3}{4}", "-\\dfrac{1}{3}",
    "2/3", "18 \\text{dollars}"), or None for anything else."""
    s = _BOX_NOISE_RE.sub("", content).strip().rstrip(".")
    if m := _FRAC_RE.fullmatch(s):
        numerator, denominator = parse_number(m[2]), parse_number(m[3])
        if numerator is None or not denominator:
            return None
        return (-1 if m[1] == "-" else 1) * numerator / denominator
    return parse_number(s)


def extract_answer(text: str) -> str | None:
    """The final numeric answer of a model's text (rules in the module docstring) in canonical
    form ("1234", "3.5", "1/3"), or None."""
    if not isinstance(text, str):
        return None
    if _BOXED in text:
        content = last_boxed(text)
        value = None if content is None else boxed_number(content)
        return None if value is None else format_number(value)
    for pattern in (_HASH_RE, _ANSWER_IS_RE):
        matches = pattern.findall(text)
        if matches:
            return normalize_number(matches[-1])
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def gold_answer(solution: str) -> str:
    """The gold answer of a GSM8k solution: the text after "####", commas removed."""
    if "####" not in solution:
        raise ValueError(f"no '####' in solution: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def answers_equal(predicted: Any, gold: Any) -> bool:
    """Numeric equality of two answers given as numbers or number strings."""
    p = predicted if isinstance(predicted, Fraction) else parse_number(str(predicted))
    g = gold if isinstance(gold, Fraction) else parse_number(str(gold))  # str(): ints welcome
    return p is not None and g is not None and p == g


def solution_steps(solution: str, strip_calculator: bool = True) -> list[str]:
    """The lines of a gold solution as env steps; `<<48/2=24>>` calculator notes removed."""
    if strip_calculator:
        solution = _CALCULATOR_RE.sub("", solution)
    return [line.strip() for line in solution.split("\n") if line.strip()]


# --- loading ---------------------------------------------------------------------------------
def _problem(question: str, solution: str, where: str) -> dict[str, Any]:
    if not isinstance(question, str) or not isinstance(solution, str):
        raise DataError(f"{where}: 'question' and 'answer' must be strings")
    try:
        gold = gold_answer(solution)
    except ValueError:
        raise DataError(f"{where}: the answer has no '#### <number>' line") from None
    if parse_number(gold) is None:
        raise DataError(f"{where}: the gold answer {gold!r} is not a number")
    return {"question": question, "answer": gold, "solution": solution}


def load_gsm8k(source: str = "openai/gsm8k", split: str = "test", *, config: str = "main",
               cache_dir: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """GSM8k problems as dicts {question, answer (gold number string), solution}.

    `source` is a local JSON-lines file (.jsonl or .json, one object per line with `question`
    and `answer`, read with `datasets.load_dataset("json", ...)`), or a hub dataset name (needs
    network; when it cannot be reached, one DataError line says so). Bad local rows are reported
    as "<file>:<line>: ..."."""
    import datasets  # lazy: heavy, and only loaders need it

    path = Path(source)
    if path.suffix in (".json", ".jsonl") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"GSM8k file not found: {path}")
        # Validate every row with our own reader first: datasets' JSON errors do not name the line,
        # and a bad row then stops before datasets starts (and prints its progress)
        lines = []
        for lineno, row in iter_jsonl(path, required=("question", "answer")):
            _problem(row["question"], row["answer"], f"{path}:{lineno}")
            lines.append(lineno)
        data = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
        if len(data) != len(lines):
            raise DataError(f"{path}: datasets read {len(data)} rows, expected {len(lines)}")
        wheres = [f"{path}:{lineno}" for lineno in lines]
    else:
        data = load_hub_dataset(source, config, split=split, cache_dir=cache_dir)
        wheres = [f"{source}[{split}] row {i}" for i in range(len(data))]
    problems = []
    for row, where in zip(data, wheres):
        if limit is not None and len(problems) >= limit:
            break
        problems.append(_problem(row["question"], row["answer"], where))
    return problems


# --- synthetic problems ----------------------------------------------------------------------
_NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonah"]
_ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards"]


def _op_choices(x: int) -> list[str]:
    ops = ["add", "mul"] if x <= 200 else ["add"]
    if x > 2:
        ops.append("sub")
    if any(x % k == 0 for k in range(2, 7)):
        ops.append("div")
    return ops


def _apply_op(op: str, x: int, name: str, item: str, rng: random.Random) -> tuple[int, str, str]:
    """(new value, question sentence, solution line) for one operation on x."""
    if op == "add":
        b = rng.randint(2, 30)
        y = x + b
        return (y, f"Then {name} buys {b} more {item}.",
                f"After buying more, {name} has {x} + {b} = <<{x}+{b}={y}>>{y} {item}.")
    if op == "sub":
        c = rng.randint(2, x - 1)  # x > 2 here; 2+ keeps the plural right
        y = x - c
        return (y, f"{name} gives {c} {item} to a friend.",
                f"After giving some away, {name} has {x} - {c} = <<{x}-{c}={y}>>{y} {item}.")
    if op == "mul":
        k = rng.randint(2, 4)
        word = {2: "doubles", 3: "triples", 4: "quadruples"}[k]
        y = x * k
        return (y, f"Then {name} {word} the number of {item}.",
                f"{name} now has {x} * {k} = <<{x}*{k}={y}>>{y} {item}.")
    k = rng.choice([d for d in range(2, 7) if x % d == 0])
    y = x // k
    return (y, f"{name} splits the {item} equally into {k} bags and keeps one bag.",
            f"One bag holds {x} / {k} = <<{x}/{k}={y}>>{y} {item}.")


def synthetic(n: int, seed: int = 0, min_steps: int = 2, max_steps: int = 4) -> list[dict[str, Any]]:
    """`n` seeded multi-step word problems (min_steps..max_steps operations, integer answers)
    with step-by-step solutions in GSM8k format (calculator notes, final "#### N")."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        x = rng.randint(3, 40)
        sentences = [f"{name} has {x} {item}."]
        lines = []
        for _ in range(rng.randint(min_steps, max_steps)):
            x, sentence, line = _apply_op(rng.choice(_op_choices(x)), x, name, item, rng)
            sentences.append(sentence)
            lines.append(line)
        sentences.append(f"How many {item} does {name} have now?")
        lines.append(f"#### {x}")
        problems.append({"question": " ".join(sentences), "answer": str(x), "solution": "\n".join(lines)})
    return problems


# --- the environment -------------------------------------------------------------------------
class GSM8kEnv(TextEnv):
    """GSM8k as an MDP over lines; reward +1 iff the extracted answer equals the gold number."""

    template = "Question: {question}\nAnswer:\n"

    def __init__(self, max_steps: int = 10, template: str | None = None):
        super().__init__(max_steps=max_steps, template=template)

    def gold_of(self, problem: Any) -> Hashable:
        return str(problem["answer"]) if isinstance(problem, Mapping) and "answer" in problem else None

    def is_final_step(self, step: str) -> bool:
        return _FINAL_STEP_RE.search(step) is not None

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)

    def check(self, problem: Any, text: str) -> bool:
        return answers_equal(extract_answer(text), problem["answer"])
