"""What the loop does differently per task, behind one small interface, so tsllm/loop.py reads
the same for all of them.

- Text tasks (game24, prontoqa, gsm8k): a step is one line, the reward is the exact checker's
  +1/-1, the policy is served by the run's generator (HF or vLLM) through `LLMPolicyValue`, and the
  policy learns from correct trajectories. GSM8k problems come from `train_data` / `test_data`
  (a local jsonl with `question` and `answer` fields, or a hub dataset id such as openai/gsm8k)
  or, with neither, from `tsllm.envs.gsm8k.synthetic` (offline, for the tiny model).
- rlhf (TS-LLM's alignment setting): a step is one token (depth up to `max_response_tokens`), the
  reward is a reward model's score of the response, the policy's next-token distribution comes
  from an HF model through `TokenPolicyValue`, and the policy learns from the top-reward
  trajectory of each prompt. Prompts come from `train_data` / `test_data` (a jsonl with a
  `prompt_field` column, or a hub dataset id). The HF model runs on this process's device.

Every path the user fills in is checked at start: a placeholder (`/path/to/...`) or a missing
file is one ConfigError naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tsllm.config import bad

PLACEHOLDER = "/path/to/"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the hub spells dataset and model ids


def _check_placeholder(key: str, value: str, what: str) -> None:
    if PLACEHOLDER in value:
        raise bad(key, f"{value} is a placeholder; set it to {what}")


def check_path(key: str, value: str | None, what: str) -> None:
    """A model folder the user must provide: set, not a placeholder, existing."""
    if value is None:
        raise bad(key, f"not set; set it to {what}")
    _check_placeholder(key, value, what)
    if not Path(value).expanduser().exists():
        raise bad(key, f"{value} does not exist; set it to {what}")


def check_data(key: str, value: str | None, what: str) -> None:
    """A data source: a local file, or a hub dataset id (org/name) loaded when the run starts."""
    if value is None:
        return
    _check_placeholder(key, value, what)
    local = Path(value).expanduser()
    if not local.exists() and (not _HUB_ID.match(value) or local.suffix in (".json", ".jsonl")):
        raise bad(key, f"{value} does not exist (and is not a hub dataset id such as openai/gsm8k); "
                       f"set it to {what}")


def validate_task(cfg: Any) -> None:
    """Task-specific checks of a LoopConfig, run by its validate()."""
    if cfg.task in ("game24", "prontoqa"):
        for key in ("train_data", "test_data", "reward_model"):
            if getattr(cfg, key) is not None:
                raise bad(key, f"task {cfg.task} generates its own problems and needs no {key}; remove it")
        return
    check_data("train_data", cfg.train_data, "a jsonl file or a hub dataset id")
    check_data("test_data", cfg.test_data, "a jsonl file or a hub dataset id")
    if cfg.task == "gsm8k":
        if cfg.reward_model is not None:
            raise bad("reward_model", "gsm8k is scored by its exact checker; remove reward_model")
        if (cfg.train_data is None) != (cfg.test_data is None):
            raise bad("test_data" if cfg.test_data is None else "train_data",
                      "set both train_data and test_data, or neither (synthetic problems)")
        return
    for key in ("train_data", "test_data"):
        if getattr(cfg, key) is None:
            raise bad(key, "rlhf needs prompts: a jsonl file with a "
                           f"'{cfg.prompt_field}' column or a hub dataset id")
    if cfg.backend != "hf":
        raise bad("backend", "rlhf's token-level search reads next-token distributions from a transformers "
                             "model, which the vllm generator does not return; set backend: hf")
    check_path("base_model", cfg.base_model, "the SFT policy folder (rlhf has no tiny warm start)")
    check_path("reward_model", cfg.reward_model, "a sequence-classification reward model folder (num_labels=1)")
    if cfg.max_response_tokens < 1:
        raise bad("max_response_tokens", f"must be >= 1, got {cfg.max_response_tokens}")


def make_task(cfg: Any, device: str) -> TextTask | RLHFTask:
    return RLHFTask(cfg, device) if cfg.task == "rlhf" else TextTask(cfg)


# ------------------------------------------------------------------------------- text tasks

class TextTask:
    baseline, votes_knob, baseline_knobs = "cot_sc", "k", {}  # CoT-SC at the search's token budget

    def __init__(self, cfg: Any):
        from tsllm.envs.game24 import Game24Env
        from tsllm.envs.gsm8k import GSM8kEnv
        from tsllm.envs.prontoqa import ProntoQAEnv

        self.cfg = cfg
        if cfg.task == "gsm8k":  # its checker reads the final answer only: nothing stricter to ask
            self.env = GSM8kEnv()
        else:  # strict: a solution must follow every step rule too, not only end on the right answer
            self.env = (Game24Env if cfg.task == "game24" else ProntoQAEnv)(strict=cfg.strict)

    def problems(self) -> tuple[list[dict], list[dict]]:
        """(train, test) problems: train_questions and test_questions of them."""
        cfg = self.cfg
        if cfg.task == "game24":
            from tsllm.envs.game24 import split

            train, test = split(seed=cfg.seed, test_size=cfg.test_questions)
            return train[: cfg.train_questions], test
        if cfg.task == "prontoqa":
            from tsllm.envs import prontoqa

            return (prontoqa.generate(cfg.train_questions, seed=cfg.seed + 1),
                    prontoqa.generate(cfg.test_questions, seed=cfg.seed + 10_000))
        return self.gsm8k_pool()[: cfg.train_questions], self.gsm8k_test()

    def gsm8k_pool(self) -> list[dict]:
        """Every GSM8k training problem (the warm start may use more than a round does)."""
        from tsllm.envs import gsm8k

        cfg = self.cfg
        if cfg.train_data is None:
            return gsm8k.synthetic(max(cfg.train_questions, 1000), seed=cfg.seed + 1)
        return gsm8k.load_gsm8k(cfg.train_data, split=cfg.train_split)

    def gsm8k_test(self) -> list[dict]:
        from tsllm.envs import gsm8k

        cfg = self.cfg
        if cfg.test_data is None:
            return gsm8k.synthetic(cfg.test_questions, seed=cfg.seed + 10_000)
        return gsm8k.load_gsm8k(cfg.test_data, split=cfg.test_split, limit=cfg.test_questions)

    def policy_value(self, policy: str, generator: Callable[[str], Any], value_fn, temperature: float,
                     legal_steps_only: bool):
        from tsllm.policy_value import LLMPolicyValue

        cfg = self.cfg
        return LLMPolicyValue(self.env, generator(policy), value_fn, temperature=temperature,
                              max_step_tokens=cfg.max_step_tokens,
                              rollout_tokens=cfg.max_step_tokens * (self.env.max_steps + 1), seed=cfg.seed,
                              legal_steps_only=legal_steps_only)

    def row(self, state: Any, source: str, tokens: int) -> dict:
        reward = self.env.reward(state) if self.env.is_terminal(state) else -1.0  # no answer: wrong
        return {"question": state.question, "gold": state.gold, "steps": list(state.steps), "reward": reward,
                "task": self.cfg.task, "source": source, "tokens": tokens}


# ------------------------------------------------------------------------------- rlhf

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


class RLHFTask:
    # best-of-N scored by the ORM (the value model read at the end) at the search's token budget;
    # majority votes over free-form responses would mean nothing
    baseline, votes_knob, baseline_knobs = "best_of_n", "n", {"method": "orm_max"}

    def __init__(self, cfg: Any, device: str):
        from transformers import AutoTokenizer

        from tsllm.envs.rlhf import HFRewardModel, RLHFEnv

        self.cfg, self.device = cfg, device
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        if self.tokenizer.eos_token_id is None:
            raise bad("base_model", f"the tokenizer of {cfg.base_model} has no EOS token, so a response never ends")
        self.decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)
        self.env = RLHFEnv(HFRewardModel(cfg.reward_model, device=device), eos_id=self.tokenizer.eos_token_id,
                           decode=self.decode, max_depth=cfg.max_response_tokens)
        self._model, self._model_path = None, None

    def problems(self) -> tuple[list[dict], list[dict]]:
        from tsllm.envs.rlhf import load_prompts

        cfg = self.cfg
        return (load_prompts(cfg.train_data, field=cfg.prompt_field, split=cfg.train_split, limit=cfg.train_questions),
                load_prompts(cfg.test_data, field=cfg.prompt_field, split=cfg.test_split, limit=cfg.test_questions))

    def policy_value(self, policy: str, generator: Callable[[str], Any], value_fn, temperature: float,
                     legal_steps_only: bool):
        """Any token is a legal move: `legal_steps_only` has nothing to mask here."""
        from tsllm.models.tiny import load_causal_lm
        from tsllm.policy_value import TokenPolicyValue

        if self._model_path != policy:  # one policy in memory at a time
            self._model = None
            self._model, _ = load_causal_lm(policy, device=self.device)
            self._model_path = policy
        # greedy walks take the top token whatever the temperature; 0 would divide by zero
        return TokenPolicyValue(self.env, _OnDevice(self._model), self.tokenizer, value_fn,
                                rollout_tokens=self.cfg.max_response_tokens, temperature=temperature or 1.0)

    def row(self, state: Any, source: str, tokens: int) -> dict:
        ids = self.env.response_ids(state)
        reward = self.env.reward(state) if self.env.is_terminal(state) else 0.0
        return {"question": state.prompt, "steps": response_pieces(self.decode, ids), "reward": reward,
                "task": "rlhf", "source": source, "tokens": tokens, "response_ids": ids}
