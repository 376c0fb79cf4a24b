"""Fixtures the policy trainer's tests share."""

import pytest

from tsllm.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_llama, save_model

SMALL = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=160)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A saved tiny Llama with the char tokenizer: the policy the trainer starts from."""
    tokenizer = build_char_tokenizer()
    path = tmp_path_factory.mktemp("models") / "base"
    save_model(build_tiny_llama(TinyModelConfig(**SMALL, seed=0), tokenizer), tokenizer, path)
    return path
