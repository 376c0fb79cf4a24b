"""Game24 where the policy names the moves and the env does the arithmetic (tsllm/envs/game24_moves.py).

The puzzles and their split are Game24's (`game24.split(seed, test_questions)`); the pool is the
first `train_questions` training puzzles, the same every round (there are only ~1,100). The warm
start is oracle-free: random legal play of every four-number multiset from 1..13 (1,820, solvable
or not) but the held-out puzzles, `PLAYS_PER_MULTISET` plays each, and a play that makes 24 is
dropped: the warm start teaches the rules, never a solution.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from tsllm.tasks import register
from tsllm.tasks.base import TaskSettings, random_play_rows, warmstart_seed
from tsllm.tasks.game24 import Game24Task

PLAYS_PER_MULTISET = 6


@register
class Game24MovesTask(Game24Task):
    name = "game24_moves"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.game24_moves import Game24MovesEnv

        return Game24MovesEnv(template=template)

    def warmstart_rows(self) -> list[dict]:
        held_out = {tuple(p["numbers"]) for p in self.test_problems()}
        multisets = itertools.combinations_with_replacement(range(1, 14), 4)  # all 1,820
        rng = random.Random(f"game24-moves-plays-{warmstart_seed(self.settings.seed)}")
        return random_play_rows(self.env, [n for n in multisets if n not in held_out], PLAYS_PER_MULTISET, rng,
                                self.name)
