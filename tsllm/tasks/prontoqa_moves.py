"""PrOntoQA where the policy names the rule to apply and the env writes what it derives
(tsllm/envs/prontoqa_moves.py).

Problems come from PrOntoQA's generator (tsllm/envs/prontoqa.py): held-out ones from
`held_out_seed(seed)`, a fresh training pool per round from `train_seed(seed)` and the round
index, none asking a held-out question; `tsllm eval --data` reads what the prontoqa task reads.

The warm start is oracle-free: random legal play (random applicable rules, written as the env
writes them) on problems of their own, `warmstart_seed(seed)`, a play that proves its own query
dropped; a problem whose context (its rules and fact) is that of a held-out problem or of one of
the first `EXCLUDED_ROUNDS` pools is left out, so the warm start teaches the rules, never a
solution of a problem the loop learns from or is judged on.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from tsllm.tasks import register
from tsllm.tasks.base import TaskSettings, held_out_seed, random_play_rows, train_seed, warmstart_seed
from tsllm.tasks.prontoqa import ProntoQATask

WARMSTART_PROBLEMS = 6000
PLAYS_PER_PROBLEM = 2
EXCLUDED_ROUNDS = 8  # training pools whose problems the warm start keeps clear of


def context_of(problem: dict) -> frozenset[str]:
    """A problem's rules and facts, in any order: two problems with the same context share every
    solution (the query only says which derived fact ends the game)."""
    from tsllm.envs import prontoqa

    return frozenset(prontoqa.sentences(problem["question"]))


@register
class ProntoQAMovesTask(ProntoQATask):
    name = "prontoqa_moves"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.prontoqa_moves import ProntoQAMovesEnv

        return ProntoQAMovesEnv(template=template)

    @functools.cached_property
    def _held_out(self) -> list[dict]:  # drawn once: every pool and the warm start exclude it
        from tsllm.envs import prontoqa

        seed = f"prontoqa-held-out-{held_out_seed(self.settings.seed)}"
        return prontoqa.generate(self.settings.test_questions, seed=seed)

    def train_problems(self, round: int = 0) -> list[dict]:
        """Round `round`'s training pool: train_questions fresh problems, none asking a held-out question."""
        from tsllm.envs import prontoqa

        held_out = {self.env.question_text(p) for p in self._held_out}
        seed = f"prontoqa-train-{train_seed(self.settings.seed)}-round-{round}"
        return [p for p in prontoqa.generate(self.settings.train_questions, seed=seed)
                if self.env.question_text(p) not in held_out]

    def pool(self, round: int) -> list[dict]:
        """A fresh pool every round (the loop asks for round k's)."""
        return self.train_problems(round=round)

    def test_problems(self) -> list[dict]:
        return self._held_out if self.settings.test_data is None else super().test_problems()

    def warmstart_rows(self) -> list[dict]:
        from tsllm.envs import prontoqa

        pools = [self._held_out] + [self.train_problems(round=k) for k in range(EXCLUDED_ROUNDS)]
        excluded = {context_of(p) for pool in pools for p in pool}
        seed = warmstart_seed(self.settings.seed)
        problems = [p for p in prontoqa.generate(WARMSTART_PROBLEMS, seed=f"prontoqa-warmstart-{seed}")
                    if context_of(p) not in excluded]
        return random_play_rows(self.env, problems, PLAYS_PER_PROBLEM, random.Random(f"prontoqa-plays-{seed}"),
                                self.name)
