"""Game24 with the env as the game engine (as tsllm.envs.reach): the policy names a move, the env
does the arithmetic.

    Input: 4 9 10 13
    13 - 9 = 4 (left: 4 4 10)
    10 - 4 = 6 (left: 4 6)
    4 * 6 = 24 (left: 24)

A step is the policy's line naming two of the numbers left and an operation by its start
(`13 - 9`; its generation stops at " ="). The env writes the line in tsllm.envs.game24's step
format, with the exact result and the numbers then left (ascending). Three moves leave one
number: +1 if it is 24, else -1. A line that names no legal move (a number that is not left, a
division by zero) ends the game at -1. So the rules are easy and random play teaches them; which
moves make 24 is the strategy, the part the search has to find.

Model output is untrusted: a line is parsed with an anchored regex over ASCII digits; nothing is
evaluated.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from fractions import Fraction
from typing import Any

from tsllm.envs.base import STEP_SEPARATOR, TextEnv, TextState
from tsllm.envs.game24 import _NUM, TARGET, Game24Env, _parse_number, _Reject, apply_op, format_number

MOVES = 3  # four numbers, two combined per move
OPS = ("+", "-", "*", "/")

_MOVE_RE = re.compile(rf"^({_NUM}) ([-+*/]) ({_NUM})(?![0-9/])", re.ASCII)

Left = list[Fraction]


def apply_move(left: Sequence[Fraction], line: str) -> tuple[str, Left] | None:
    """(the env's line, the numbers left after it) for the move `line` names by its start, or None
    when it names none: two of the numbers in `left` (one each if they are equal) and an operation
    that can be done (no division by zero)."""
    match = _MOVE_RE.match(line.strip()) if isinstance(line, str) else None
    if match is None:
        return None
    try:
        a, op, b = _parse_number(match[1]), match[2], _parse_number(match[3])
        result = apply_op(a, op, b)
    except (_Reject, ZeroDivisionError):
        return None
    pool = Counter(left)
    for operand in (a, b):
        if pool[operand] == 0:
            return None
        pool[operand] -= 1
    pool[result] += 1
    rest = sorted(pool.elements())
    text = f"{format_number(a)} {op} {format_number(b)} = {format_number(result)} "
    return text + f"(left: {' '.join(map(format_number, rest))})", rest


def play(numbers: Sequence[int], lines: Sequence[str]) -> list[Left] | None:
    """The numbers left after each line, or None when a line names no legal move."""
    left: Left = [Fraction(n) for n in numbers]
    lefts = []
    for line in lines:
        applied = apply_move(left, line)
        if applied is None:
            return None
        left = applied[1]
        lefts.append(left)
    return lefts


def random_play(numbers: Sequence[int], rng: random.Random) -> list[str]:
    """Three random legal moves, written as the env writes them: the rules, whatever the outcome."""
    left: Left = [Fraction(n) for n in numbers]
    lines = []
    while len(left) > 1:
        i, j = rng.sample(range(len(left)), 2)
        ops = [op for op in OPS if not (op == "/" and left[j] == 0)]
        line, left = apply_move(left, f"{format_number(left[i])} {rng.choice(ops)} {format_number(left[j])}")
        lines.append(line)
    return lines


class Game24MovesEnv(TextEnv):
    """Game24 as an MDP over moves, the env applying them (see the module doc). The gold key is
    the puzzle's four numbers, which the question shows: the outcome needs nothing hidden."""

    template = Game24Env.template
    step_stops = (STEP_SEPARATOR, " =")  # the policy names the move ("13 - 9"); the env writes the rest

    def __init__(self, template: str | None = None):
        super().__init__(max_steps=MOVES, template=template)

    def question_text(self, problem: Any) -> str:
        return " ".join(map(str, Game24Env._numbers(problem)))

    def gold_of(self, problem: Any) -> Hashable:
        return tuple(Game24Env._numbers(problem))

    def problem_of(self, state: TextState) -> dict[str, Any]:
        return {"question": state.question, "numbers": list(state.gold)}

    def left(self, state: TextState) -> Left | None:
        """The numbers left now, or None after a line that named no legal move."""
        lefts = play(state.gold, state.steps)
        return None if lefts is None else lefts[-1] if lefts else [Fraction(n) for n in state.gold]

    def step(self, state: TextState, action: str) -> TextState:
        """Apply the move the line names and write the exact line; a line that names no legal
        move is kept as written (it ends the game as a loss)."""
        child, left = super().step(state, action), self.left(state)
        applied = None if left is None else apply_move(left, child.steps[-1])
        if applied is None:
            return child
        return TextState(child.question, state.steps + (applied[0],), child.gold)

    def is_terminal(self, state: TextState) -> bool:
        return len(state.steps) >= self.max_steps or self.left(state) is None

    def is_final_step(self, step: str) -> bool:  # the end is decided by the moves made, in is_terminal
        return False

    def answer(self, state: TextState) -> str | None:
        """The last number left after the three moves (None before the end or after a broken rule)."""
        left = self.left(state)
        return format_number(left[0]) if left is not None and len(left) == 1 else None

    def extract_answer(self, text: str) -> str | None:  # needs the puzzle: see `answer`
        return None

    def check(self, problem: Any, text: str) -> bool:
        """Whether the lines, applied to the puzzle, are three legal moves leaving 24."""
        if not isinstance(text, str):
            return False
        lines = [line for line in text.split("\n") if line.strip()]
        lefts = play(Game24Env._numbers(problem), lines) if len(lines) == MOVES else None
        return lefts is not None and lefts[-1] == [TARGET]

    def legal_moves(self, state: TextState) -> list[str]:
        """The policy's part of each legal move (`13 - 9`): every pair of numbers left with every
        possible operation, once per distinct pair of values; + and * only larger first (the other
        order is the same move)."""
        left = self.left(state)
        if left is None or self.is_terminal(state):
            return []
        moves: list[str] = []
        for i, a in enumerate(left):
            for j, b in enumerate(left):
                if i == j:
                    continue
                for op in OPS:
                    if (op in "+*" and a < b) or (op == "/" and b == 0):
                        continue
                    move = f"{format_number(a)} {op} {format_number(b)}"
                    if move not in moves:
                        moves.append(move)
        return moves

    def legal_step(self, state: TextState, step: str) -> bool:
        """The rules: the line names two of the numbers left and a possible operation. After a
        broken rule (a sampled path, never a searched one) nothing more is ruled out."""
        left = self.left(state)
        return left is None or apply_move(left, step) is not None
