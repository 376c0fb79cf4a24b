"""Game of 24 (ToT / TS-LLM): four numbers, steps `a op b = c (left: ...)`, then an expression.

Problems: the 1362 solvable puzzles split by `game24.split(seed, test_questions)`; the warm start
uses the same split's training side, so no test puzzle is seen. `tsllm eval --data` reads a
Tree-of-Thoughts ranked CSV (`--ranks 901-1000` keeps ToT's test ranks) or a jsonl of puzzles.
"""

from __future__ import annotations

from typing import Any

from tsllm.config import bad
from tsllm.tasks import register
from tsllm.tasks.base import GeneratedTextTask, TaskSettings


@register
class Game24Task(GeneratedTextTask):
    name = "game24"
    data_help = "a Tree-of-Thoughts ranked CSV (24.csv) or a jsonl of puzzles (TS-LLM's: question \"1 1 4 6\")"
    ranked_data = True

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.game24 import Game24Env

        # strict: a solution must follow every step rule too, not only end on the right answer
        return Game24Env(strict=settings.strict, template=template)

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        super().check(settings, training)
        ranks = settings.test_ranks
        if ranks is not None and not str(settings.test_data or "").endswith(".csv"):
            raise bad("test_ranks", "ranks cut a Tree-of-Thoughts ranked CSV; give one as test_data, or remove them")
        if ranks is not None and not 1 <= ranks[0] <= ranks[1]:
            raise bad("test_ranks", f"expected ranks lo-hi with 1 <= lo <= hi, got {ranks[0]}-{ranks[1]}")
        if settings.test_data is None:
            from tsllm.envs.game24 import NUM_SOLVABLE

            if not 1 <= settings.test_questions < NUM_SOLVABLE:  # the rest is the training pool
                raise bad("test_questions", f"Game24 has {NUM_SOLVABLE} puzzles to split into held-out and training "
                                            f"ones; choose 1..{NUM_SOLVABLE - 1}, got {settings.test_questions}")

    def _split(self) -> tuple[list[dict], list[dict]]:
        from tsllm.envs.game24 import split

        return split(seed=self.settings.seed, test_size=self.settings.test_questions)

    def train_problems(self) -> list[dict]:
        return self._split()[0]

    def test_problems(self) -> list[dict]:
        from tsllm.envs import game24

        data = self.settings.test_data
        if data is None:
            return self._split()[1]
        if data.endswith(".csv"):
            return game24.load_tot_csv(data, ranks=self.settings.test_ranks)
        return game24.load_jsonl(data)

    def unusual_problems(self, problems: list[dict]) -> str | None:
        from tsllm.envs.game24 import is_solvable

        outside = [p for p in problems if not all(1 <= n <= 13 for n in p["numbers"])]
        unsolvable = [p for p in problems if p not in outside and not is_solvable(p["numbers"])]
        if not outside and not unsolvable:
            return None
        examples = ", ".join(repr(p["question"]) for p in (outside + unsolvable)[:3])
        return (f"{len(outside)} of {len(problems)} puzzles have numbers outside 1..13 and {len(unsolvable)} "
                f"cannot make 24 (e.g. {examples}); they are scored like the others and cannot be solved")

    def warmstart_rows(self) -> list[dict]:
        from tsllm.tasks.warmstart import WarmStartConfig, game24_rows

        s = self.settings  # the same split as the evaluation: no test puzzle is seen
        return game24_rows(WarmStartConfig(game24_split_seed=s.seed, game24_test_size=s.test_questions))
