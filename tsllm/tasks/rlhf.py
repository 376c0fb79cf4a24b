"""RLHF at token level (TS-LLM's alignment setting): a step is one token (depth up to
`max_response_tokens`), the reward is a reward model's score of the response, the policy's
next-token distribution comes from an HF model through `TokenPolicyValue`, and the policy learns
from the top-reward trajectory of each prompt. Prompts come from `train_data` / `test_data` (a
jsonl with a `prompt_field` column, a .txt file of one prompt a line, or a hub dataset id). The
HF model runs on this process's device. The baseline is best-of-N scored by the ORM (the value
model read at the end): majority votes over free-form responses would mean nothing. Alignment is
judged by the mean reward.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from tsllm.config import bad
from tsllm.tasks import register
from tsllm.tasks.base import Render, Task, TaskSettings, check_data, check_path


def response_pieces(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """The response text cut at token boundaries, so that the pieces join to decode(ids) and the
    value model is labelled after every token. A token that adds only whitespace (or nothing, as
    a partial UTF-8 character does) joins the next piece: trajectory steps hold visible text."""
    pieces, done, pending = [], "", ""
    for k in range(1, len(ids) + 1):
        text = decode(ids[:k])
        if not text.startswith(done):  # decoding is not prefix-stable here: keep the rest whole
            break
        pending += text[len(done):]
        done = text
        if pending.strip():
            pieces.append(pending)
            pending = ""
    rest = decode(ids)[len("".join(pieces)):]
    if rest.strip() or (rest and not pieces):
        pieces.append(rest)
    elif rest:
        pieces[-1] += rest
    return pieces


class _OnDevice:
    """TokenPolicyValue builds its inputs on the CPU and reads only the last position's logits:
    move the inputs to the model's device and bring back just that position."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, **inputs: Any) -> Any:
        device = next(self.model.parameters()).device
        logits = self.model(**{k: v.to(device) for k, v in inputs.items()}).logits
        return SimpleNamespace(logits=logits[:, -1:, :].float().cpu())


@register
class RLHFTask(Task):
    name = "rlhf"
    baseline, votes_knob, baseline_knobs = "best_of_n", "n", {"method": "orm_max"}
    score = "reward"
    joined_steps = True
    data_help = "a jsonl file of prompts (see --prompt-field), a .txt file of one prompt a line or a hub dataset id"

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        keys = ("train_data", "test_data") if training else ("test_data",)
        for key in keys:
            check_data(key, getattr(settings, key), cls.data_help)
            if getattr(settings, key) is None:
                raise bad(key, f"rlhf needs prompts: a jsonl file with a '{settings.prompt_field}' column "
                               "or a hub dataset id")
        if settings.backend != "hf":
            raise bad("backend", "rlhf's token-level search reads next-token distributions from a transformers "
                                 "model, which the vllm generator does not return; set backend: hf")
        check_path("base_model", settings.base_model, "the SFT policy folder (rlhf has no tiny warm start)")
        check_path("reward_model", settings.reward_model,
                   "a sequence-classification reward model folder (num_labels=1)")
        if settings.max_response_tokens < 1:
            raise bad("max_response_tokens", f"must be >= 1, got {settings.max_response_tokens}")

    def __init__(self, settings: TaskSettings, device: str = "cpu"):
        from transformers import AutoTokenizer

        from tsllm.envs.rlhf import HFRewardModel, RLHFEnv

        super().__init__(settings, device)
        self.tokenizer = AutoTokenizer.from_pretrained(settings.base_model)
        if self.tokenizer.eos_token_id is None:
            raise bad("base_model", f"the tokenizer of {settings.base_model} has no EOS token, so a response "
                                    "never ends")
        self.decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)
        self.env = RLHFEnv(HFRewardModel(settings.reward_model, device=device), eos_id=self.tokenizer.eos_token_id,
                           decode=self.decode, max_depth=settings.max_response_tokens)
        self._model, self._model_path = None, None

    def _prompts(self, data: str, split: str, limit: int) -> list[dict]:
        from tsllm.envs.rlhf import load_prompts

        return load_prompts(data, field=self.settings.prompt_field, split=split, limit=limit)

    def train_problems(self) -> list[dict]:
        s = self.settings
        return self._prompts(s.train_data, s.train_split, s.train_questions)

    def test_problems(self) -> list[dict]:
        s = self.settings
        return self._prompts(s.test_data, s.test_split, s.test_questions)

    def policy_value(self, policy: str, generator: Callable[[str], Any], value_fn: Any, temperature: float,
                     legal_steps_only: bool) -> Any:
        """Any token is a legal move: `legal_steps_only` has nothing to mask here."""
        from tsllm.models.tiny import load_causal_lm
        from tsllm.policy_value import TokenPolicyValue

        if self._model_path != policy:  # one policy in memory at a time
            self._model = None
            self._model, _ = load_causal_lm(policy, device=self.device)
            self._model_path = policy
        # greedy walks take the top token whatever the temperature; 0 would divide by zero
        return TokenPolicyValue(self.env, _OnDevice(self._model), self.tokenizer, value_fn,
                                rollout_tokens=self.settings.max_response_tokens, temperature=temperature or 1.0)

    def row(self, state: Any, source: str, tokens: int) -> dict:
        ids = self.env.response_ids(state)
        reward = self.env.reward(state) if self.env.is_terminal(state) else 0.0
        return {"question": state.prompt, "steps": response_pieces(self.decode, ids), "reward": reward,
                "task": self.name, "source": source, "tokens": tokens, "response_ids": ids}

    @classmethod
    def policy_rows(cls, rows: list[dict]) -> list[dict]:
        """Each prompt's highest-reward trajectory with a response, whatever its sign (docs/ARCHITECTURE.md 5)."""
        best: dict[str, dict] = {}
        for row in (r for r in rows if r["steps"]):
            if row["question"] not in best or row["reward"] > best[row["question"]]["reward"]:
                best[row["question"]] = row
        return list(best.values())

    @classmethod
    def method_metrics(cls, result: dict[str, Any]) -> dict[str, Any]:
        """The reward model's mean score of the responses the method chose (finished ones)."""
        scores = [q["reward"] for q in result["per_question"] if q["reward"] is not None]
        return {"reward": sum(scores) / len(scores) if scores else None}

    @classmethod
    def render(cls, template: str | None = None) -> Render:
        """The prompt followed by the response pieces joined as they are (what RLHFEnv.prompt shows)."""
        form = template or "{question}"
        if "{question}" not in form:
            raise ValueError("template must contain '{question}'")
        return lambda question, steps: form.format(question=question) + "".join(steps)
