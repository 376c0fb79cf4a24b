"""The loop's gsm8k and rlhf tasks and the shipped GPU / DeepSpeed configs.

The GPU configs ship with /path/to/ placeholders: each placeholder (and a missing path) must stop
the run at start naming its key, and with the paths pointed at small files made here (a tiny
model saved with tsllm.models.tiny, a reward model built from it, a few GSM8k rows, a few prompts)
the configs validate. One tiny round of each task then runs for real on the CPU."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaForSequenceClassification

from tsllm.cli import main
from tsllm.config import ConfigError, load_config
from tsllm.loop import LoopConfig
from tsllm.models.tiny import (
    TinyModelConfig,
    build_char_tokenizer,
    build_tiny_llama,
    save_model,
)
from tsllm.tasks.rlhf import response_pieces

REPO = Path(__file__).resolve().parents[1]
GSM8K_ROWS = REPO / "tests" / "envs" / "fixtures" / "gsm8k_sample.jsonl"
PROMPTS = ["Say hi.", "Name a color.", "Count to three.", "Tell a joke.", "Greet me."]
# What a tiny CPU round changes in a GPU config: no vLLM, fp32, one small round.
SMALL = {"backend": "hf", "rounds": 1, "samples_per_question": 2, "test_questions": 2,
         "tracking": {"report_to": "none"},
         "search": {"algorithm": "mcts_alpha", "knobs": {"num_simulations": 2, "width": 2}},
         "value": {"num_train_epochs": 1}, "policy": {"num_train_epochs": 1.0, "eval_fraction": 0.0}}


def small_config(path: Path, tmp_path: Path, **changes) -> Path:
    """The shipped config `path` shrunk to a tiny CPU round (SMALL, then `changes`), as a file."""
    data = yaml.safe_load(path.read_text())
    data.pop("generator", None)  # vLLM engine settings
    for section in ("value", "policy"):
        data[section] = {k: v for k, v in data[section].items() if k not in ("mixed_precision", "deepspeed")}
    for key, value in {**SMALL, **changes}.items():
        data[key] = {**data[key], **value} if key in ("value", "policy") else value
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(data))
    return small


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("task_files")
    tokenizer = build_char_tokenizer()
    policy = build_tiny_llama(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64,
                                              max_position_embeddings=4096), tokenizer)  # Llama-2's context
    save_model(policy, tokenizer, root / "policy")
    policy.config.num_labels = 1
    torch.manual_seed(0)
    save_model(LlamaForSequenceClassification(policy.config), tokenizer, root / "reward")
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    shutil.copy(GSM8K_ROWS, root / "gsm8k.jsonl")
    return {"base_model": str(root / "policy"), "value_backbone": str(root / "policy"),
            "reward_model": str(root / "reward"), "gsm8k": str(root / "gsm8k.jsonl"),
            "prompts": str(root / "prompts.jsonl")}


def real_paths(path: Path, files: dict[str, str]) -> dict[str, str]:
    """key=value for every placeholder of a shipped config, pointed at the files made here."""
    data = files["prompts"] if "rlhf" in path.parts else files["gsm8k"]
    paths = {"base_model": files["base_model"], "train_data": data, "test_data": data}
    if "rlhf" in path.parts:
        paths["reward_model"] = files["reward_model"]
    else:
        paths["value_backbone"] = files["value_backbone"]
    return paths


GPU_CONFIGS = sorted((REPO / "configs").glob("gsm8k/*.yaml")) + sorted((REPO / "configs").glob("rlhf/*.yaml"))


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_gpu_configs_name_each_placeholder_and_validate_with_real_paths(path, files):
    text = path.read_text()
    launch = text.splitlines()[0]
    assert re.match(r"# (torchrun|accelerate launch) .*recipes/iterate\.py --config ", launch), launch
    assert launch.endswith(str(path.relative_to(REPO))), "the launch line must name this file"
    paths = real_paths(path, files)
    assert all(f"{key}: /path/to/" in text for key in paths), "every path the user fills is a placeholder"
    for key in paths:  # each placeholder alone stops the run, naming its key
        others = [f"{k}={v}" for k, v in paths.items() if k != key]
        with pytest.raises(ConfigError, match=rf"config key '{key}': /path/to/\S+ is a placeholder"):
            load_config(LoopConfig, path, others)
    missing = [f"{k}={v}" for k, v in paths.items() if k != "base_model"] + ["base_model=/no/such/model"]
    with pytest.raises(ConfigError, match="config key 'base_model': /no/such/model does not exist"):
        load_config(LoopConfig, path, missing)
    cfg = load_config(LoopConfig, path, [f"{k}={v}" for k, v in paths.items()])
    assert cfg.task == path.parent.name and cfg.rounds >= 1
    assert cfg.backend == ("hf" if cfg.task == "rlhf" else "vllm")


def test_deepspeed_configs_point_at_the_shipped_jsons():
    zero2 = load_config(LoopConfig, REPO / "configs" / "game24" / "tiny_oracle_zero2.yaml")
    assert zero2.value.deepspeed == "configs/deepspeed/zero2.json"
    text = (REPO / "configs" / "gsm8k" / "llama2_7b_zero3.yaml").read_text()
    assert text.count("deepspeed: configs/deepspeed/zero3.json") == 2  # value and policy


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for CPU-only machines")
def test_policy_deepspeed_over_several_cpu_processes_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"config key 'policy.deepspeed': .*several CPU processes"):
        load_config(LoopConfig, None, ["policy.deepspeed=configs/deepspeed/zero2.json"])
    load_config(LoopConfig, None, ["value.deepspeed=configs/deepspeed/zero2.json"])  # the value trainer can


@pytest.mark.parametrize("override, message", [
    (["task=rlhf"], "config key 'train_data': rlhf needs prompts"),
    (["task=gsm8k", "train_data=/nowhere/train.jsonl", "test_data=/nowhere/test.jsonl"],
     "config key 'train_data': /nowhere/train.jsonl does not exist"),
    (["task=gsm8k", "train_data=openai/gsm8k"], "config key 'test_data': set both"),
    (["reward_model=x"], "config key 'reward_model': task game24 generates its own problems"),
])
def test_task_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LoopConfig, None, override)


def test_rlhf_needs_the_hf_backend(files):
    paths = real_paths(REPO / "configs" / "rlhf" / "token_level.yaml", files)
    with pytest.raises(ConfigError, match="config key 'backend': rlhf's token-level search"):
        load_config(LoopConfig, None, ["task=rlhf", "backend=vllm", *(f"{k}={v}" for k, v in paths.items())])


def test_response_pieces_join_to_the_response_and_hold_visible_text():
    tokenizer = build_char_tokenizer()
    text = "Hi there,\n  friend!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    def decode(i):
        return tokenizer.decode(i, skip_special_tokens=True)
    pieces = response_pieces(decode, ids)
    assert "".join(pieces) == text
    assert all(p.strip() for p in pieces)  # whitespace rides with the next visible character
    assert pieces[:3] == ["H", "i", " t"]
    assert response_pieces(decode, []) == []
    assert response_pieces(decode, tokenizer(" ", add_special_tokens=False)["input_ids"]) == [" "]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gsm8k_round_on_the_tiny_model(files, tmp_path):
    config = REPO / "configs" / "gsm8k" / "llama2_7b.yaml"
    small = small_config(config, tmp_path, **real_paths(config, files), train_questions=3, max_step_tokens=16)
    out = tmp_path / "run"
    assert main(["run", "--config", str(small), "--output-dir", str(out), "--no-progress"]) == 0
    sampled = read_jsonl(out / "round_0" / "sample" / "trajectories.jsonl")
    assert len(sampled) == 3 * 2 and {r["task"] for r in sampled} == {"gsm8k"}
    questions = [row["question"] for row in read_jsonl(Path(files["gsm8k"]))]
    assert [r["question"] for r in sampled[::2]] == questions[:3]  # the file's problems, in order
    assert [r["round"] for r in read_jsonl(out / "rounds.jsonl")] == [0, 1]


def test_rlhf_round_on_the_tiny_model(files, tmp_path):
    config = REPO / "configs" / "rlhf" / "token_level.yaml"
    small = small_config(config, tmp_path, **real_paths(config, files), train_questions=4, max_response_tokens=5)
    out = tmp_path / "run"
    assert main(["run", "--config", str(small), "--output-dir", str(out), "--no-progress"]) == 0
    tokenizer = build_char_tokenizer()
    searched = read_jsonl(out / "round_0" / "search" / "trajectories.jsonl")
    assert searched and {r["task"] for r in searched} == {"rlhf"}
    for row in searched:  # token-level paths: pieces of the decoded response, scored by the reward model
        assert "".join(row["steps"]) == tokenizer.decode(row["response_ids"], skip_special_tokens=True)
        assert len(row["response_ids"]) <= 5
    best = {}
    for row in searched:
        if row["steps"] and (row["question"] not in best or row["reward"] > best[row["question"]]):
            best[row["question"]] = row["reward"]
    assert best, "no search path had a response to learn from"
    policy_data = out / "round_0" / "policy" / "policy_data.jsonl"
    # the policy learned from each prompt's top-reward response, whatever its sign
    assert {r["question"]: r["reward"] for r in read_jsonl(policy_data)} == best
    assert json.loads((out / "round_0" / "policy" / "done.json").read_text())["policy"].endswith("policy/model")
    rows = read_jsonl(out / "rounds.jsonl")
    assert all(isinstance(r["search_reward"], float) and isinstance(r["greedy_reward"], float) for r in rows)
