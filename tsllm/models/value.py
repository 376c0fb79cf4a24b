"""The value / outcome-reward model: a language-model backbone with a scalar head on every token.

It is transformers' `AutoModelForTokenClassification` with `num_labels=1` (HF-native: saves and
loads with `save_pretrained`, works with PEFT and DeepSpeed). The value of a prefix text is the
head's output at the prefix's LAST real token; the ORM is the same model read at a finished
trajectory. The head is a plain linear regression onto the targets (TS-LLM: MSE to returns in
[-1, 1]), with no squashing and no dropout (dropout would make values noisy and resumes inexact).

    model, tokenizer = build_value_model("out/policy")           # a causal-LM folder: backbone + new head
    model, tokenizer = build_value_model(tiny=TinyModelConfig())  # a fresh tiny backbone
    model = add_lora(model, r=8, alpha=16)                        # optional
    save_value_model(model, tokenizer, "out/value")               # merged, safetensors, atomic
    values = ValueFunction("out/value")(["Input: 4 4 6 8\\n", ...])

Tokenizers: the policy/value bridge hands the value model TEXT (env.prompt(state)), never token
ids, so a value model with another tokenizer still scores the right prefixes. What differs is cost
accounting (value tokens are counted in the value tokenizer) and, usually, intent: a value model
is normally initialised from the policy. `check_same_tokenizer` therefore raises by default and
explains; pass `allow_different=True` to accept a different tokenizer on purpose (a warning).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DynamicCache,
    LlamaForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2ForTokenClassification,
)

from tsllm.atomic import write_dir
from tsllm.models.tiny import (
    TinyModelConfig,
    build_tiny,
    resolve_dtype,
)

LORA_TARGETS_DEFAULT = "all-linear"  # every linear layer of the backbone; the head is fully trained


def build_value_model(
    backbone: str | os.PathLike | None = None,
    tiny: TinyModelConfig | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str | torch.dtype = "float32",
    head_seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(value model in train mode, tokenizer). Exactly one of:
    - `backbone`: a saved causal LM (its body is loaded, the head is new, seeded by `head_seed`)
      or a saved value model (loaded whole), a local folder or a hub id;
    - `tiny`: a fresh tiny model built from the config with its char tokenizer (or `tokenizer`;
      a BPE one must be given, since it is trained on the task's text).
    """
    if (backbone is None) == (tiny is None):
        raise ValueError("build_value_model: pass exactly one of backbone=<model folder> or tiny=TinyModelConfig(...)")
    with torch.random.fork_rng(devices=[]):  # the head's init must not depend on, or move, the global RNG
        torch.manual_seed(head_seed)
        if tiny is not None:
            body, tokenizer = build_tiny(tiny, tokenizer=tokenizer)
            config = body.config
            config.num_labels, config.classifier_dropout = 1, 0.0
            head_class = Qwen2ForTokenClassification if tiny.architecture == "qwen2" else LlamaForTokenClassification
            model = head_class(config)
            model.model.load_state_dict(body.model.state_dict())
        else:
            source = str(backbone)
            if Path(source).expanduser().exists() and not (Path(source).expanduser() / "config.json").is_file():
                raise FileNotFoundError(f"value backbone {source} has no config.json, so it is not a saved "
                                        "model; save one with tsllm.models.tiny.save_model or pass tiny=...")
            config = AutoConfig.from_pretrained(source, num_labels=1)
            # Set after loading: a keyword the config class does not declare (Llama has no
            # classifier_dropout) is dropped by from_pretrained, and the head would get 0.1.
            config.classifier_dropout = 0.0
            model = AutoModelForTokenClassification.from_pretrained(source, config=config, dtype=resolve_dtype(dtype),
                                                                    use_safetensors=True)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("build_value_model: the tokenizer has neither a pad nor an eos token; set one")
        tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked; any id will do
    model.config.pad_token_id = tokenizer.pad_token_id
    head_dropout = getattr(model, "dropout", None)
    if isinstance(head_dropout, torch.nn.Dropout) and head_dropout.p != 0.0:  # noisy values, inexact resumes
        raise ValueError(f"build_value_model: {type(model).__name__} ignored classifier_dropout=0.0 "
                         f"(its head has dropout {head_dropout.p})")
    return model.train(), tokenizer


def add_lora(model: PreTrainedModel, r: int = 8, alpha: int = 16,
             target_modules: str | Sequence[str] = LORA_TARGETS_DEFAULT, dropout: float = 0.0):
    """`model` wrapped with LoRA adapters (PEFT TOKEN_CLS); the scalar head stays fully trainable
    (modules_to_save), since it starts from random."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(task_type=TaskType.TOKEN_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=targets, modules_to_save=["score"])
    return get_peft_model(model, config)


def merged(model) -> PreTrainedModel:
    """A plain value model: LoRA adapters folded into the weights (the model itself if none)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_value_model(model, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> Path:
    """Save a value model (merged if it carries LoRA) and its tokenizer to the folder `path` as
    safetensors, via a temporary sibling renamed into place: never a half-written folder."""
    plain = merged(model)

    def write(folder: Path) -> None:
        plain.save_pretrained(folder)  # safetensors is the default format
        tokenizer.save_pretrained(folder)

    return write_dir(path, write)


def load_value_model(path: str | os.PathLike, dtype: str | torch.dtype = "float32",
                     device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(value model in eval mode, tokenizer) from a folder written by `save_value_model`, or from a
    PEFT adapter folder whose base model is recorded in its adapter_config.json."""
    folder = Path(path).expanduser()
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base:
            raise FileNotFoundError(f"{folder} is a LoRA adapter without a recorded base model; load the "
                                    "merged model (the trainer writes it to <output_dir>/model)")
        model, _ = build_value_model(base, dtype=dtype)
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(folder if (folder / "tokenizer_config.json").is_file() else base)
    else:
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"value model folder {folder} has no config.json; train one with "
                                    "recipes/train_value.py (it writes <output_dir>/model)")
        config = AutoConfig.from_pretrained(folder)
        if config.num_labels != 1:
            raise ValueError(f"{folder} holds a model with num_labels={config.num_labels}, not a value model "
                             "(num_labels=1); to start a value model from a causal LM use build_value_model")
        model = AutoModelForTokenClassification.from_pretrained(folder, dtype=resolve_dtype(dtype),
                                                                use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer


# ------------------------------------------------------------------------------- scoring


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them (a plain
    forward numbers positions 0..T-1 including the pads)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, attention mask) of `rows` padded on the left to the longest row."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[index, width - len(row) :] = 1
    return ids, mask


def shared_prefix_groups(rows: Sequence[Sequence[int]], max_group: int | None = None) -> list[tuple[int, list[int]]]:
    """Rows that start alike, as `(prefix length, row indices)` groups: every row of a group
    starts with the group's first `prefix length` tokens and has at least one token after them.

    Scoring a group runs its prefix once and the rest of each row on top, so a group of k rows
    costs (sum of their lengths) - (k - 1) * prefix tokens. In sorted order rows that share a
    prefix sit together, and the groups are the runs of that order of least total cost (a
    dynamic programme over where runs end). Children of one tree node share the node's text, so
    they end up in one group. Groups hold at most `max_group` rows (a batch: bigger ones would be
    split anyway), which also bounds the work to rows x max_group."""
    order = sorted(range(len(rows)), key=lambda i: list(rows[i]))
    lengths = [len(rows[i]) for i in order]
    common = [0] * len(order)  # common[k]: tokens row order[k] shares with row order[k - 1]
    for k in range(1, len(order)):
        a, b = rows[order[k - 1]], rows[order[k]]
        common[k] = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    best = [0] * (len(order) + 1)  # best[end]: least cost of order[:end]
    start_of = [0] * (len(order) + 1)  # where the last run of that best split starts
    prefix_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best[end] = -1
        prefix, total = lengths[end - 1] - 1, 0
        for start in range(end - 1, max(-1, end - 1 - (max_group or end)), -1):  # last run: order[start:end]
            total += lengths[start]
            prefix = min(prefix, lengths[start] - 1, common[start + 1] if start < end - 1 else prefix)
            cost = best[start] + total - (end - start - 1) * prefix
            if best[end] < 0 or cost < best[end]:
                best[end], start_of[end], prefix_of[end] = cost, start, prefix
            if prefix == 0:  # a longer run shares nothing: never cheaper than splitting here
                break
    groups = []
    end = len(order)
    while end:
        start = start_of[end]
        groups.append((prefix_of[end], order[start:end]))
        end = start
    return groups[::-1]


class PrefixKVStore:
    """The KV caches of texts already scored, so that a later text extending one of them (a child
    of a scored tree node) runs only its new tokens. Keyed by token ids; the least recently used
    entries go once the stored tensors pass `max_bytes`. The caches belong to the weights they
    were computed with: `clear()` after changing the model."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.lengths: Counter[int] = Counter()  # how many entries have each length
        self._longest_first: list[int] | None = None  # the lengths, sorted, until one comes or goes

    def longest_prefix(self, row: Sequence[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """(k, per-layer (keys, values) of row[:k]) for the longest stored proper prefix of `row`,
        or (0, None). Only lengths some entry has are tried (a slice and a lookup each)."""
        if self._longest_first is None:
            self._longest_first = sorted(self.lengths, reverse=True)
        for length in self._longest_first:
            if length >= len(row):
                continue
            key = tuple(row[:length])
            if key in self.entries:
                self.entries.move_to_end(key)
                return length, self.entries[key]
        return 0, None

    def add(self, row: Sequence[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        key, size = tuple(row), _nbytes(layers)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = layers
        self.lengths[len(key)] += 1
        self._longest_first = None
        self.bytes += size
        while self.bytes > self.max_bytes:
            old_key, old = self.entries.popitem(last=False)
            self.lengths[len(old_key)] -= 1
            if not self.lengths[len(old_key)]:
                del self.lengths[len(old_key)]
            self.bytes -= _nbytes(old)

    def clear(self) -> None:
        self.entries.clear()
        self.lengths.clear()
        self._longest_first = None
        self.bytes = 0


def _nbytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(t.numel() * t.element_size() for pair in layers for t in pair)


class ValueFunction:
    """Scores prefix texts: `values = ValueFunction(model_or_path)(texts)`, one float per text.

    Each text is read at its last real token. A causal model's value at a token depends only on
    the tokens up to it, so work on shared beginnings is done once and the values stay those of
    a full forward:
    - texts of one call that start alike (the children of one tree node share the node's text)
      form groups (see `shared_prefix_groups`): a group's prefix runs once, its KV cache is
      copied to the members, and only the rest of each text runs on top;
    - the KV caches of scored texts are kept (`kv_cache_mib`, least recently used dropped first),
      so a later text that extends one (a child of a node scored in an earlier round) runs only
      its own tokens. `clear_cache()` after changing the model's weights.
    Models whose attention is not causal, or `share_prefixes=False`, score every text whole.
    Batches hold up to `max_batch_size` texts. `tokens_scored` counts the texts' tokens,
    `tokens_computed` those actually run through the model, `calls` the batches.
    """

    def __init__(self, model_or_path, tokenizer: PreTrainedTokenizerBase | None = None,
                 max_batch_size: int = 64, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32", share_prefixes: bool = True,
                 kv_cache_mib: float = 256.0) -> None:
        if isinstance(model_or_path, (str, os.PathLike)):
            model, loaded = load_value_model(model_or_path, dtype=dtype, device=device)
            tokenizer = tokenizer or loaded
        else:
            model = model_or_path
            if tokenizer is None:
                raise ValueError("ValueFunction: a model object needs its tokenizer; pass tokenizer=...")
        if max_batch_size < 1:
            raise ValueError(f"ValueFunction: max_batch_size must be >= 1, got {max_batch_size}")
        if kv_cache_mib < 0:
            raise ValueError(f"ValueFunction: kv_cache_mib must be >= 0 (0 turns the cache off), got {kv_cache_mib}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.share_prefixes = share_prefixes and any(getattr(m, "is_causal", False) for m in model.modules())
        self.kv_store = PrefixKVStore(int(kv_cache_mib * 2**20)) if self.share_prefixes and kv_cache_mib else None
        self.tokens_scored = 0
        self.tokens_computed = 0
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        if self.kv_store is not None:
            self.kv_store.clear()

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> list[float]:
        texts = list(texts)
        if not texts:
            return []
        rows = self.tokenizer(texts)["input_ids"]
        self.tokens_scored += sum(len(row) for row in rows)
        stored: dict[int, list] = {}  # text index -> KV of its longest stored prefix
        groups: list[tuple[int, list[int]]] = []
        if self.kv_store is not None:
            for index, row in enumerate(rows):
                length, layers = self.kv_store.longest_prefix(row)
                if layers is not None:
                    stored[index] = layers
                    groups.append((length, [index]))
        rest = [i for i in range(len(rows)) if i not in stored]
        if self.share_prefixes and rest and min(len(rows[i]) for i in rest) >= 2:
            groups += [(prefix, [rest[k] for k in members])
                       for prefix, members in shared_prefix_groups([rows[i] for i in rest], self.max_batch_size)]
        else:  # every text whole: a group of one with no prefix
            groups += [(0, [i]) for i in rest]
        values = [0.0] * len(texts)
        for batch in self._batches(rows, groups):
            for index, value in zip((i for _, members in batch for i in members), self._score(rows, batch, stored)):
                values[index] = value
        return values

    def _batches(self, rows, groups):
        """Groups packed into batches of at most `max_batch_size` texts, a group larger than a batch
        split. Pieces are ordered by the longest text after its prefix: that rest is what every
        layer runs padded to the batch's longest, while a prefix only pads the attention's keys."""
        pieces = [(prefix, members[k : k + self.max_batch_size]) for prefix, members in groups
                  for k in range(0, len(members), self.max_batch_size)]
        pieces.sort(key=lambda piece: (max(len(rows[i]) for i in piece[1]) - piece[0], piece[0]))
        batch: list[tuple[int, list[int]]] = []
        for piece in pieces:
            if batch and sum(len(m) for _, m in batch) + len(piece[1]) > self.max_batch_size:
                yield batch
                batch = []
            batch.append(piece)
        if batch:
            yield batch

    def _score(self, rows, batch: list[tuple[int, list[int]]], stored: dict[int, list]) -> list[float]:
        """Values of the batch's texts in group order: each group's prefix KV (stored, or run once
        now) copied to its members, then each member's remaining tokens run on top of it."""
        pad = self.tokenizer.pad_token_id
        owners = torch.tensor([g for g, (_, members) in enumerate(batch) for _ in members], device=self.device)
        members = [i for _, group in batch for i in group]
        cache, mask = self._prefix_cache(rows, batch, stored)
        if cache is not None and len(members) > len(batch):  # a group of several: copy its prefix per member
            cache.reorder_cache(owners)
            mask = mask[owners]
        rest_ids, rest_mask = (t.to(self.device) for t in left_padded(
            [rows[i][prefix:] for prefix, group in batch for i in group], pad))
        full_mask = rest_mask if mask is None else torch.cat([mask, rest_mask], dim=1)
        positions = position_ids_for(full_mask)[:, -rest_ids.shape[1] :]
        logits = self.model(input_ids=rest_ids, attention_mask=full_mask, position_ids=positions,
                            past_key_values=cache, use_cache=cache is not None).logits
        self.tokens_computed += int(rest_mask.sum())
        self.calls += 1
        if self.kv_store is not None and cache is not None:  # keep each text's KV for its extensions
            for row, index in enumerate(members):
                real = full_mask[row].nonzero()[:, 0]
                self.kv_store.add(rows[index], [(layer.keys[row].index_select(1, real),
                                                 layer.values[row].index_select(1, real)) for layer in cache.layers])
        return logits[:, -1, 0].float().tolist()

    def _prefix_cache(self, rows, batch, stored) -> tuple[DynamicCache | None, torch.Tensor | None]:
        """One row per group: the KV cache of its prefix, left-padded, and its attention mask;
        prefixes not in `stored` are run now, in one forward. (None, None) when no group has one."""
        past = [stored.get(group[0]) if prefix else None for prefix, group in batch]
        compute = [g for g, (prefix, group) in enumerate(batch) if prefix and past[g] is None]
        if compute:
            ids, mask = (t.to(self.device) for t in left_padded(
                [rows[batch[g][1][0]][: batch[g][0]] for g in compute], self.tokenizer.pad_token_id))
            cache = DynamicCache()
            self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask),
                       past_key_values=cache, use_cache=True)
            self.tokens_computed += int(mask.sum())
            for k, g in enumerate(compute):
                real = mask[k].bool()
                past[g] = [(layer.keys[k][:, real], layer.values[k][:, real]) for layer in cache.layers]
        if all(p is None for p in past):
            return None, None
        first = next(p for p in past if p is not None)
        width = max(p[0][0].shape[1] for p in past if p is not None)
        mask = torch.zeros((len(past), width), dtype=torch.long, device=self.device)
        layers = [(keys.new_zeros((len(past), *keys.shape[:1], width, keys.shape[2])),
                   values.new_zeros((len(past), *values.shape[:1], width, values.shape[2])))
                  for keys, values in first]
        for g, prefix_layers in enumerate(past):
            if prefix_layers is None:
                continue
            length = prefix_layers[0][0].shape[1]
            mask[g, width - length :] = 1
            for (keys, values), (k, v) in zip(layers, prefix_layers):
                keys[g, :, width - length :] = k
                values[g, :, width - length :] = v
        cache = DynamicCache()
        for index, (keys, values) in enumerate(layers):
            cache.update(keys, values, index)
        return cache, mask


# ------------------------------------------------------------------------------- tokenizers


def check_same_tokenizer(policy_tokenizer: PreTrainedTokenizerBase, value_tokenizer: PreTrainedTokenizerBase,
                         allow_different: bool = False) -> bool:
    """True if both tokenizers map the same strings to the same ids (vocabulary and bos/eos).
    Otherwise ValueError naming the first difference, or, with `allow_different=True`, a warning
    and False: scoring still works (the value model gets text), see the module docstring."""
    difference = _tokenizer_difference(policy_tokenizer, value_tokenizer)
    if difference is None:
        return True
    message = (f"policy and value tokenizers differ: {difference}. The value model scores text, so this "
               "works, but it usually means the wrong value checkpoint; build the value model from the "
               "policy (build_value_model(<policy folder>)) or pass allow_different=True if intended")
    if not allow_different:
        raise ValueError(message)
    warnings.warn(message, stacklevel=2)
    return False


def _tokenizer_difference(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> str | None:
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    if len(vocab_a) != len(vocab_b):
        return f"vocabulary sizes {len(vocab_a)} vs {len(vocab_b)}"
    for token, index in sorted(vocab_a.items(), key=lambda kv: kv[1]):
        if vocab_b.get(token) != index:
            return f"token {token!r} has id {index} vs {vocab_b.get(token)}"
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} {getattr(a, name)} vs {getattr(b, name)}"
    return None
