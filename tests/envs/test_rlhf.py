"""RLHF token-level env: terminal at EOS or the depth cap, rewards from a callable (cached per
leaf) and from a real (tiny, random, locally built) HF sequence-classification reward model."""

import json
import re
from pathlib import Path

import pytest

from tsllm.envs.base import DataError
from tsllm.envs.rlhf import HFRewardModel, RLHFEnv, TokenState, load_prompts

# The policy's vocabulary in these tests: token id -> character; id 0 is EOS.
VOCAB = ["<eos>"] + list("abcdefghij !")
EOS = 0


def decode(ids):
    return "".join(VOCAB[i] for i in ids)


class CountingReward:
    """Reward = number of 'a' characters in the response; counts calls to check caching."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt, response):
        self.calls += 1
        return float(response.count("a"))


def test_steps_append_tokens_and_terminal_at_eos_or_cap():
    env = RLHFEnv(CountingReward(), eos_id=EOS, decode=decode, max_depth=3)
    s = env.initial_state({"question": "Say a: "})
    assert s == TokenState("Say a: ", ()) and not env.is_terminal(s)
    s = env.step(env.step(s, 1), 1)  # "aa"
    assert s.tokens == (1, 1) and not env.is_terminal(s) and env.reward(s) == 0.0
    assert env.prompt(s) == "Say a: aa"
    ended = env.step(s, EOS)
    assert env.is_terminal(ended) and env.answer(ended) == "aa" and env.reward(ended) == 2.0
    capped = env.step(s, 2)  # third token hits max_depth=3
    assert env.is_terminal(capped) and env.answer(capped) == "aab" and env.reward(capped) == 2.0
    assert RLHFEnv(CountingReward(), eos_id=EOS, decode=decode).max_depth == 64


def test_rewards_are_cached_per_leaf_and_batched():
    reward = CountingReward()
    env = RLHFEnv(reward, eos_id=EOS, decode=decode)
    root = env.initial_state("p")
    leaf_a = env.step(env.step(root, 1), EOS)
    leaf_b = env.step(env.step(root, 2), EOS)
    inner = env.step(root, 1)
    assert env.rewards([leaf_a, inner, leaf_b, leaf_a]) == [1.0, 0.0, 0.0, 1.0]
    assert reward.calls == 2  # one per distinct terminal state; the inner state costs nothing
    assert env.reward(leaf_a) == 1.0 and reward.calls == 2


def test_load_prompts_from_list_and_jsonl(tmp_path):
    assert load_prompts(["x", "y"]) == [{"question": "x"}, {"question": "y"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "hello"}\n{"prompt": "bye"}\n')
    assert load_prompts(path, limit=1) == [{"question": "hello"}]
    path.write_text('{"prompt": "hello"}\n{"text": "no prompt"}\n')
    with pytest.raises(DataError, match=rf"{path}:2:"):
        load_prompts(path)


def test_load_prompts_from_text_and_jsonl_fixtures(tmp_path):
    fixtures = Path(__file__).parent / "fixtures"
    lines = [line for line in (fixtures / "rlhf_prompts.txt").read_text().splitlines() if line.strip()]
    assert load_prompts(fixtures / "rlhf_prompts.txt") == [{"question": line} for line in lines]
    rows = [json.loads(line) for line in (fixtures / "rlhf_prompts.jsonl").read_text().splitlines()]
    assert load_prompts(fixtures / "rlhf_prompts.jsonl", limit=2) == [{"question": r["prompt"]} for r in rows[:2]]
    bad = tmp_path / "prompts.txt"
    bad.write_bytes(b"Say hi.\n\nName a \xff color.\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:3: not UTF-8 text"):
        load_prompts(bad)


# --- a real HF reward model, built locally -------------------------------------------------
@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    """A randomly initialised 1-layer Llama sequence classifier (num_labels=1) with a
    character-level tokenizer, saved with save_pretrained: nothing is downloaded."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    chars = list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ!?.,:")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.LlamaForSequenceClassification(config)
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hf_reward_model_scores_match_a_direct_forward_pass(tiny_reward_model):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = HFRewardModel(tiny_reward_model)
    score = rm("Hello ", "world!")
    assert isinstance(score, float)
    tok = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    ids = tok("Hello world!", return_tensors="pt")
    ids.pop("token_type_ids", None)
    with torch.no_grad():
        expected = float(model(**ids).logits[0, 0])
    assert score == pytest.approx(expected, abs=1e-5)
    # Batching pads the shorter texts; each score must equal its unpadded single score.
    prompts, responses = ["Hi ", "A longer prompt here ", "x"], ["there", "and a reply", ""]
    batched = rm.score(prompts, responses)
    singles = [rm(p, r) for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(singles, abs=1e-5)
    assert len(set(round(s, 6) for s in batched)) == 3  # different texts, different scores


def test_env_with_reward_model_path(tiny_reward_model):
    env = RLHFEnv(str(tiny_reward_model), eos_id=EOS, decode=decode, max_depth=4)
    assert env.reward_fn._model is None  # loaded lazily, on the first reward
    leaf = env.step(env.step(env.step(env.initial_state("Say hi: "), 8), 9), EOS)  # "hi"
    assert env.reward(leaf) == pytest.approx(HFRewardModel(tiny_reward_model)("Say hi: ", "hi"), abs=1e-5)
    assert env.reward(env.step(env.initial_state("Say hi: "), 8)) == 0.0


def test_reward_model_must_have_one_label(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=1, num_key_value_heads=1, num_labels=2)
    transformers.LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_labels=1"):  # checked before weights or tokenizer load
        HFRewardModel(tmp_path)("a", "b")
