"""Game of 24: combine four numbers with + - * / (each used once) to make exactly 24.

Trace format (one step per line; the policy is trained on these):

    13 - 9 = 4 (left: 4 4 10)
    10 - 4 = 6 (left: 4 6)
    6 * 4 = 24 (left: 24)
    Answer: (13-9)*(10-4) = 24

A step line is `a op b = c (left: ...)`: operands and result are integers or reduced fractions
written `p/q` (a leading `-` for negatives), separated by single spaces, so `8 / 1/3 = 24` is
unambiguous; `left` lists the remaining numbers in ascending order (the checker accepts any
order). The last line is `Answer: <expression> = 24` over the original numbers.

Answer checker (`check_answer`): a hand-written tokenizer and recursive-descent parser over
ASCII digits, + - * / ( ) and spaces, with exact `Fraction` arithmetic. No unary minus, no
leading zeros, literals of at most 4 digits, input at most 200 characters, parentheses nested at
most 16 deep. Anything else (names, `**`, unicode digits, division by zero, unbalanced
parentheses) is simply a wrong answer: the checker never raises and never evaluates model text.

The solver is exact (Fractions). Ties: it tries pairs in ascending value order and operations
in the order + * - /, and prefers traces with non-negative integer intermediates, then
non-negative fractions, then anything; the first trace found in that order is returned.
"""

from __future__ import annotations

import csv
import itertools
import random
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from tsllm.envs.base import DataError, TextEnv, TextState, iter_jsonl

TARGET = 24
NUM_SOLVABLE = 1362  # solvable multisets of four numbers from 1..13
MAX_EXPR_CHARS = 200
MAX_PAREN_DEPTH = 16
MAX_LITERAL_DIGITS = 4
_DIGITS = "0123456789"  # ASCII only: str.isdigit() would accept unicode digits


# --- the answer checker ----------------------------------------------------------------------
class _Reject(Exception):
    """Internal: the expression is not acceptable."""


def _tokenize(text: str) -> list[str]:
    tokens, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j - i > MAX_LITERAL_DIGITS or (text[i] == "0" and j - i > 1):
                raise _Reject
            tokens.append(text[i:j])
            i = j
        elif c in "+-*/()=":
            tokens.append(c)
            i += 1
        else:
            raise _Reject
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := NUMBER | '(' expr ')'."""

    def __init__(self, tokens: list[str], max_literals: int):
        self.tokens = tokens
        self.pos = 0
        self.literals: list[int] = []
        self.max_literals = max_literals

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            right = self.term(depth)
            value = value + right if op == "+" else value - right
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            right = self.factor(depth)
            if op == "*":
                value = value * right
            elif right == 0:
                raise _Reject
            else:
                value = value / right
        return value

    def factor(self, depth: int) -> Fraction:
        tok = self.peek()
        if tok == "(":
            if depth >= MAX_PAREN_DEPTH:
                raise _Reject
            self.pos += 1
            value = self.expr(depth + 1)
            if self.peek() != ")":
                raise _Reject
            self.pos += 1
            return value
        if tok is not None and tok[0] in _DIGITS:
            self.pos += 1
            self.literals.append(int(tok))
            if len(self.literals) > self.max_literals:
                raise _Reject
            return Fraction(int(tok))
        raise _Reject


def evaluate_expression(numbers: Sequence[int], text: str) -> Fraction | None:
    """The exact value of `text` if it is a well-formed expression using each of `numbers`
    exactly once (an optional trailing `= 24` is allowed), else None. Never raises on text."""
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        return None
    try:
        tokens = _tokenize(text)
        if "=" in tokens:
            if tokens.count("=") != 1 or tokens[-2:] != ["=", str(TARGET)]:
                return None
            tokens = tokens[:-2]
        parser = _Parser(tokens, max_literals=len(numbers))
        value = parser.expr(0)
        if parser.pos != len(tokens):
            return None
    except (_Reject, RecursionError):
        return None
    if sorted(parser.literals) != sorted(int(n) for n in numbers):
        return None
    return value


def check_answer(numbers: Sequence[int], text: str) -> bool:
    """True iff `text` is an expression (optionally followed by `= 24`) over + - * / and
    parentheses using each of `numbers` exactly once whose exact value is 24."""
    return evaluate_expression(numbers, text) == TARGET


# --- the step checker ------------------------------------------------------------------------
_NUM = r"-?\d{1,6}(?:/\d{1,6})?"
# Unbounded repeats are possessive so a match never backtracks into them (linear in the line);
# each stops where the next element cannot match anyway, so results are unchanged.
_STEP_RE = re.compile(
    rf"^({_NUM}) ([-+*/]) ({_NUM}) = ({_NUM}) \(left: ({_NUM}(?: {_NUM})*+)\)$",
    re.ASCII,  # \d must not match other scripts' digits
)
_ANSWER_RE = re.compile(r"^answer\s*+:\s*+(.*+)$", re.IGNORECASE)


def format_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _parse_number(text: str) -> Fraction:
    num, _, den = text.partition("/")
    if den and int(den) == 0:
        raise _Reject
    return Fraction(int(num), int(den)) if den else Fraction(int(num))


def apply_op(a: Fraction, op: str, b: Fraction) -> Fraction:
    """`a op b` exactly; ZeroDivisionError for a division by zero."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b


def check_step(left: Sequence[Fraction | int], line: str) -> list[Fraction] | None:
    """Validate one step line against the numbers currently left. Returns the numbers left
    after it (as the line states them, checked) or None when the line is malformed, uses a
    number not available, states a wrong result, or lists the wrong remainder."""
    if not isinstance(line, str) or len(line) > MAX_EXPR_CHARS:
        return None
    match = _STEP_RE.match(line.strip())
    if match is None:
        return None
    try:
        a, op, b, c = _parse_number(match[1]), match[2], _parse_number(match[3]), _parse_number(match[4])
        stated_left = [_parse_number(t) for t in match[5].split(" ")]
        if apply_op(a, op, b) != c:
            return None
    except (_Reject, ZeroDivisionError):
        return None
    pool = Counter(Fraction(x) for x in left)
    for operand in (a, b):
        if pool[operand] == 0:
            return None
        pool[operand] -= 1
    pool[c] += 1
    if +pool != Counter(stated_left):
        return None
    return sorted(stated_left)


def extract_expression(text: str) -> str | None:
    """The expression on the last `Answer:` line, without a trailing `= 24`, or None."""
    if not isinstance(text, str):
        return None
    for line in reversed(text.split("\n")):
        match = _ANSWER_RE.match(line.strip())
        if match:
            expr = match[1].strip()
            if "=" in expr:
                head, _, tail = expr.rpartition("=")
                if tail.strip() == str(TARGET):
                    expr = head.strip()
            return expr
    return None


def check_trace(numbers: Sequence[int], text: str) -> bool:
    """Strict check of a whole trace: every line before the answer is a valid step, the steps
    end with only 24 left, and the final `Answer:` line checks."""
    if not isinstance(text, str):
        return False
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) != len(numbers) or not _ANSWER_RE.match(lines[-1]):
        return False
    left: list[Fraction] | None = [Fraction(n) for n in numbers]
    for line in lines[:-1]:
        left = check_step(left, line)
        if left is None:
            return False
    expr = extract_expression(lines[-1])
    return left == [TARGET] and expr is not None and check_answer(numbers, expr)


# --- the solver ------------------------------------------------------------------------------
_ALLOW = ("natural", "nonneg", "any")  # intermediate values allowed, tried in this order


def _allowed(x: Fraction, allow: str) -> bool:
    if allow == "any":
        return True
    return x >= 0 and (allow == "nonneg" or x.denominator == 1)


def _moves(a: Fraction, b: Fraction) -> list[tuple[bool, str]]:
    """(swap, op) for one pair a <= b: the step is `b op a` when swap, else `a op b`.
    Commutative ops are written larger operand first."""
    moves = [(True, "+"), (True, "*"), (True, "-"), (False, "-")]
    if a != 0:
        moves.append((True, "/"))
    if b != 0:
        moves.append((False, "/"))
    return moves


@cache
def _reaches(values: tuple[Fraction, ...], allow: str) -> bool:
    """Can the sorted multiset `values` be combined into 24 with intermediates in `allow`?"""
    if len(values) == 1:
        return values[0] == TARGET
    for i, j in itertools.combinations(range(len(values)), 2):
        rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
        for swap, op in _moves(values[i], values[j]):
            x, y = (values[j], values[i]) if swap else (values[i], values[j])
            r = apply_op(x, op, y)
            if _allowed(r, allow) and _reaches(tuple(sorted(rest + (r,))), allow):
                return True
    return False


def _results(x: Fraction, y: Fraction) -> set[Fraction]:
    out = {x + y, x - y, y - x, x * y}
    if y:
        out.add(x / y)
    if x:
        out.add(y / x)
    return out


@cache
def _reachable(values: tuple[Fraction, ...]) -> frozenset[Fraction]:
    """Every value one expression over the sorted multiset `values` can take (small sets only)."""
    if len(values) == 1:
        return frozenset(values)
    out: set[Fraction] = set()
    for left, right in _splits(values):
        for x in _reachable(left):
            for y in _reachable(right):
                out |= _results(x, y)
    return frozenset(out)


def _splits(values: tuple[Fraction, ...]) -> list[tuple[tuple[Fraction, ...], tuple[Fraction, ...]]]:
    """Unordered splits of a multiset into two non-empty parts (duplicates harmless)."""
    n = len(values)
    splits = []
    for mask in range(1, 2 ** (n - 1)):  # element n-1 always on the right: each split once
        left = tuple(v for i, v in enumerate(values) if mask >> i & 1)
        right = tuple(v for i, v in enumerate(values) if not mask >> i & 1)
        splits.append((left, right))
    return splits


def _needed(a: Fraction, target: Fraction) -> set[Fraction]:
    """The values y with (a op y) or (y op a) == target for some op (no division by zero)."""
    out = {target - a, a - target, target + a}
    if a:  # a*y, y/a, and a/y (which needs y = a/target to be non-zero, so a != 0 too)
        out |= {target / a, target * a}
        if target:
            out.add(a / target)
    return out


def can_reach_24(values: Sequence[Fraction]) -> bool:
    """Whether these numbers (any intermediates allowed) can still be combined into 24."""
    return _reaches(tuple(sorted(Fraction(v) for v in values)), "any")


def is_solvable(numbers: Sequence[int]) -> bool:
    """Exact: 24 is the last operation applied to the two halves of some split, so look the
    needed value up in the reachable set of one half instead of enumerating both."""
    values = tuple(sorted(Fraction(n) for n in numbers))
    if len(values) == 1:
        return values[0] == TARGET
    target = Fraction(TARGET)
    for left, right in _splits(values):
        small, big = sorted((_reachable(left), _reachable(right)), key=len)  # loop the small one
        if any(not big.isdisjoint(_needed(x, target)) for x in small):
            return True
    return False


class _Item(NamedTuple):
    value: Fraction
    text: str  # expression over the original numbers
    prec: int  # 3 atom, 2 for * /, 1 for + -


def _join(left: _Item, op: str, right: _Item, value: Fraction) -> _Item:
    prec = 1 if op in "+-" else 2
    lt = left.text if left.prec >= prec else f"({left.text})"
    keep_right = right.prec > prec or (right.prec == prec and op in "+*")
    rt = right.text if keep_right else f"({right.text})"
    return _Item(value, f"{lt}{op}{rt}", prec)


def solve(numbers: Sequence[int]) -> list[str] | None:
    """A step-by-step trace (see module docstring) reaching 24, or None if unsolvable."""
    items = sorted((_Item(Fraction(n), str(int(n)), 3) for n in numbers), key=lambda it: it.value)
    for allow in _ALLOW:
        if _reaches(tuple(it.value for it in items), allow):
            break
    else:
        return None
    lines = []
    while len(items) > 1:
        items, line = _one_step(items, allow)
        lines.append(line)
    lines.append(f"Answer: {items[0].text} = {TARGET}")
    return lines


def _one_step(items: list[_Item], allow: str) -> tuple[list[_Item], str]:
    """The first move (in the documented order) that keeps 24 reachable."""
    for i, j in itertools.combinations(range(len(items)), 2):
        rest = items[:i] + items[i + 1 : j] + items[j + 1 :]
        for swap, op in _moves(items[i].value, items[j].value):
            first, second = (items[j], items[i]) if swap else (items[i], items[j])
            r = apply_op(first.value, op, second.value)
            if not _allowed(r, allow):
                continue
            if _reaches(tuple(sorted([it.value for it in rest] + [r])), allow):
                new = sorted(rest + [_join(first, op, second, r)], key=lambda it: it.value)
                left_text = " ".join(format_number(it.value) for it in new)
                line = (f"{format_number(first.value)} {op} {format_number(second.value)} = "
                        f"{format_number(r)} (left: {left_text})")
                return new, line
    raise AssertionError("unreachable: _reaches promised a move")


# --- puzzles and data ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def all_puzzles() -> tuple[tuple[int, int, int, int], ...]:
    """Every solvable multiset of four numbers from 1..13, ascending (cached: ~2 s once)."""
    puzzles = tuple(
        p for p in itertools.combinations_with_replacement(range(1, 14), 4) if is_solvable(p)
    )
    assert len(puzzles) == NUM_SOLVABLE, f"expected {NUM_SOLVABLE} solvable puzzles, found {len(puzzles)}"
    return puzzles


def make_problem(numbers: Sequence[int], with_solution: bool = True, **extra: Any) -> dict[str, Any]:
    """The problem dict every loader returns: question text, numbers, and (when solvable and
    asked for) the solver trace as `solution`, one step per line."""
    numbers = [int(n) for n in numbers]
    problem: dict[str, Any] = {"question": " ".join(map(str, numbers)), "numbers": numbers}
    if with_solution:
        trace = solve(numbers)
        problem["solution"] = None if trace is None else "\n".join(trace)
    problem.update(extra)
    return problem


def split(seed: int = 0, test_size: int = 100) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded train/test split of all 1362 puzzles (same seed, same split on every machine)."""
    if not 0 <= test_size <= NUM_SOLVABLE:
        raise ValueError(f"test_size must be in [0, {NUM_SOLVABLE}], got {test_size}")
    order = list(all_puzzles())
    random.Random(seed).shuffle(order)
    problems = [make_problem(p) for p in order]
    return problems[test_size:], problems[:test_size]


def _parse_puzzle(text: str, where: str) -> list[int]:
    parts = str(text).split()
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
        raise DataError(f"{where}: expected four integers like '1 1 4 6', got {text!r}")
    return [int(p) for p in parts]


def load_tot_csv(path: str | Path, ranks: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Puzzles from the Tree-of-Thoughts ranked CSV (columns `Rank,Puzzles,AMT (s),Solved rate,
    ...`). `ranks=(lo, hi)` keeps ranks lo..hi inclusive (ToT's test set is (901, 1000))."""
    path = Path(path)
    problems = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"Rank", "Puzzles"} <= set(reader.fieldnames):
            raise DataError(f"{path}:1: expected columns 'Rank' and 'Puzzles', got {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                rank = int(row["Rank"])
            except (TypeError, ValueError):
                raise DataError(f"{where}: Rank must be an integer, got {row['Rank']!r}") from None
            if ranks is not None and not ranks[0] <= rank <= ranks[1]:
                continue
            numbers = _parse_puzzle(row["Puzzles"], where)
            problems.append(make_problem(numbers, rank=rank, solved_rate=row.get("Solved rate")))
    if ranks is not None and not problems:
        raise DataError(f"{path}: no puzzle has a rank in {ranks[0]}-{ranks[1]}")
    return problems


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Puzzles from jsonl rows holding `numbers` (four integers) or `question`/`puzzle` text
    like "1 1 4 6" (TS-LLM's layout: `question` and an `answer` trace); other fields are kept as
    they are (the checker needs only the numbers, so an `answer` is never trusted for scoring)."""
    problems = []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if "numbers" in row:
            nums = row["numbers"]
            if not (isinstance(nums, list) and len(nums) == 4 and all(type(n) is int for n in nums)):
                raise DataError(f"{where}: 'numbers' must be a list of four integers, got {nums!r}")
        elif "question" in row or "puzzle" in row:
            nums = _parse_puzzle(row.get("question", row.get("puzzle")), where)
        else:
            raise DataError(f"{where}: missing field 'numbers' (or 'question'/'puzzle')")
        extra = {k: v for k, v in row.items() if k not in ("numbers", "question", "puzzle")}
        problem = make_problem(nums, with_solution="solution" not in row, **extra)
        problems.append(problem)
    return problems


# --- the environment -------------------------------------------------------------------------
class Game24Env(TextEnv):
    """Game24 as an MDP over lines. Terminal at an `Answer:` line or after `max_steps` lines
    (default 4: three steps and the answer). Reward +1 iff the answer expression checks; with
    `strict=True` the whole trace must check too (every step valid, see `check_trace`)."""

    template = "Input: {question}\n"

    def __init__(self, max_steps: int = 4, template: str | None = None, strict: bool = False):
        super().__init__(max_steps=max_steps, template=template)
        self.strict = strict

    def question_text(self, problem: Any) -> str:
        return " ".join(map(str, self._numbers(problem)))

    def gold_of(self, problem: Any) -> Hashable:
        return tuple(self._numbers(problem))

    @staticmethod
    def _numbers(problem: Any) -> list[int]:
        if isinstance(problem, Mapping):
            if "numbers" in problem:
                return [int(n) for n in problem["numbers"]]
            problem = problem["question"]
        if isinstance(problem, str):
            return _parse_puzzle(problem, "question")
        return [int(n) for n in problem]

    def problem_of(self, state: TextState) -> dict[str, Any]:
        return {"question": state.question, "numbers": list(state.gold)}

    def is_final_step(self, step: str) -> bool:
        return _ANSWER_RE.match(step) is not None

    def extract_answer(self, text: str) -> str | None:
        return extract_expression(text)

    def check(self, problem: Any, text: str) -> bool:
        numbers = self._numbers(problem)
        if self.strict:
            return check_trace(numbers, text)
        expr = extract_expression(text)
        return expr is not None and check_answer(numbers, expr)

    def legal_step(self, state: TextState, step: str) -> bool:
        """The rules of the game, which need only the puzzle: a step combines two of the numbers
        left and states its result and the numbers then left correctly; the answer line is an
        expression using each number exactly once. Whether it makes 24 is the outcome, not a rule.
        After an illegal history (a sampled path, never a searched one) nothing more is ruled out."""
        left: list[Fraction] | None = [Fraction(n) for n in state.gold]
        for line in state.steps:
            if self.is_final_step(line):
                return False
            left = check_step(left, line)
            if left is None:
                return True
        if self.is_final_step(step):
            expr = extract_expression(step)
            return expr is not None and evaluate_expression(state.gold, expr) is not None
        return check_step(left, step) is not None

    def check_steps(self, state: TextState) -> bool:
        """Whether every non-answer step so far is a valid step (prefix validation)."""
        left: list[Fraction] | None = [Fraction(n) for n in state.gold]
        for line in state.steps:
            if self.is_final_step(line):
                break
            left = check_step(left, line)
            if left is None:
                return False
        return True
