"""Reach: from a start number, reach a target with a small set of allowed moves.

A problem is a start, a target and the moves allowed (drawn per problem from `MOVE_MENU`):

    Start 7, reach 46, moves +3 *2. 39 to go.
    7 * 2 = 14, 32 to go
    14 + 3 = 17, 29 to go
    17 + 3 = 20, 26 to go
    20 + 3 = 23, 23 to go
    23 * 2 = 46

A game on `tsllm.envs.base.GameEnv`: the policy chooses a move, the env applies it. A step is
the policy's line naming one of the problem's moves by its start (`14 + 3`; whatever follows);
the env rewrites it as that move applied to the current value with the exact result and the
distance still to go, so the policy's context always holds the true board. The game ends when the
value reaches the target (+1), passes it (-1: the moves never decrease a value), after
`max_steps` moves (-1), or at a line that names no allowed move (-1: a broken rule). The policy
writes the move, about 6 tokens, and the env the remaining ~15 characters.

So the rules (write a line naming an allowed move) are easy and random play teaches them; the
strategy (which move, given the value, the target and the moves) is the same on every problem,
so what the search finds on training problems can carry over to held-out ones.

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
from typing import Any, NamedTuple

from tsllm.envs.base import DataError, GameEnv, TextState, iter_jsonl

MOVE_MENU = ("+1", "+2", "+3", "+4", "+5", "*2", "*3")
MOVES_PER_PROBLEM = 3
MAX_START = 20
MAX_TARGET = 200
MAX_MOVES = 6  # the longest shortest solution the generator draws
DEPTH_WEIGHTS = (1, 1, 1, 1, 1, 1)  # relative frequency of shortest-solution lengths 1..MAX_MOVES
MAX_STEPS = MAX_MOVES + 1  # moves in an episode: one more than the longest shortest solution
MAX_DIGITS = 6  # longer numbers are not legal steps (the policy's text is bounded, not evaluated)

Key = tuple[int, int, tuple[str, ...]]  # (start, target, moves): what makes two problems the same

_NUMBER = rf"(0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})"
# a line names its move by its start: "14 + 3" (what follows, e.g. "= 17, 29 to go", is the env's to write)
_MOVE_RE = re.compile(r"^([+*])([1-9][0-9]?)$", re.ASCII)
_MOVE_RE_LINE = re.compile(rf"^{_NUMBER} ([+*]) ([1-9][0-9]?)(?![0-9])", re.ASCII)
_QUESTION_RE = re.compile(
    rf"^Start {_NUMBER}, reach {_NUMBER}, moves ((?:[+*][1-9][0-9]? ?)+)\.(?: {_NUMBER} to go\.)?$", re.ASCII)


# --- moves and lines -------------------------------------------------------------------------
def apply_move(value: int, move: str) -> int:
    op, operand = move[0], int(move[1:])
    return value + operand if op == "+" else value * operand


def step_line(value: int, move: str, target: int) -> str:
    """The env's line for `move` applied to `value`: the exact result and, while the game is on,
    how far the target still is (the board the policy reads, as a game engine shows it)."""
    result = apply_move(value, move)
    return f"{value} {move[0]} {move[1:]} = {result}" + (f", {target - result} to go" if result < target else "")


def parse_move(line: str) -> str | None:
    """The move a line names by its start (`14 + 3 ...` -> "+3"), or None."""
    match = _MOVE_RE_LINE.match(line.strip()) if isinstance(line, str) else None
    return None if match is None else f"{match[2]}{match[3]}"


def question_text(start: int, target: int, moves: Sequence[str]) -> str:
    return f"Start {start}, reach {target}, moves {' '.join(moves)}. {target - start} to go."


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
    """The step lines of one shortest path from start to target, or None."""
    parent: dict[int, tuple[int, str]] = {}
    frontier, seen = [start], {start}
    for _ in range(max_moves + 1):
        if target in seen:
            lines, value = [], target
            while value != start:
                prev, move = parent[value]
                lines.insert(0, step_line(prev, move, target))
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


# --- the game ------------------------------------------------------------------------------
class Board(NamedTuple):
    value: int
    target: int
    moves: tuple[str, ...]


class ReachEnv(GameEnv):
    """Reach on GameEnv (see the module doc). The gold key is (start, target, moves); the target is
    in the question, so ending the game when it is reached reveals nothing the policy does not see."""

    template = "{question}\n"
    max_steps = MAX_STEPS

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
        return make_problem(*state.gold)

    def start(self, gold: Key) -> Board:
        return Board(*gold)

    def moves(self, board: Board) -> list[str]:
        return [f"{board.value} {move[0]} {move[1:]}" for move in board.moves]

    def apply(self, board: Board, line: str) -> tuple[str, Board] | None:
        """The move the line names, if allowed, applied to the value (whatever value and result the
        line states)."""
        move = parse_move(line)
        if move not in board.moves:
            return None
        return step_line(board.value, move, board.target), board._replace(value=apply_move(board.value, move))

    def outcome(self, board: Board) -> float | None:
        if board.value < board.target:
            return None
        return 1.0 if board.value == board.target else -1.0

    def answer_of(self, board: Board) -> int:
        """The value reached."""
        return board.value
