"""Reach: from a start number, reach a target with a small set of allowed moves.

A problem is a start, a target and the moves allowed (drawn per problem from `MOVE_MENU`):

    Start 7, reach 46, moves +3 *2.
    7 * 2 = 14
    14 + 3 = 17
    ...
    Answer: 46

A step is one line `value op operand = result`: the current value, one of the problem's moves and
the exact result. The line `Answer: n` states the current value and ends the episode. Reward +1
iff the answer is the target (and, with `strict`, every step was legal), else -1.

The rules are local and short (one operation on the current value), so random legal play teaches
them; the strategy (which move brings the target closer) is the same on every problem, so what
the search finds on training problems carries over to held-out ones.

Generator (`generate`): start 1..MAX_START, a move set of MOVES_PER_PROBLEM moves from the menu, a
shortest-solution length drawn from `DEPTH_WEIGHTS` (1 to MAX_MOVES moves, found by BFS) and a
target among the values first reached at that depth (at most MAX_TARGET). Problems are keyed by
(start, target, moves): a split built with `exclude` shares no key with it.

Model output is untrusted: every line is parsed with anchored regexes over ASCII digits of at
most MAX_DIGITS digits; nothing is evaluated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tsllm.envs.base import DataError, TextEnv, TextState, iter_jsonl

MOVE_MENU = ("+1", "+2", "+3", "+4", "+5", "*2", "*3")
MOVES_PER_PROBLEM = 3
MAX_START = 20
MAX_TARGET = 200
MAX_MOVES = 6  # the longest shortest solution; the episode is MAX_MOVES steps and the answer line
DEPTH_WEIGHTS = (1, 1, 1, 1, 1, 1)  # relative frequency of shortest-solution lengths 1..MAX_MOVES
MAX_DIGITS = 6  # longer numbers are not legal steps (the policy's text is bounded, not evaluated)

Key = tuple[int, int, tuple[str, ...]]  # (start, target, moves): what makes two problems the same

_NUMBER = rf"(0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})"
_STEP_RE = re.compile(rf"^{_NUMBER} ([+*]) {_NUMBER} = {_NUMBER}$", re.ASCII)
_ANSWER_RE = re.compile(rf"^Answer: {_NUMBER}$", re.ASCII)
_MOVE_RE = re.compile(r"^([+*])([1-9][0-9]?)$", re.ASCII)
_QUESTION_RE = re.compile(rf"^Start {_NUMBER}, reach {_NUMBER}, moves ((?:[+*][1-9][0-9]? ?)+)\.$", re.ASCII)


# --- moves and lines -------------------------------------------------------------------------
def apply_move(value: int, move: str) -> int:
    op, operand = move[0], int(move[1:])
    return value + operand if op == "+" else value * operand


def step_line(value: int, move: str) -> str:
    return f"{value} {move[0]} {move[1:]} = {apply_move(value, move)}"


def answer_line(value: int) -> str:
    return f"Answer: {value}"


def parse_step(line: str) -> tuple[int, str, int] | None:
    """(value, move, result) of a step line as written (not checked), or None."""
    match = _STEP_RE.match(line.strip()) if isinstance(line, str) else None
    return None if match is None else (int(match[1]), f"{match[2]}{match[3]}", int(match[4]))


def parse_answer(line: str) -> int | None:
    match = _ANSWER_RE.match(line.strip()) if isinstance(line, str) else None
    return None if match is None else int(match[1])


def next_value(value: int, moves: Sequence[str], line: str) -> int | None:
    """The value after a legal step line from `value`, or None when the line breaks a rule."""
    parsed = parse_step(line)
    if parsed is None:
        return None
    stated, move, result = parsed
    if stated != value or move not in moves or apply_move(value, move) != result:
        return None
    return result


def question_text(start: int, target: int, moves: Sequence[str]) -> str:
    return f"Start {start}, reach {target}, moves {' '.join(moves)}."


def parse_question(text: str) -> Key:
    match = _QUESTION_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a reach question: {text!r}")
    return int(match[1]), int(match[2]), tuple(match[3].split())


# --- search over values ----------------------------------------------------------------------
def distances(start: int, moves: Sequence[str], max_moves: int = MAX_MOVES,
              max_value: int = MAX_TARGET) -> dict[int, int]:
    """{value: fewest moves from start} for values <= max_value within max_moves (BFS; the moves
    never decrease a value, so nothing above max_value leads back under it)."""
    seen, frontier = {start: 0}, [start]
    for depth in range(1, max_moves + 1):
        nxt = []
        for value in frontier:
            for move in moves:
                r = apply_move(value, move)
                if r <= max_value and r not in seen:
                    seen[r] = depth
                    nxt.append(r)
        frontier = nxt
    return seen


def shortest_solution(start: int, target: int, moves: Sequence[str], max_moves: int = MAX_MOVES) -> list[str] | None:
    """The step lines of one shortest path from start to target, then the answer line, or None."""
    parent: dict[int, tuple[int, str]] = {}
    frontier, seen = [start], {start}
    for _ in range(max_moves + 1):
        if target in seen:
            lines, value = [answer_line(target)], target
            while value != start:
                prev, move = parent[value]
                lines.insert(0, step_line(prev, move))
                value = prev
            return lines
        nxt = []
        for value in frontier:
            for move in moves:
                r = apply_move(value, move)
                if r <= target and r not in seen:
                    seen.add(r)
                    parent[r] = (value, move)
                    nxt.append(r)
        frontier = nxt
    return None


# --- problems --------------------------------------------------------------------------------
def make_problem(start: int, target: int, moves: Sequence[str], **extra: Any) -> dict[str, Any]:
    moves = tuple(moves)
    return {"question": question_text(start, target, moves), "start": start, "target": target,
            "moves": list(moves), **extra}


def key_of(problem: Mapping[str, Any]) -> Key:
    return int(problem["start"]), int(problem["target"]), tuple(problem["moves"])


def _sort_moves(moves: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(moves, key=MOVE_MENU.index))


def generate(n: int, seed: Hashable, exclude: Iterable[Key] = (), depth_weights: Sequence[float] = DEPTH_WEIGHTS,
             menu: Sequence[str] = MOVE_MENU, moves_per_problem: int = MOVES_PER_PROBLEM) -> list[dict[str, Any]]:
    """n distinct problems, none keyed in `exclude`, each with a `depth` (its fewest moves,
    drawn from depth_weights) and a `solution` (one shortest path). Seeded by any hashable
    (a string seed is stable across machines)."""
    rng = random.Random(str(seed))
    taken = set(exclude)
    problems: list[dict[str, Any]] = []
    while len(problems) < n:
        start = rng.randint(1, MAX_START)
        moves = _sort_moves(rng.sample(list(menu), moves_per_problem))
        depth = rng.choices(range(1, len(depth_weights) + 1), weights=depth_weights)[0]
        targets = sorted(v for v, d in distances(start, moves, len(depth_weights)).items() if d == depth)
        if not targets:  # this start and move set reach nothing new at that depth: draw again
            continue
        target = rng.choice(targets)
        if (start, target, moves) in taken:
            continue
        taken.add((start, target, moves))
        solution = shortest_solution(start, target, moves, depth)
        problems.append(make_problem(start, target, moves, depth=depth, solution="\n".join(solution)))
    return problems


def random_play(problem: Mapping[str, Any], rng: random.Random, max_moves: int = MAX_MOVES) -> list[str]:
    """Legal steps with random allowed moves for a random number (0..max_moves) of moves, then the
    answer line of the value reached: the rules, whatever value it ends on. A play stops once past
    MAX_TARGET: no target lies beyond, so longer arithmetic there would only spend the warm start."""
    value, moves = int(problem["start"]), tuple(problem["moves"])
    lines = []
    for _ in range(rng.randint(0, max_moves)):
        if value > MAX_TARGET:
            break
        move = rng.choice(moves)
        lines.append(step_line(value, move))
        value = apply_move(value, move)
    return lines + [answer_line(value)]


def end_value(start: int, moves: Sequence[str], lines: Sequence[str]) -> int | None:
    """The value a legal trace reaches (the answer it states), or None when any line breaks a rule."""
    value: int | None = start
    for line in lines[:-1]:
        value = next_value(value, moves, line)
        if value is None:
            return None
    return value if lines and parse_answer(lines[-1]) == value else None


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Problems from jsonl rows `{"start": int, "target": int, "moves": ["+3", "*2"]}`; other
    fields are kept. A bad row raises DataError naming its file and line."""
    problems = []
    for lineno, row in iter_jsonl(path, required=("start", "target", "moves")):
        where = f"{path}:{lineno}"
        start, target, moves = row["start"], row["target"], row["moves"]
        for name, number in (("start", start), ("target", target)):
            if type(number) is not int or not 0 <= number < 10**MAX_DIGITS:
                raise DataError(f"{where}: '{name}' must be an integer in 0..{10**MAX_DIGITS - 1}, got {number!r}")
        if not (isinstance(moves, list) and moves and all(isinstance(m, str) and _MOVE_RE.match(m) for m in moves)):
            raise DataError(f"{where}: 'moves' must be a non-empty list like [\"+3\", \"*2\"], got {moves!r}")
        extra = {k: v for k, v in row.items() if k not in ("start", "target", "moves", "question")}
        problems.append(make_problem(start, target, moves, **extra))
    return problems


# --- the environment -------------------------------------------------------------------------
class ReachEnv(TextEnv):
    """Reach as an MDP over lines; terminal at the answer line or after max_steps lines (default:
    MAX_MOVES steps and the answer). The gold key is (start, target, moves)."""

    template = "{question}\n"

    def __init__(self, max_steps: int = MAX_MOVES + 1, template: str | None = None, strict: bool = True):
        super().__init__(max_steps=max_steps, template=template)
        self.strict = strict

    def question_text(self, problem: Any) -> str:
        return question_text(*self._key(problem))

    def gold_of(self, problem: Any) -> Hashable:
        return self._key(problem)

    @staticmethod
    def _key(problem: Any) -> Key:
        if isinstance(problem, Mapping):
            if "start" in problem:
                return key_of(problem)
            problem = problem["question"]
        if isinstance(problem, str):
            return parse_question(problem)
        start, target, moves = problem
        return int(start), int(target), tuple(moves)

    def problem_of(self, state: TextState) -> dict[str, Any]:
        start, target, moves = state.gold
        return make_problem(start, target, moves)

    def is_final_step(self, step: str) -> bool:
        return isinstance(step, str) and step.strip().startswith("Answer:")

    def extract_answer(self, text: str) -> int | None:
        """The number on the last answer line, or None."""
        if not isinstance(text, str):
            return None
        for line in reversed(text.split("\n")):
            if self.is_final_step(line):
                return parse_answer(line)
        return None

    def check(self, problem: Any, text: str) -> bool:
        start, target, moves = self._key(problem)
        if not isinstance(text, str):
            return False
        if not self.strict:
            return self.extract_answer(text) == target
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        return end_value(start, moves, lines) == target

    def current_value(self, state: TextState) -> int | None:
        """The value after the state's steps, or None once a step broke a rule or answered."""
        start, _, moves = state.gold
        value: int | None = start
        for line in state.steps:
            if value is None or self.is_final_step(line):
                return None
            value = next_value(value, moves, line)
        return value

    def legal_step(self, state: TextState, step: str) -> bool:
        """The rules, judged without the target: a step applies one allowed move to the current
        value and states the exact result; an answer line states the current value. After an
        illegal history (a sampled path, never a searched one) nothing more is ruled out."""
        value = self.current_value(state)
        if value is None:
            return not any(self.is_final_step(line) for line in state.steps)
        if self.is_final_step(step):
            return parse_answer(step) == value
        return next_value(value, state.gold[2], step) is not None
