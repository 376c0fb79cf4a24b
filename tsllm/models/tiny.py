"""Tiny random-weight policies, their tokenizers, and loading of any HF causal LM.

The tiny factory exists because nothing can be downloaded at run time on some machines: the
embedded default and every test build their model here, locally, from a seed. Two tokenizers:
`char` (one token per character, the default) and `bpe` (byte-level BPE trained in seconds on the
task's own text, with Qwen's ChatML special tokens and chat template, as today's models have);
two architectures: `llama` (LlamaForCausalLM; grouped-query attention with num_kv_heads, as in
Llama 3) and `qwen2` (Qwen2ForCausalLM: biased q/k/v projections, tied embeddings).

    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(seed=0), tokenizer)
    config = TinyModelConfig(tokenizer="bpe", architecture="qwen2", num_kv_heads=2)
    model, tokenizer = build_tiny(config, texts)           # texts: what the BPE merges are learned from
    save_model(model, tokenizer, "out/tiny")
    model, tokenizer = load_causal_lm("out/tiny")          # or a hub id such as "Qwen/Qwen2.5-0.5B"
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
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


# Qwen2's special tokens: <|endoftext|> pads (and ends a document), <|im_start|> / <|im_end|>
# frame a chat turn; <|im_end|> is the end-of-sequence token, as in Qwen2's instruct models.
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
BPE_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0..2, in this order
BYTES = 256  # a byte-level vocabulary holds every byte, so no text is ever unknown
# Qwen2's pre-tokenizer split (Llama 3's, with digits one at a time). A piece never continues past a
# newline into the next line's first letter or digit, so the text of a state (lines joined by
# "\n") encodes to its parent's tokens followed by its own; punctuation may merge with the newlines
# after it (".\n" can be one token), which a stop string "\n" must then find inside a token.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
               r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2's ChatML template (without its default system prompt): a turn is
# "<|im_start|>{role}\n{content}<|im_end|>\n"; the generation prompt opens the assistant's turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_prompt_template(tokenizer: PreTrainedTokenizerBase | str, system_prompt: str | None = None) -> str:
    """The prompt template (holding "{question}") of `prompt_format: chat`: the tokenizer's chat
    template (or the template string given) applied to a system turn (when `system_prompt` is set)
    and a user turn holding the question, ending with the generation prompt that opens the
    assistant's turn; the steps follow it as lines."""
    if isinstance(tokenizer, str):  # a template alone: any tokenizer object renders it
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), chat_template=tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the policy's tokenizer has no chat template; use prompt_format plain, or a tokenizer "
                         "that has one (tiny.tokenizer bpe, or an instruct model's)")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": "{question}"})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Llama 3's template writes <|begin_of_text|> and its tokenizer adds it again when encoding (as
    # every consumer of this prompt does): keep one, the tokenizer's.
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512,
                        split_pattern: str | None = QWEN2_SPLIT) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (a task's prompts and solutions: seconds), with
    `vocab_size` entries at most: Qwen2's three special tokens (ids 0..2), the 256 bytes, then
    the merges. Like Qwen2 it adds no <bos>; <|im_end|> is eos, <|endoftext|> pads (left), and it
    carries the ChatML chat template. `split_pattern` is the pre-tokenizer's split (Qwen2's; None
    lets merges cross spaces and newlines, which tests use to put a stop string inside a token).
    Decoding is exact: `decode(encode(text)) == text` for any text."""
    if vocab_size < BYTES + len(BPE_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must be >= {BYTES + len(BPE_SPECIAL_TOKENS)} "
                         f"({BYTES} bytes and {len(BPE_SPECIAL_TOKENS)} special tokens)")
    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.pre_tokenizer = byte_level if split_pattern is None else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"), byte_level])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHATML_TEMPLATE,
    )


# Llama 3's special tokens: <|begin_of_text|> starts every encoded text (the tokenizer adds it, and
# the chat template writes it too), a turn is "<|start_header_id|>{role}<|end_header_id|>\n\n
# {content}<|eot_id|>", <|eot_id|> ends the instruct model's answer; there is no padding token.
BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
LLAMA3_SPECIAL_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT)
# Llama 3's instruct template without the date lines Llama 3.1+ adds to the system turn
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def build_llama3_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """`build_bpe_tokenizer`'s byte-level BPE (same split, same exact decoding) in Llama 3's layout:
    its five special tokens (ids 0..4), <|begin_of_text|> added when encoding, <|eot_id|> as eos,
    no padding token, and its header chat template. The stand-in of a Llama 3.x instruct model."""
    if vocab_size < BYTES + len(LLAMA3_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must be >= {BYTES + len(LLAMA3_SPECIAL_TOKENS)}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(LLAMA3_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT} $A", pair=f"{BEGIN_OF_TEXT} $A $B", special_tokens=[(BEGIN_OF_TEXT, 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BEGIN_OF_TEXT,
        eos_token=EOT,
        additional_special_tokens=[END_OF_TEXT, START_HEADER, END_HEADER],
        clean_up_tokenization_spaces=False,
        chat_template=LLAMA3_TEMPLATE,
    )


# ---------------------------------------------------------------------------------- model


@dataclass
class TinyModelConfig:
    """Size of a tiny Llama. The defaults (~0.7M parameters with the default tokenizer) train on
    two CPU cores in minutes."""

    hidden_size: int = field(default=128, metadata={"help": "width of the residual stream"})
    num_layers: int = field(default=4, metadata={"help": "transformer blocks"})
    num_heads: int = field(default=4, metadata={"help": "attention heads (must divide hidden_size)"})
    intermediate_size: int = field(default=256, metadata={"help": "width of the MLP"})
    max_position_embeddings: int = field(default=512, metadata={"help": "context length in tokens"})
    seed: int = field(default=0, metadata={"help": "seed of the random initial weights"})
    architecture: Literal["llama", "qwen2"] = field(default="llama", metadata={
        "help": "llama: LlamaForCausalLM; qwen2: Qwen2ForCausalLM (biased q/k/v, tied embeddings)"})
    num_kv_heads: int | None = field(default=None, metadata={
        "help": "key/value heads (grouped-query attention, as in Llama 3 and Qwen2; must divide "
                "num_heads); null: num_heads"})
    tokenizer: Literal["char", "bpe"] = field(default="char", metadata={
        "help": "char: one token per character; bpe: byte-level BPE trained on the task's own text, "
                "with ChatML special tokens and chat template"})
    vocab_size: int = field(default=512, metadata={
        "help": "bpe: the tokenizer's vocabulary size (>= 259: 256 bytes and 3 special tokens)"})

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.num_kv_heads is not None and (self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must be >= 1 and divide num_heads={self.num_heads}")
        if self.tokenizer == "bpe" and self.vocab_size < BYTES + len(BPE_SPECIAL_TOKENS):
            raise ValueError(f"vocab_size={self.vocab_size} must be >= {BYTES + len(BPE_SPECIAL_TOKENS)} "
                             f"({BYTES} bytes and {len(BPE_SPECIAL_TOKENS)} special tokens)")


def _model_shape(config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The config fields every tiny architecture shares: sizes from `config`, the tokenizer's
    vocabulary and special token ids."""
    return dict(vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads or config.num_heads,
                intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _seeded(model_class, model_config, seed: int):
    """`model_class(model_config)` with weights drawn from `seed`; the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(model_config).eval()


def build_tiny_llama(config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by `config`, with the tokenizer's vocabulary and special
    token ids. The same seed always gives the same weights; the global RNG is left untouched."""
    return _seeded(LlamaForCausalLM, LlamaConfig(**_model_shape(config, tokenizer)), config.seed)


def build_tiny_qwen2(config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 sized by `config` (Qwen2's own defaults otherwise: biased
    q/k/v projections, tied input and output embeddings), seeded like `build_tiny_llama`."""
    return _seeded(Qwen2ForCausalLM, Qwen2Config(**_model_shape(config, tokenizer), tie_word_embeddings=True),
                   config.seed)


def build_tiny_tokenizer(config: TinyModelConfig, texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """The tokenizer `config.tokenizer` names; `bpe` learns its merges from `texts`."""
    if config.tokenizer == "char":
        return build_char_tokenizer()
    texts = list(texts)
    if not texts:
        raise ValueError("tokenizer=bpe learns its vocabulary from the task's text, and none was given")
    return build_bpe_tokenizer(texts, config.vocab_size)


def build_tiny(config: TinyModelConfig, texts: Iterable[str] = (),
               tokenizer: PreTrainedTokenizerBase | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(fresh tiny model, its tokenizer) as `config` describes: the tokenizer is built (a BPE one
    trained on `texts`) unless given, the model is `config.architecture` with its vocabulary."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer(config, texts)
    build = build_tiny_qwen2 if config.architecture == "qwen2" else build_tiny_llama
    return build(config, tokenizer), tokenizer


# The stand-in of each model family the GPU recipes start from (configs/gsm8k/*_instruct.yaml): its
# architecture and tokenizer layout at a size that runs on a CPU in seconds. head_dim 32 is one vLLM's
# CPU attention serves; 4096 positions hold the recipes' generator.max_model_len.
STAND_IN_FAMILIES = {"qwen2.5": "qwen2", "llama3": "llama"}  # family -> architecture
STAND_IN_SHAPE = TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=128,
                                 max_position_embeddings=4096, tokenizer="bpe")


def build_stand_in(family: str, texts: Iterable[str], seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(random-weight model, tokenizer) standing in for an instruct model of `family` (qwen2.5:
    Qwen2 with the ChatML BPE tokenizer; llama3: Llama with Llama 3's BPE layout), the tokenizer
    trained on `texts` (the task's rows)."""
    if family not in STAND_IN_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(STAND_IN_FAMILIES)}")
    texts = list(texts)
    config = dataclasses.replace(STAND_IN_SHAPE, architecture=STAND_IN_FAMILIES[family], seed=seed)
    tokenizer = build_llama3_bpe_tokenizer(texts) if family == "llama3" else build_bpe_tokenizer(texts)
    return build_tiny(config, tokenizer=tokenizer)


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
