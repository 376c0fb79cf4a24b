"""Game24 on `tsllm.envs.base.GameEnv` (as tsllm.envs.reach): the policy names a move, the env does
the arithmetic.

    Input: 4 9 10 13
    13 - 9 = 4 (left: 4 4 10)
    10 - 4 = 6 (left: 4 6)
    4 * 6 = 24 (left: 24)

A step is the policy's line naming two of the numbers left and an operation by its start
(`13 - 9`). The env writes the line in tsllm.envs.game24's step format, with the exact result and
the numbers then left (ascending): the board. Three moves leave one number: +1 if it is 24, else
-1. A line that names no legal move (a number that is not left, a division by zero) ends the game
at -1. So the rules are easy and random play teaches them; which moves make 24 is the strategy,
the part the search has to find.

Model output is untrusted: a line is parsed with an anchored regex over ASCII digits; nothing is
evaluated.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable
from fractions import Fraction
from typing import Any

from tsllm.envs.base import GameEnv, TextState
from tsllm.envs.game24 import _NUM, TARGET, Game24Env, _parse_number, _Reject, apply_op, format_number

MOVES = 3  # four numbers, two combined per move
OPS = ("+", "-", "*", "/")

_MOVE_RE = re.compile(rf"^({_NUM}) ([-+*/]) ({_NUM})(?![0-9/])", re.ASCII)

Left = list[Fraction]  # the board: the numbers left


class Game24MovesEnv(GameEnv):
    """Game24 as a game (see the module doc). The gold key is the puzzle's four numbers, which the
    question shows: the outcome needs nothing hidden."""

    template = Game24Env.template
    max_steps = MOVES

    def question_text(self, problem: Any) -> str:
        return " ".join(map(str, Game24Env._numbers(problem)))

    def gold_of(self, problem: Any) -> Hashable:
        return tuple(Game24Env._numbers(problem))

    def problem_of(self, state: TextState) -> dict[str, Any]:
        return {"question": state.question, "numbers": list(state.gold)}

    def start(self, gold: tuple[int, ...]) -> Left:
        return [Fraction(n) for n in gold]

    def moves(self, left: Left) -> list[str]:
        """Every pair of numbers left with every possible operation, once per distinct pair of
        values; + and * only larger first (the other order is the same move)."""
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

    def apply(self, left: Left, line: str) -> tuple[str, Left] | None:
        """The move `line` names by its start: two of the numbers left (one each if they are equal)
        and an operation that can be done (no division by zero)."""
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

    def outcome(self, left: Left) -> float | None:
        if len(left) > 1:
            return None
        return 1.0 if left == [TARGET] else -1.0

    def answer_of(self, left: Left) -> str | None:
        """The last number left (None before the end)."""
        return format_number(left[0]) if len(left) == 1 else None

    def random_move(self, left: Left, rng: random.Random) -> str:
        """Two of the numbers left, in a random order (+ and * too), and an operation they allow."""
        i, j = rng.sample(range(len(left)), 2)
        ops = [op for op in OPS if not (op == "/" and left[j] == 0)]
        return f"{format_number(left[i])} {rng.choice(ops)} {format_number(left[j])}"
