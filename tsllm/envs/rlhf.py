"""RLHF alignment at token level (TS-LLM's RLHF setting): a state is a prompt plus the tuple of
generated token ids, an action is one token id, and the episode ends at the EOS id or at the
depth cap (default 64 tokens). The reward of a terminal state is a reward model's score of
(prompt, response text); non-terminal states get 0.

The reward is any callable `(prompt, response) -> float`, or an HF sequence-classification
reward model loaded lazily from a local path (`HFRewardModel`); this module never imports torch
or transformers at import time. Scores are cached per terminal state, so repeated evaluation of
the same leaf costs one reward-model call.

Token-level backends should feed `state.prompt` (encoded) followed by `state.tokens` to the
policy; `prompt(state)` renders the same as text for display and text-only backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsllm.envs.base import DataError, iter_jsonl, iter_text_lines, load_hub_dataset

RewardFn = Callable[[str, str], float]


@dataclass(frozen=True)
class TokenState:
    prompt: str
    tokens: tuple[int, ...] = ()

    @property
    def depth(self) -> int:
        return len(self.tokens)


class HFRewardModel:
    """A sequence-classification reward model (num_labels=1) from a local folder or hub id.

    Called as `rm(prompt, response)` or batched with `rm.score(prompts, responses)`. The text
    scored is `template` with {prompt} and {response} filled in. torch and transformers are
    imported on first use."""

    def __init__(self, path: str | Path, *, template: str = "{prompt}{response}",
                 device: str = "cpu", max_length: int = 1024, batch_size: int = 16):
        self.path = str(path)
        self.template = template
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        config = AutoConfig.from_pretrained(self.path)
        if config.num_labels != 1:  # fail before loading weights, with the fix in the message
            raise ValueError(f"{self.path}: a reward model needs num_labels=1, has {config.num_labels}")
        model = AutoModelForSequenceClassification.from_pretrained(self.path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        if tokenizer.pad_token is None:  # batching needs padding; EOS is the usual stand-in
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:  # decoder RMs read the last non-pad token
            model.config.pad_token_id = tokenizer.pad_token_id
        self._model = model.to(self.device).eval()
        self._tokenizer = tokenizer

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError("score: prompts and responses differ in length")
        if self._model is None:
            self._load()
        import torch

        texts = [self.template.format(prompt=p, response=r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(texts[i : i + self.batch_size], return_tensors="pt", padding=True,
                                    truncation=True, max_length=self.max_length)
            batch.pop("token_type_ids", None)  # all zeros for one segment; decoder RMs reject it
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.no_grad():
                logits = self._model(**batch).logits
            out.extend(float(x) for x in logits[:, 0].float().cpu())
        return out

    def __call__(self, prompt: str, response: str) -> float:
        return self.score([prompt], [response])[0]


class RLHFEnv:
    """Token-level MDP. `decode(token_ids) -> str` turns the response tokens into text for the
    reward (pass the policy tokenizer's decode); EOS is not part of the decoded response."""

    step_separator = ""

    def __init__(self, reward: RewardFn | str | Path, eos_id: int,
                 decode: Callable[[Sequence[int]], str], max_depth: int = 64):
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        self.reward_fn: RewardFn = HFRewardModel(reward) if isinstance(reward, (str, Path)) else reward
        self.eos_id = int(eos_id)
        self.decode = decode
        self.max_depth = max_depth
        self._cache: dict[TokenState, float] = {}

    def initial_state(self, question: Any) -> TokenState:
        if isinstance(question, TokenState):
            return question
        prompt = question["question"] if isinstance(question, Mapping) else question
        return TokenState(str(prompt))

    def step(self, state: TokenState, action: int) -> TokenState:
        return TokenState(state.prompt, state.tokens + (int(action),))

    def is_terminal(self, state: TokenState) -> bool:
        return len(state.tokens) >= self.max_depth or (bool(state.tokens) and state.tokens[-1] == self.eos_id)

    def response_ids(self, state: TokenState) -> list[int]:
        tokens = list(state.tokens)
        return tokens[:-1] if tokens and tokens[-1] == self.eos_id else tokens

    def answer(self, state: TokenState) -> str:
        """The response text so far (EOS dropped)."""
        return self.decode(self.response_ids(state))

    def prompt(self, state: TokenState) -> str:
        return state.prompt + self.answer(state)

    def reward(self, state: TokenState) -> float:
        if not self.is_terminal(state):
            return 0.0
        return self.rewards([state])[0]

    def rewards(self, states: Sequence[TokenState]) -> list[float]:
        """Rewards of many states with one batched reward-model call for the uncached terminals."""
        todo = list(dict.fromkeys(s for s in states if self.is_terminal(s) and s not in self._cache))
        if todo:
            prompts, responses = [s.prompt for s in todo], [self.answer(s) for s in todo]
            if isinstance(self.reward_fn, HFRewardModel):
                scores = self.reward_fn.score(prompts, responses)
            else:
                scores = [self.reward_fn(p, r) for p, r in zip(prompts, responses)]
            self._cache.update((s, float(v)) for s, v in zip(todo, scores))
        return [self._cache[s] if self.is_terminal(s) else 0.0 for s in states]


def load_prompts(source: str | Path | Sequence[str], *, field: str = "prompt", split: str = "train",
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts as problem dicts {question: prompt}: from a list of strings, a local jsonl with a
    `field` column, a local .txt file with one prompt per line (blank lines skipped; a prompt
    that spans lines belongs in a jsonl), or a hub dataset (needs network; lazy import). Errors
    in local files name the file and line."""
    if not isinstance(source, (str, Path)):
        prompts = [str(p) for p in source]
    elif Path(source).suffix == ".txt":
        prompts = [line.strip() for _, line in iter_text_lines(source)]
    elif Path(source).suffix == ".jsonl" or Path(source).is_file():
        prompts = []
        for lineno, row in iter_jsonl(source, required=(field,)):
            if not isinstance(row[field], str):
                raise DataError(f"{source}:{lineno}: {field!r} must be a string")
            prompts.append(row[field])
    else:
        data = load_hub_dataset(str(source), split=split)
        if field not in data.column_names:
            raise DataError(f"{source}[{split}]: no {field!r} column (columns: {data.column_names}); "
                            "choose one with --prompt-field / prompt_field")
        prompts = [str(row[field]) for row in data]
    if limit is not None:
        prompts = prompts[:limit]
    return [{"question": p} for p in prompts]
