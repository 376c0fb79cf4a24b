"""PrOntoQA: a small ontology and a query; steps are the proof's sentences, then true/false.

Problems come from the generator: training ones from `train_seed(seed)`, held-out ones from
`held_out_seed(seed)`, the warm start's from `warmstart_seed(seed)`. `tsllm eval --data` reads
the published json (or a jsonl of problems) instead.
"""

from __future__ import annotations

from typing import Any

from tsllm.tasks import register
from tsllm.tasks.base import TaskSettings, TextTask, check_data, held_out_seed, refuse, train_seed, warmstart_seed


@register
class ProntoQATask(TextTask):
    name = "prontoqa"
    data_help = "the published PrOntoQA json or a jsonl of problems"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.prontoqa import ProntoQAEnv

        return ProntoQAEnv(strict=settings.strict, template=template)

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        super().check(settings, training)
        if training:
            refuse(settings, cls.name, ("train_data", "test_data", "reward_model"), "generates its own problems")
        else:
            refuse(settings, cls.name, ("reward_model",), "is scored by its exact checker")
            check_data("test_data", settings.test_data, cls.data_help)

    def train_problems(self) -> list[dict]:
        from tsllm.envs import prontoqa

        return prontoqa.generate(self.settings.train_questions, seed=train_seed(self.settings.seed))

    def test_problems(self) -> list[dict]:
        from tsllm.envs import prontoqa

        s = self.settings
        if s.test_data is None:
            return prontoqa.generate(s.test_questions, seed=held_out_seed(s.seed))
        return prontoqa.load_json(s.test_data) if s.test_data.endswith(".json") else prontoqa.load_jsonl(s.test_data)

    def warmstart_rows(self) -> list[dict]:
        from tsllm.training.warmstart import WarmStartConfig, prontoqa_rows

        return prontoqa_rows(WarmStartConfig(prontoqa_seed=warmstart_seed(self.settings.seed)))
