"""GSM8k: grade-school word problems; a step is one line of the solution, the checker reads the
final number only (nothing stricter to ask).

Problems come from `train_data` / `test_data` (a local jsonl with `question` and `answer` fields,
or a hub dataset id such as openai/gsm8k) or, with neither, from `tsllm.envs.gsm8k.synthetic`
(offline, for the tiny model). The warm start teaches the training problems' own solutions.
"""

from __future__ import annotations

from typing import Any

from tsllm.config import bad
from tsllm.tasks import register
from tsllm.tasks.base import TaskSettings, TextTask, check_data, held_out_seed, refuse, train_seed


@register
class GSM8kTask(TextTask):
    name = "gsm8k"
    data_help = "a jsonl file with question/answer rows or a hub dataset id such as openai/gsm8k"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.gsm8k import GSM8kEnv

        return GSM8kEnv(template=template)

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        super().check(settings, training)
        refuse(settings, cls.name, ("reward_model",), "is scored by its exact checker")
        if training:
            check_data("train_data", settings.train_data, cls.data_help)
        check_data("test_data", settings.test_data, cls.data_help)
        if training and (settings.train_data is None) != (settings.test_data is None):
            raise bad("test_data" if settings.test_data is None else "train_data",
                      "set both train_data and test_data, or neither (synthetic problems)")

    def train_problems(self) -> list[dict]:
        from tsllm.envs import gsm8k

        s = self.settings
        if s.train_data is None:
            return gsm8k.synthetic(max(s.train_questions, 1000), seed=train_seed(s.seed))
        return gsm8k.load_gsm8k(s.train_data, split=s.train_split)

    def test_problems(self) -> list[dict]:
        from tsllm.envs import gsm8k

        s = self.settings
        if s.test_data is None:
            return gsm8k.synthetic(s.test_questions, seed=held_out_seed(s.seed))
        return gsm8k.load_gsm8k(s.test_data, split=s.test_split, limit=s.test_questions)

    def warmstart_rows(self) -> list[dict]:
        from tsllm.tasks.warmstart import gsm8k_rows

        return gsm8k_rows(self.train_problems())
