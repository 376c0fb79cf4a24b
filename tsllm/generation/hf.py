"""The transformers backend: batched sampling with a decode loop over a transformers causal LM.

Slower than vLLM (no prefix cache across calls) but it runs wherever transformers does, needs no
engine start-up, and works on any model object in memory. Within one call each prompt is encoded
once for all its samples, and rows leave the batch as soon as they stop (see
`HFGenerator._decode`); so a prompt's first completion reports `cached_tokens` 0 and its other
completions report the whole prompt as cached (they start from the first one's KV cache).

Log-probs: `Completion.logprob` is the sum, over the generated tokens, of the log-softmax of the
model's raw logits, i.e. the model's own distribution at temperature 1 before temperature, top-k
and top-p reshape it. That is the same quantity a forward pass over prompt + completion gives, it is
finite for every token, and it does not change with the sampling knobs, so priors built from it are
comparable across searches.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    Cache,
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StaticCache,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tsllm.generation import to_score
from tsllm.generation.prefix_tree import likely_enough, paid_for, prefix_tree
from tsllm.models.tiny import load_causal_lm, require_safetensors
from tsllm.models.value import left_padded, position_ids_for
from tsllm.types import Completion, FinishedCallback, SamplingParams

# A character can take up to 4 byte-level tokens, so a stop string of k characters ends within the
# last 4k generated tokens; one more absorbs decoding quirks at the window's first token.
_BYTES_PER_CHAR = 4


class HFGenerator:
    """`Generator` over a transformers causal LM.

    `model_or_path` is a model object (then `tokenizer` is required and the model keeps its own
    device and dtype) or a local folder / hub id (loaded with `load_causal_lm` on `device` in
    `dtype`). One `generate` call decodes all prompts in one batch (split only when prompts x n
    exceeds `max_batch_size` sequences).

    The generator owns decoding: sampling follows `SamplingParams` only, and the model's
    generation_config is replaced by one holding only the special-token ids, so sampling defaults
    shipped with a checkpoint (temperature, repetition penalty, ...) never leak into the searches.
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
        self._stop_tables: dict[tuple, torch.Tensor] = {}  # (stops, eos, vocab) -> tokens that stop a row
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
        self._static_cache = True  # until the architecture turns out not to support one
        self._keeps_last_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------------------ generate

    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 on_finished: FinishedCallback | None = None) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order. `on_finished([(prompt index,
        completion), ...])` is called after each batch (the vllm backend's interface; here nothing
        decodes meanwhile, so it only lets callers start on finished completions early)."""
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
        # prompts of similar length share a batch: every row of a batch pays for the longest
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        results: list[list[Completion]] = [[] for _ in prompt_ids]
        with self._seeded(sampling.seed):
            for start in range(0, len(order), prompts_per_call):
                chunk = order[start : start + prompts_per_call]
                batch = self._generate_batch([prompt_ids[i] for i in chunk], sampling, copies, stops)
                if greedy and sampling.n > 1:
                    batch = [[row[0]] + [_cached_copy(row[0]) for _ in range(sampling.n - 1)] for row in batch]
                for index, row in zip(chunk, batch):
                    results[index] = row
                if on_finished is not None:
                    on_finished([(index, completion) for index, row in zip(chunk, batch) for completion in row])
        return results

    def _generate_batch(
        self, prompt_ids: list[list[int]], sampling: SamplingParams, copies: int, stops: list[str]
    ) -> list[list[Completion]]:
        """Sample `copies` completions of each prompt in one batch (see `_decode`)."""
        generated, logprobs, lengths = self._decode(prompt_ids, sampling, copies, stops)
        generated, logprobs, lengths = generated.tolist(), logprobs.tolist(), lengths.tolist()
        # rows are prompt-major: prompt 0's copies first, then prompt 1's, ...
        return [
            [
                self._completion(generated[row][: lengths[row]], logprobs[row], len(ids), stops,
                                 cached=row > index * copies)
                for row in range(index * copies, (index + 1) * copies)
            ]
            for index, ids in enumerate(prompt_ids)
        ]

    @torch.inference_mode()
    def _decode(
        self, prompt_ids: list[list[int]], sampling: SamplingParams, copies: int, stops: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, their raw log-probs, generated length) per row; rows = prompts x copies.

        Why not `model.generate`: it encodes a prompt once per sample, and it keeps decoding rows
        that already stopped until the longest row ends. Here each prompt is encoded once and its
        KV cache copied for its samples, and rows that stopped (eos, stop string, length) leave
        the batch, so a step pays only for rows still running."""
        device, max_new = self.device, sampling.max_new_tokens
        input_ids, prompt_mask = left_padded(prompt_ids, self.tokenizer.pad_token_id)
        width = input_ids.shape[1]
        # generated positions are real from the start; the causal mask hides those not reached yet
        mask = torch.cat([prompt_mask, torch.ones((len(prompt_ids), max_new), dtype=torch.long)], dim=1)
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = position_ids_for(mask)

        cache = self._new_cache(width + max_new)
        logits = self._forward(input_ids, mask[:, :width], positions[:, :width], cache)
        rows = torch.arange(len(prompt_ids), device=device).repeat_interleave(copies)
        if copies > 1:  # every sample of a prompt starts from the prompt's one KV cache
            cache.reorder_cache(rows)
            logits, mask, positions = logits[rows], mask[rows], positions[rows]

        total = len(rows)
        generated = torch.full((total, max_new), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((total, max_new), dtype=torch.float32, device=device)
        lengths = torch.full((total,), max_new, dtype=torch.long, device=device)
        alive = torch.arange(total, device=device)  # the output row of each batch row
        running = torch.ones(total, dtype=torch.bool, device=device)  # batch rows not stopped yet
        stop_checker = _StopChecker(self.tokenizer, stops, self.eos_ids, self._stop_tables, device)
        warpers = _warpers(sampling)
        for step in range(max_new):
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            tokens = self._pick(logits, warpers)
            generated[alive, step] = tokens
            logprobs[alive, step] = log_probs.gather(1, tokens[:, None])[:, 0]
            stopped = running & stop_checker(tokens, generated, alive, step, logits.shape[-1])
            lengths[alive[stopped]] = step + 1
            running &= ~stopped
            if step == max_new - 1 or not running.any():
                break
            if _worth_compacting(running):  # drop stopped rows from the batch and its cache
                keep = running.nonzero()[:, 0]
                cache.reorder_cache(keep)
                alive, tokens, mask, positions = alive[keep], tokens[keep], mask[keep], positions[keep]
                running = running[keep]
            column = width + step
            logits = self._forward(tokens[:, None], mask[:, : column + 1], positions[:, column : column + 1], cache)
        return generated, logprobs, lengths

    # ------------------------------------------------------------------------------ score

    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]],
              cutoff: float = 0.0) -> list[list[Completion]]:
        """The log-probability of each continuation after its prompt (the `Scorer` interface):
        one Completion per continuation, in order. Each prompt is encoded and run once; its KV
        cache is copied for its continuations, which run as a prefix tree (each shared prefix
        once). So a prompt's first continuation reports `cached_tokens` 0 and the others the whole
        prompt, as `generate` reports its samples, and a continuation's `num_tokens` counts only
        its tokens no earlier continuation of the prompt computed (`prefix_tree.PrefixTree.paid`;
        `token_ids` is always the whole continuation). A continuation is encoded on its own and
        appended to the prompt's ids (the ids a search step adds to its state).

        `cutoff` > 0 stops on unlikely branches (`prefix_tree.likely_enough`): at each depth of
        the tree, a prefix less than `cutoff` times as likely as that depth's likeliest is not run
        further, and every continuation under it gets log-prob -inf and counts only the tokens
        computed for it."""
        results: list[list[Completion]] = [[] for _ in prompts]
        todo = to_score(prompts, continuations)
        if not todo:
            return results
        prompt_ids = self.tokenizer([prompts[i] for i in todo], add_special_tokens=True)["input_ids"]
        cont_ids = [[self.tokenizer.encode(c, add_special_tokens=False) for c in continuations[i]] for i in todo]
        if any(not ids for conts in cont_ids for ids in conts):
            raise ValueError("score: a continuation is empty after tokenization")
        self._check_context(prompt_ids, max(len(ids) for conts in cont_ids for ids in conts))
        start = 0
        while start < len(todo):  # batches of at most max_batch_size continuations (one prompt at least)
            end, rows = start, 0
            while end < len(todo) and (end == start or rows + len(cont_ids[end]) <= self.max_batch_size):
                rows += len(cont_ids[end])
                end += 1
            sums, paid = self._score_batch(prompt_ids[start:end], cont_ids[start:end], cutoff)
            for k, row, row_paid in zip(range(start, end), sums, paid):
                results[todo[k]] = [
                    Completion(text=text, token_ids=ids, logprob=lp, num_tokens=n,
                               prompt_tokens=len(prompt_ids[k]), cached_tokens=len(prompt_ids[k]) if j else 0,
                               finish_reason="score")
                    for j, (text, ids, lp, n) in enumerate(zip(continuations[todo[k]], cont_ids[k], row, row_paid))]
            start = end
        return results

    @torch.inference_mode()
    def _score_batch(self, prompt_ids: list[list[int]], cont_ids: list[list[list[int]]], cutoff: float = 0.0
                     ) -> tuple[list[list[float]], list[list[int]]]:
        """(summed log-probs, tokens computed) of every continuation of every prompt: the prompts
        in one forward pass, then each prompt's continuations as a prefix tree, one forward pass
        per depth, every span on a copy of its parent's cache, so a prefix shared by several
        continuations is computed once (and paid by the first continuation through it); with
        `cutoff`, a depth runs only the spans under the prefixes the last depth kept."""
        device = self.device
        trees = [prefix_tree(conts) for conts in cont_ids]
        offsets = [0]  # every span of every tree in one list: tree k's span j is offsets[k] + j
        for tree in trees:
            offsets.append(offsets[-1] + len(tree.spans))
        spans = [(k, span) for k, tree in enumerate(trees) for span in tree.spans]
        depth = max(span.depth for _, span in spans)
        input_ids, mask = left_padded(prompt_ids, self.tokenizer.pad_token_id)
        mask = mask.to(device)
        longest = [max(len(span.ids) for _, span in spans if span.depth == d) for d in range(1, depth + 1)]
        cache = self._new_cache(input_ids.shape[1] + sum(longest))
        last = self._forward(input_ids.to(device), mask, position_ids_for(mask), cache)  # per row: next-token logits
        prefix_logprob: dict[int, float] = {}  # span index -> log-prob of the prompt's continuation up to its end
        kept: set[int] = set()  # spans run whose children run too
        row_of: dict[int, int] = {}  # span index -> its row in the level just run
        for d in range(1, depth + 1):
            level = [i for i, (k, span) in enumerate(spans)
                     if span.depth == d and (span.parent < 0 or offsets[k] + span.parent in kept)]
            if not level:
                break
            length = max(len(spans[i][1].ids) for i in level)
            parents = [-1 if span.parent < 0 else offsets[k] + span.parent for k, span in (spans[i] for i in level)]
            rows = torch.tensor([spans[i][0] if p < 0 else row_of[p] for i, p in zip(level, parents)], device=device)
            cache.reorder_cache(rows)
            span_ids = torch.full((len(level), length), self.tokenizer.pad_token_id, dtype=torch.long)
            span_mask = torch.zeros((len(level), length), dtype=torch.long)
            for r, i in enumerate(level):  # right padding: a pad after a span is masked for its children
                ids = spans[i][1].ids
                span_ids[r, : len(ids)] = torch.tensor(ids)
                span_mask[r, : len(ids)] = 1
            span_ids, span_mask = span_ids.to(device), span_mask.to(device)
            mask = torch.cat([mask[rows], span_mask], dim=1)
            out = self.model(input_ids=span_ids, attention_mask=mask, position_ids=position_ids_for(mask)[:, -length:],
                             past_key_values=cache, use_cache=True)
            # a span's first token is predicted by its parent's last position, token t by its t-1
            logits = torch.cat([last[rows][:, None, :], out.logits[:, :-1, :]], dim=1).float()
            logprobs = torch.log_softmax(logits, dim=-1).gather(2, span_ids[:, :, None])[:, :, 0]
            sums = (logprobs * span_mask).sum(dim=1).tolist()
            ends = span_mask.sum(dim=1) - 1
            last = out.logits[torch.arange(len(level), device=device), ends]
            row_of = {i: r for r, i in enumerate(level)}
            by_tree: dict[int, dict[int, float]] = {}
            for i, p, total in zip(level, parents, sums):
                prefix_logprob[i] = (0.0 if p < 0 else prefix_logprob[p]) + total
                by_tree.setdefault(spans[i][0], {})[i] = prefix_logprob[i]
            kept.update(*(likely_enough(group, cutoff) for group in by_tree.values()))
        logprob_sums, paid = [], []
        for k, tree in enumerate(trees):
            # a continuation counts when every span of it ran and was kept (its last one included)
            logprob_sums.append([prefix_logprob[offsets[k] + path[-1]] if all(offsets[k] + s in kept for s in path)
                                 else -math.inf for path in tree.paths])
            paid.append(paid_for(tree, {j for j in range(len(tree.spans)) if offsets[k] + j in prefix_logprob}))
        return logprob_sums, paid

    def _new_cache(self, length: int) -> Cache:
        """A preallocated KV cache of `length` positions: new tokens are written in place, where a
        growing cache copies itself at every step (most of a small model's decode time)."""
        if self._static_cache:
            try:
                return StaticCache(config=self.model.config, max_cache_len=length)
            except (TypeError, ValueError, NotImplementedError):
                self._static_cache = False  # an architecture StaticCache does not cover
        return DynamicCache()

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: Cache) -> torch.Tensor:
        """Logits at the last position of each row; `cache` grows by `input_ids`."""
        extra = {"logits_to_keep": 1} if self._keeps_last_logits else {}
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, **extra)
        return out.logits[:, -1, :]

    @staticmethod
    def _pick(logits: torch.Tensor, warpers: list[LogitsProcessor] | None) -> torch.Tensor:
        """Greedy (`warpers` None), or a sample from the warped distribution as `generate` draws it."""
        if warpers is None:
            return logits.argmax(dim=-1)
        scores = logits.float()
        for warp in warpers:
            scores = warp(None, scores)
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[:, 0]

    def _completion(
        self, generated: list[int], logprobs: list[float], prompt_len: int, stops: list[str], cached: bool
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
            cached_tokens=prompt_len if cached else 0,
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
        require_safetensors(folder, "update_weights")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.model.dtype, use_safetensors=True)
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
                if isinstance(err, (KeyError, TypeError, ValueError)):  # a bad adapter, not a bad call
                    raise ValueError(f"{cannot_load}: {err!r}") from err  # noqa: TRY004
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


def _cached_copy(completion: Completion) -> Completion:
    """Another greedy completion of the same prompt: identical, and computed from nothing."""
    duplicate = copy.deepcopy(completion)
    duplicate.cached_tokens = duplicate.prompt_tokens
    return duplicate


def _warpers(sampling: SamplingParams) -> list[LogitsProcessor] | None:
    """transformers' own sampling warpers, in the order `generate` applies them; None = greedy."""
    if sampling.temperature == 0:
        return None
    warpers: list[LogitsProcessor] = []
    if sampling.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=sampling.top_p))
    return warpers


def _worth_compacting(running: torch.Tensor) -> bool:
    """Shrink the batch once a quarter of its rows have stopped: copying the cache costs about
    one decode step, so compacting at every single stop would cost more than it saves."""
    return int((~running).sum()) * 4 >= len(running)


class _StopChecker:
    """Which rows stop at this step: they drew an eos token or completed a stop string.

    A stop string of one ASCII character lies inside a single token whatever the tokenizer (no
    token boundary splits it), so those are found from the token id alone, with a table of
    the tokens whose text contains one. Longer stop strings can straddle tokens: for them the
    last few generated tokens of every row are decoded (a window long enough for the longest)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[str], eos_ids: set[int],
                 table_cache: dict, device: torch.device) -> None:
        self.tokenizer, self.device, self.table_cache = tokenizer, device, table_cache
        self.eos_ids = eos_ids
        self.single = tuple(sorted({s for s in stops if len(s) == 1 and s.isascii()}))
        self.longer = [s for s in stops if s not in self.single]
        self.window = _BYTES_PER_CHAR * max((len(s) for s in self.longer), default=0) + 1
        self.table: torch.Tensor | None = None

    def _stop_table(self, vocab: int) -> torch.Tensor:
        key = (self.single, tuple(sorted(self.eos_ids)), vocab)
        if key not in self.table_cache:
            table = torch.zeros(vocab, dtype=torch.bool)
            known = min(vocab, len(self.tokenizer))
            texts = self.tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True)
            for token, text in enumerate(texts):
                table[token] = any(stop in text for stop in self.single)
            table[[i for i in self.eos_ids if i < vocab]] = True
            self.table_cache[key] = table.to(self.device)
        return self.table_cache[key]

    def __call__(self, tokens: torch.Tensor, generated: torch.Tensor, rows: torch.Tensor, step: int,
                 vocab: int) -> torch.Tensor:
        """`tokens` just drawn by the batch rows; `generated[rows]` holds their tokens so far."""
        if self.table is None:
            self.table = self._stop_table(vocab)
        done = self.table[tokens]
        if self.longer:
            tails = generated[rows, max(0, step + 1 - self.window) : step + 1].tolist()
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
            longer = [any(stop in text for stop in self.longer) for text in texts]
            done |= torch.tensor(longer, dtype=torch.bool, device=tokens.device)
        return done
