"""Reach: reach a target from a start number with a few allowed moves (tsllm/envs/reach.py).

Problems come from the generator, so there are as many as a run asks for. Held-out ones from
`held_out_seed(seed)`; training pools from `train_seed(seed)` and the round index
(`train_problems(round=k)`: a fresh pool per round, none keyed like a held-out problem); the warm
start's from `warmstart_seed(seed)`. `tsllm eval --data` reads a jsonl of {start, target, moves}.

The warm start is oracle-free: random legal play (random allowed moves, written as the env writes
them, until the game ends by passing the target or by the move cap). A play that reaches its own
prompt's target is dropped, and so is one that passes through the target of a held-out problem or
of the first `EXCLUDED_ROUNDS` training pools with the same start and moves: the warm start teaches
the rules, never a solution of a problem the loop learns from or is judged on.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from tsllm.tasks import register
from tsllm.tasks.base import (
    GeneratedTextTask,
    TaskSettings,
    held_out_seed,
    random_play_rows,
    train_seed,
    warmstart_seed,
)

WARMSTART_PROBLEMS = 12000
PLAYS_PER_PROBLEM = 2
EXCLUDED_ROUNDS = 8  # training pools whose solutions the warm start must not contain


@register
class ReachTask(GeneratedTextTask):
    name = "reach"
    data_help = "a jsonl of {start, target, moves} rows"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.reach import ReachEnv

        return ReachEnv(template=template)

    @functools.cached_property
    def _held_out(self) -> list[dict]:  # drawn once: every pool and the warm start exclude it
        from tsllm.envs import reach

        return reach.generate(self.settings.test_questions, seed=f"reach-held-out-{held_out_seed(self.settings.seed)}")

    @functools.cached_property
    def _held_out_keys(self) -> set[tuple]:
        from tsllm.envs import reach

        return {reach.key_of(p) for p in self._held_out}

    def train_problems(self, round: int = 0) -> list[dict]:
        """Round `round`'s training pool: train_questions fresh problems, none held out."""
        from tsllm.envs import reach

        seed = f"reach-train-{train_seed(self.settings.seed)}-round-{round}"
        return reach.generate(self.settings.train_questions, seed=seed, exclude=self._held_out_keys)

    def pool(self, round: int) -> list[dict]:
        """A fresh pool every round (the loop asks for round k's)."""
        return self.train_problems(round=round)

    def test_problems(self) -> list[dict]:
        from tsllm.envs import reach

        if self.settings.test_data is None:
            return self._held_out
        return reach.load_jsonl(self.settings.test_data)

    def excluded_keys(self) -> set[tuple]:
        """(start, target, moves) of every problem the warm start must hold no solution of."""
        from tsllm.envs import reach

        pools = [self._held_out] + [self.train_problems(round=k) for k in range(EXCLUDED_ROUNDS)]
        return {reach.key_of(p) for pool in pools for p in pool}

    def warmstart_rows(self) -> list[dict]:
        from tsllm.envs import reach

        seed = warmstart_seed(self.settings.seed)
        problems = reach.generate(WARMSTART_PROBLEMS, seed=f"reach-warmstart-{seed}")
        excluded = self.excluded_keys()

        def solves(path: list) -> bool:  # every value a play passes ends a solution of (start, value, moves)
            start = path[0].board.value
            return any((start, s.board.value, s.board.moves) in excluded for s in path[1:])

        return random_play_rows(self.env, problems, PLAYS_PER_PROBLEM, random.Random(f"reach-plays-{seed}"),
                                self.name, solves)
