"""Tiny Llama-style policies with a character-level tokenizer, and loading of any HF causal LM.

The tiny factory exists because nothing can be downloaded at run time on some machines: the
embedded default and every test build their model here, locally, from a seed.

    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(seed=0), tokenizer)
    save_model(model, tokenizer, "out/tiny")
    model, tokenizer = load_causal_lm("out/tiny")          # or a hub id such as "Qwen/Qwen2.5-0.5B"
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from tsllm.atomic import write_dir

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3, in this order
DEFAULT_ALPHABET = "".join(chr(code) for code in range(32, 127)) + "\n"  # printable ASCII + newline


# ---------------------------------------------------------------------------------- tokenizer


def build_char_tokenizer(alphabet: str | None = None) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet` (default: printable ASCII and "\\n"), after the
    special tokens <pad>=0, <bos>=1, <eos>=2, <unk>=3.

    Encoding prepends <bos> (as Llama tokenizers do); it never appends <eos>, so training code
    adds it to targets itself. Characters outside the alphabet become <unk>. Padding is on the left,
    which batched generation needs. Decoding concatenates characters, so
    `decode(encode(text), skip_special_tokens=True) == text` for any text over the alphabet.
    """
    alphabet = DEFAULT_ALPHABET if alphabet is None else alphabet
    if not alphabet:
        raise ValueError("build_char_tokenizer: the alphabet is empty; pass the characters to keep")
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for char in alphabet:
        vocab.setdefault(char, len(vocab))  # repeated characters keep their first id

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character is its own pre-token ([\s\S] also matches "\n", unlike ".").
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join tokens with nothing between them (default is a space)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,  # the default clean-up would eat spaces before "." or "'"
    )


# ---------------------------------------------------------------------------------- model


@dataclass
class TinyModelConfig:
    """Size of a tiny Llama. The defaults (~0.7M parameters with the default tokenizer) train on
    two CPU cores in minutes."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TinyModelConfig: hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )


def build_tiny_llama(config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by `config`, with the tokenizer's vocabulary and special
    token ids. The same seed always gives the same weights; the global RNG is left untouched."""
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama_config)
    return model.eval()


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> Path:
    """Save model (safetensors) and tokenizer into the folder `path`, replacing it if present.

    Written to a sibling temporary folder first and renamed into place, so a killed run never
    leaves a half-written checkpoint under `path`.
    """
    def write(folder: Path) -> None:
        model.save_pretrained(folder)  # safetensors is the default format
        tokenizer.save_pretrained(folder)

    return write_dir(path, write)


# ---------------------------------------------------------------------------------- loading

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
# "org/name" or "name": what a hub id looks like. Anything else that does not exist is a bad path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """A torch dtype from a name ("float32", "bf16", ...); "auto" is passed through."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'") from None


SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # one file, or shards


def require_safetensors(folder: str | os.PathLike, who: str) -> None:
    """Refuse a saved-model folder whose weights are not safetensors. Pickled weights
    (pytorch_model.bin) can run code when read, so they are never loaded, not even tried."""
    folder = Path(folder)
    if any((folder / name).is_file() for name in SAFETENSORS_WEIGHTS):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin"))
    found = f" (it has {', '.join(pickled)}: pickled weights, which tsllm never unpickles)" if pickled else ""
    raise FileNotFoundError(
        f"{who}: {folder} has no model.safetensors{found}; save the model with "
        "save_pretrained(folder) (safetensors is its default) where the weights are trusted"
    )


def load_causal_lm(
    path_or_hub_id: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load any HF causal LM and its tokenizer from a local folder, or from the hub when given a
    hub id and the machine has network. Returns (model in eval mode on `device`, tokenizer)."""
    torch_dtype = resolve_dtype(dtype)  # a bad dtype fails before any loading
    source = str(path_or_hub_id)
    local = Path(source).expanduser()
    how_to_fix = (
        "build one with tsllm.models.tiny.build_tiny_llama(...) and save_model(...), "
        "or pass a hub id such as 'org/model'"
    )
    # A missing path whose first folder exists ("out/typo") is a local typo, not a hub id: fail now
    # rather than after the hub client's retries (~50 s without network).
    first_folder_exists = "/" in source and Path(source.split("/")[0]).expanduser().is_dir()
    if not local.exists() and (first_folder_exists or not _HUB_ID.match(source)):
        raise FileNotFoundError(f"model path {source} does not exist; {how_to_fix}")
    if local.exists() and not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"model path {source} has no config.json, so it is not a saved model; {how_to_fix}"
        )
    if local.exists():
        require_safetensors(local, f"model path {source}")
    where = str(local) if local.exists() else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, use_safetensors=True)
    except OSError as err:
        if local.exists():
            raise
        raise FileNotFoundError(
            f"model path {source} does not exist locally and could not be loaded as a hub id "
            f"({err.__class__.__name__}: {err}); {how_to_fix}. Without network, set HF_HUB_OFFLINE=1 "
            "to skip the hub's retries"
        ) from err
    return model.to(device).eval(), tokenizer
