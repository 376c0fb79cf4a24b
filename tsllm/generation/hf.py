"""The transformers backend: batched sampling with plain `model.generate`.

Slower than vLLM (no prefix cache, so `cached_tokens` is always 0) but it runs wherever
transformers does, needs no engine start-up, and works on any model object in memory.

Log-probs: `Completion.logprob` is the sum, over the generated tokens, of the log-softmax of the
model's raw logits, i.e. the model's own distribution at temperature 1 before temperature, top-k
and top-p reshape it. That is the same quantity a forward pass over prompt + completion gives, it is
finite for every token, and it does not change with the sampling knobs, so priors built from it are
comparable across searches.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tsllm.models.tiny import load_causal_lm
from tsllm.types import Completion, SamplingParams

# A character can take up to 4 byte-level tokens, so a stop string of k characters ends within the
# last 4k generated tokens; one more absorbs decoding quirks at the window's first token.
_BYTES_PER_CHAR = 4


class HFGenerator:
    """`Generator` over a transformers causal LM.

    `model_or_path` is a model object (then `tokenizer` is required and the model keeps its own
    device and dtype) or a local folder / hub id (loaded with `load_causal_lm` on `device` in
    `dtype`). One `generate` call runs one batched `model.generate` over all prompts (split only
    when prompts x n exceeds `max_batch_size` sequences).

    The generator owns decoding: it replaces the model's generation_config with one holding only
    the special-token ids, so sampling defaults shipped with a checkpoint (temperature,
    repetition penalty, ...) never leak into the searches.
    """

    def __init__(
        self,
        model_or_path: PreTrainedModel | str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        max_batch_size: int = 64,
    ) -> None:
        if isinstance(model_or_path, (str, os.PathLike)):
            model, loaded_tokenizer = load_causal_lm(model_or_path, dtype=dtype, device=device)
            tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
        else:
            model = model_or_path
            if tokenizer is None:
                raise ValueError("HFGenerator: a model object needs its tokenizer; pass tokenizer=...")
        if max_batch_size < 1:
            raise ValueError(f"HFGenerator: max_batch_size must be >= 1, got {max_batch_size}")
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError("HFGenerator: the tokenizer has neither a pad nor an eos token; set one")
            tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked, any id will do
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self._adapted = None  # the PeftModel wrapping self.model once an adapter is applied
        self._adapter_updates = 0
        self._stop_cache: dict[str, None] = {}  # stop strings already checked against the tokenizer
        self._install(model)

    # ------------------------------------------------------------------------------ model

    def _install(self, model: PreTrainedModel) -> None:
        """Make `model` the one we generate with, under our clean generation config."""
        original = model.generation_config
        eos = original.eos_token_id if original.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        model.generation_config = GenerationConfig(
            bos_token_id=original.bos_token_id,
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.model = model.eval()
        self.context_length = getattr(model.config, "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------------------ generate

    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order."""
        if isinstance(prompts, str):
            raise TypeError("HFGenerator.generate: prompts must be a list of strings, not one string")
        _check_sampling(sampling)
        stops = self._checked_stops(sampling.stop)
        if not prompts:
            return []
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        self._check_context(prompt_ids, sampling.max_new_tokens)

        greedy = sampling.temperature == 0
        copies = 1 if greedy else sampling.n  # greedy copies would be identical: decode once
        prompts_per_call = max(1, self.max_batch_size // copies)
        results: list[list[Completion]] = []
        with self._seeded(sampling.seed):
            for start in range(0, len(prompt_ids), prompts_per_call):
                chunk = prompt_ids[start : start + prompts_per_call]
                results.extend(self._generate_batch(chunk, sampling, copies, stops))
        if greedy and sampling.n > 1:
            results = [[copy.deepcopy(row[0]) for _ in range(sampling.n)] for row in results]
        return results

    def _generate_batch(
        self, prompt_ids: list[list[int]], sampling: SamplingParams, copies: int, stops: list[str]
    ) -> list[list[Completion]]:
        """One `model.generate` call over left-padded prompts; `copies` samples each."""
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1

        recorder = _TokenLogprobRecorder(prompt_width=width)
        criteria = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stops, width)] if stops else [])
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=self._generation_config(sampling, copies),
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=criteria,
        )
        logprobs = recorder.finish(sequences).tolist()
        generated = sequences[:, width:].tolist()

        # generate() returns rows prompt-major: prompt 0's copies first, then prompt 1's, ...
        return [
            [
                self._completion(generated[row], logprobs[row], len(ids), stops)
                for row in range(index * copies, (index + 1) * copies)
            ]
            for index, ids in enumerate(prompt_ids)
        ]

    def _generation_config(self, sampling: SamplingParams, copies: int) -> GenerationConfig:
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = sampling.max_new_tokens
        config.num_return_sequences = copies
        config.do_sample = sampling.temperature > 0
        if config.do_sample:
            config.temperature = sampling.temperature
            config.top_p = sampling.top_p
            config.top_k = sampling.top_k  # 0 disables top-k
        return config

    def _completion(
        self, generated: list[int], logprobs: list[float], prompt_len: int, stops: list[str]
    ) -> Completion:
        """Cut one row at its first stop string or eos; rows that ended early are padded after."""
        end, finish = len(generated), "length"
        eos_at = next((i for i, token in enumerate(generated) if token in self.eos_ids), None)
        if eos_at is not None:
            end, finish = eos_at + 1, "eos"
        text_ids = generated[: end - 1] if finish == "eos" else generated
        stopped = _first_stop(self.tokenizer, text_ids, stops)
        if stopped is not None:
            end, text = stopped
            finish = "stop"
        else:
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return Completion(
            text=text,
            token_ids=generated[:end],
            logprob=float(sum(logprobs[:end])),
            num_tokens=end,
            prompt_tokens=prompt_len,
            cached_tokens=0,
            finish_reason=finish,
        )

    # ------------------------------------------------------------------------------ checks

    def _checked_stops(self, stops: Sequence[str]) -> list[str]:
        """Stop strings the tokenizer can produce; a string that needs <unk> could never match."""
        if isinstance(stops, str):
            raise TypeError(f"SamplingParams.stop must be a list of strings, got the string {stops!r}")
        unk = self.tokenizer.unk_token_id
        for stop in stops:
            if stop in self._stop_cache:
                continue
            if not isinstance(stop, str) or not stop:
                raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
            ids = self.tokenizer.encode(stop, add_special_tokens=False)
            if not ids or (unk is not None and unk in ids):
                raise ValueError(
                    f"stop string {stop!r} cannot be produced by this tokenizer (it encodes to {ids}, "
                    f"unknown-token id {unk}); use characters in the tokenizer's vocabulary"
                )
            self._stop_cache[stop] = None
        return list(stops)

    def _check_context(self, prompt_ids: list[list[int]], max_new_tokens: int) -> None:
        for index, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"prompt {index} is empty after tokenization; the model needs >= 1 token")
        if self.context_length is None:
            return
        limit = self.context_length - max_new_tokens
        for index, ids in enumerate(prompt_ids):
            if len(ids) > limit:
                raise ValueError(
                    f"prompt {index} has {len(ids)} tokens but at most {limit} fit: the model's "
                    f"context is {self.context_length} positions and max_new_tokens={max_new_tokens}; "
                    "shorten the prompt or lower max_new_tokens"
                )

    @contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """Seed sampling without disturbing the caller's global RNG state."""
        if seed is None:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    # ------------------------------------------------------------------------------ weights

    def update_weights(self, path: str) -> None:
        """Load new policy weights between rounds.

        - a LoRA adapter folder (has adapter_config.json): applied to the base weights and merged
          for generation. It replaces the previously applied adapter (adapters never stack);
        - a full checkpoint folder (has config.json) of the same architecture: replaces the
          weights, and becomes the base that later adapters apply to.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"update_weights: {folder} is not a folder; pass a checkpoint folder (config.json + "
                "safetensors) or a LoRA adapter folder (adapter_config.json)"
            )
        if (folder / "adapter_config.json").is_file():
            self._apply_adapter(folder)
        elif (folder / "config.json").is_file():
            self._load_checkpoint(folder)
        else:
            raise FileNotFoundError(
                f"update_weights: {folder} has neither adapter_config.json (LoRA adapter) nor "
                "config.json (full checkpoint)"
            )

    def _load_checkpoint(self, folder: Path) -> None:
        new_config = AutoConfig.from_pretrained(folder)
        current = self.model.config
        for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers"):
            if getattr(new_config, key, None) != getattr(current, key, None):
                raise ValueError(
                    f"update_weights: checkpoint {folder} has {key}={getattr(new_config, key, None)} but "
                    f"the running model has {getattr(current, key, None)}; pass a checkpoint of the same "
                    "architecture or build a new generator"
                )
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.model.dtype)
        self._adapted = None
        self._install(model.to(self.device))

    def _apply_adapter(self, folder: Path) -> None:
        from peft import PeftModel  # only adapter users pay for importing peft

        self._adapter_updates += 1
        name = f"update_{self._adapter_updates}"
        cannot_load = f"update_weights: could not load the LoRA adapter in {folder}"
        if self._adapted is None:
            try:  # injects LoRA layers into self.model in place; self.model stays what we call
                self._adapted = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{cannot_load}: {err!r}") from err
        else:
            previous = self._adapted.active_adapter
            self._adapted.unmerge_adapter()  # back to the base weights
            try:
                self._adapted.load_adapter(str(folder), adapter_name=name)
            except Exception as err:
                self._adapted.merge_adapter()  # a bad adapter leaves the previous one in force
                if isinstance(err, (KeyError, TypeError, ValueError)):
                    raise ValueError(f"{cannot_load}: {err!r}") from err
                raise
            self._adapted.set_adapter(name)
            self._adapted.delete_adapter(previous)
        # Merged LoRA layers run only their base layer, so generation costs what the base model does.
        self._adapted.merge_adapter()
        self.model.eval()


# ---------------------------------------------------------------------------------- helpers


def _check_sampling(sampling: SamplingParams) -> None:
    problems = []
    if sampling.n < 1:
        problems.append(f"n={sampling.n} must be >= 1")
    if sampling.max_new_tokens < 1:
        problems.append(f"max_new_tokens={sampling.max_new_tokens} must be >= 1")
    if sampling.temperature < 0:
        problems.append(f"temperature={sampling.temperature} must be >= 0 (0 means greedy)")
    if not 0 < sampling.top_p <= 1:
        problems.append(f"top_p={sampling.top_p} must be in (0, 1]")
    if sampling.top_k < 0:
        problems.append(f"top_k={sampling.top_k} must be >= 0 (0 disables it)")
    if problems:
        raise ValueError("SamplingParams: " + "; ".join(problems))


def _first_stop(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], stops: list[str]
) -> tuple[int, str] | None:
    """(tokens up to and including the one that completes the first stop string, text before that
    stop string), or None when no stop string occurs."""
    if not stops:
        return None

    def decoded(count: int) -> str:
        return tokenizer.decode(ids[:count], skip_special_tokens=True)

    if not any(stop in decoded(len(ids)) for stop in stops):
        return None
    low, high = 1, len(ids)  # binary search for the shortest prefix that contains a stop string
    while low < high:
        middle = (low + high) // 2
        if any(stop in decoded(middle) for stop in stops):
            high = middle
        else:
            low = middle + 1
    text = decoded(low)
    cut = min(text.find(stop) for stop in stops if stop in text)
    return low, text[:cut]


class _StopOnStrings(StoppingCriteria):
    """Marks a row done as soon as its generated text contains a stop string. Looks only at the
    generated tokens (never the prompt) and only at a short window at their end, so each step
    costs one small batch decode."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_width = prompt_width
        self.window = _BYTES_PER_CHAR * max(len(stop) for stop in stops) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_width :][:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _TokenLogprobRecorder(LogitsProcessor):
    """Records the raw log-prob of each generated token without keeping every step's logits.

    generate() runs custom processors before its temperature/top-k/top-p warpers, and our clean
    generation config adds no other processor, so it sees the raw logits. The token
    drawn from step t's distribution is only known at step t+1 (it is then the last input id), so
    one step's log-softmax stays pending until then, or until `finish` reads the final sequences.
    """

    def __init__(self, prompt_width: int) -> None:
        self.prompt_width = prompt_width
        self.by_position: dict[int, torch.Tensor] = {}  # position -> (rows,) log-prob of its token
        self.pending: tuple[int, torch.Tensor] | None = None  # (position, (rows, vocab) log-softmax)

    def _resolve_pending(self, sequences: torch.Tensor) -> None:
        position, log_probs = self.pending
        if position < sequences.shape[1]:
            chosen = sequences[:, position : position + 1].to(log_probs.device)
            self.by_position[position] = log_probs.gather(1, chosen).squeeze(1)
        self.pending = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.pending is not None:
            self._resolve_pending(input_ids)
        self.pending = (input_ids.shape[1], torch.log_softmax(scores.float(), dim=-1))
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, generated) log-probs aligned with `sequences[:, prompt_width:]`."""
        if self.pending is not None:
            self._resolve_pending(sequences)
        positions = range(self.prompt_width, sequences.shape[1])
        if not positions:
            return torch.zeros(sequences.shape[0], 0)
        return torch.stack([self.by_position[p].cpu() for p in positions], dim=1)
