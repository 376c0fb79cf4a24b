"""PrOntoQA: a small ontology and a query; steps are the proof's sentences, then true/false.

Problems come from the generator: training ones from `train_seed(seed)`, held-out ones from
`held_out_seed(seed)`, the warm start's from `warmstart_seed(seed)`. `tsllm eval --data` reads
the published json, or a jsonl of problems (ours, or TS-LLM's released test split), instead.
"""

from __future__ import annotations

from typing import Any

from tsllm.tasks import register
from tsllm.tasks.base import GeneratedTextTask, TaskSettings, held_out_seed, train_seed, warmstart_seed


@register
class ProntoQATask(GeneratedTextTask):
    name = "prontoqa"
    data_help = "the published PrOntoQA json, or a jsonl of problems (also TS-LLM's test split layout)"

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        from tsllm.envs.prontoqa import ProntoQAEnv

        return ProntoQAEnv(strict=settings.strict, template=template)

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
        from tsllm.tasks.warmstart import WarmStartConfig, prontoqa_rows

        return prontoqa_rows(WarmStartConfig(prontoqa_seed=warmstart_seed(self.settings.seed)))
