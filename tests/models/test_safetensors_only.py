"""Model folders are read as safetensors only: a folder holding pickled weights
(pytorch_model.bin), which transformers would otherwise load, is refused with a clear error
before anything is unpickled, both when a model is loaded and when a generator swaps weights."""

import shutil

import pytest
import torch

from tsllm.generation.hf import HFGenerator
from tsllm.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_llama, load_causal_lm, save_model

SMALL = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(a normal saved model, a copy whose weights are only a loadable pytorch_model.bin)."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(**SMALL), tokenizer)
    root = tmp_path_factory.mktemp("safetensors")
    good = save_model(model, tokenizer, root / "good")
    pickled = root / "pickled"
    shutil.copytree(good, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # transformers' default would load it
    return good, pickled


@pytest.fixture
def no_unpickling(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(args) or pytest.fail("unpickled"))
    return calls


def test_load_refuses_a_folder_with_only_pickled_weights(folders, no_unpickling):
    _, pickled = folders
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors \(it has pytorch_model\.bin"):
        load_causal_lm(pickled)
    assert no_unpickling == []


def test_update_weights_refuses_pickled_weights_and_keeps_the_running_model(folders, no_unpickling):
    good, pickled = folders
    generator = HFGenerator(good)
    before = {k: v.clone() for k, v in generator.model.state_dict().items()}
    with pytest.raises(FileNotFoundError, match=r"update_weights: .* no model\.safetensors"):
        generator.update_weights(pickled)
    assert no_unpickling == []
    assert all(torch.equal(before[k], v) for k, v in generator.model.state_dict().items())


def test_safetensors_folders_still_load(folders):
    good, _ = folders
    model, tokenizer = load_causal_lm(good)
    assert model.config.hidden_size == SMALL["hidden_size"] and tokenizer.pad_token_id == 0
