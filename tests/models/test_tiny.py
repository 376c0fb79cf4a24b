"""The tiny-model factory: character tokenizer, seeded tiny Llama, save/load round trips."""

import pytest
import torch
from transformers import AutoTokenizer

from tsllm.models.tiny import (
    DEFAULT_ALPHABET,
    TinyModelConfig,
    build_char_tokenizer,
    build_tiny_llama,
    load_causal_lm,
    save_model,
)

SMALL = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=64)
# Spaces around punctuation and contractions are what the default HF clean-up would rewrite.
AWKWARD_TEXT = "a b  c\n do n't , . ? ! 's\n\n  (4 + 4) * 3 = 24 (left: 24)\n" + DEFAULT_ALPHABET


def test_char_tokenizer_round_trips_text_exactly(tmp_path):
    tokenizer = build_char_tokenizer()
    ids = tokenizer(AWKWARD_TEXT)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == len(AWKWARD_TEXT) + 1  # <bos> + 1 per char
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == AWKWARD_TEXT

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(AWKWARD_TEXT)["input_ids"] == ids
    assert reloaded.decode(ids, skip_special_tokens=True) == AWKWARD_TEXT
    assert reloaded.padding_side == "left"
    assert [reloaded.pad_token_id, reloaded.bos_token_id, reloaded.eos_token_id, reloaded.unk_token_id] == [
        0,
        1,
        2,
        3,
    ]


def test_char_tokenizer_pads_left_and_marks_unknown_characters():
    tokenizer = build_char_tokenizer("ab\n")
    assert len(tokenizer) == 4 + 3
    batch = tokenizer(["ab", "abba"], padding=True)
    assert batch["input_ids"][0] == [0, 0, 1, 4, 5]
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1]
    assert tokenizer("az")["input_ids"] == [1, 4, tokenizer.unk_token_id]


def test_same_seed_gives_same_weights_and_other_seeds_differ():
    tokenizer = build_char_tokenizer()
    state = torch.get_rng_state()
    first = build_tiny_llama(TinyModelConfig(seed=3, **SMALL), tokenizer)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    again = build_tiny_llama(TinyModelConfig(seed=3, **SMALL), tokenizer)
    other = build_tiny_llama(TinyModelConfig(seed=4, **SMALL), tokenizer)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
    assert first.config.vocab_size == len(tokenizer)
    assert first.config.eos_token_id == tokenizer.eos_token_id


def test_save_then_load_gives_identical_logits(tmp_path):
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(seed=0, **SMALL), tokenizer)
    target = tmp_path / "tiny"
    save_model(model, tokenizer, target)
    assert (target / "model.safetensors").is_file()
    assert not list(target.glob("*.bin")) and not list(tmp_path.glob("tiny.*"))  # no pickles, no leftovers

    loaded, loaded_tokenizer = load_causal_lm(target)
    inputs = loaded_tokenizer(["12 + 12 = 24\n"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)

    # Saving again over an existing folder replaces it.
    model.lm_head.weight.data.mul_(2)
    save_model(model, tokenizer, target)
    reloaded, _ = load_causal_lm(target, dtype="float32")
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)


def test_missing_model_path_says_what_to_do(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="does not exist") as caught:
        load_causal_lm(missing)
    assert str(missing) in str(caught.value) and "build_tiny_llama" in str(caught.value)

    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(tmp_path)  # exists, but is not a saved model

    with pytest.raises(ValueError, match="unknown dtype"):
        load_causal_lm(tmp_path, dtype="float8")
