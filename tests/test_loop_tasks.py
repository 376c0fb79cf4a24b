"""The loop's gsm8k and rlhf tasks and the shipped GPU / DeepSpeed configs.

The GPU configs ship with /path/to/ placeholders: each placeholder (and a missing path) must stop
the run at start naming its key, and with the paths pointed at small files made here (a tiny
model saved with tsllm.models.tiny, a reward model built from it, a few GSM8k rows, a few prompts)
the configs validate. One tiny round of each task then runs for real on the CPU.

The recipes for today's instruct models (RECIPES) are validated with a stand-in of their family in
place of the hub model: a random-weight model of the same architecture and tokenizer layout
(tsllm.models.tiny.build_stand_in), and each runs one round from its own file with counts shrunk."""

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
    build_stand_in,
    build_tiny_llama,
    save_model,
)
from tsllm.tasks.base import TaskSettings, prompt_template
from tsllm.tasks.rlhf import response_pieces

REPO = Path(__file__).resolve().parents[1]
GSM8K_ROWS = REPO / "tests" / "envs" / "fixtures" / "gsm8k_sample.jsonl"
PROMPTS = ["Say hi.", "Name a color.", "Count to three.", "Tell a joke.", "Greet me."]
# What a tiny CPU round changes in a GPU config: no vLLM, fp32, one small round.
SMALL = {"backend": "hf", "rounds": 1, "samples_per_question": 2, "test_questions": 2,
         "tracking": {"report_to": "none"},
         "search": {"algorithm": "mcts_alpha", "knobs": {"num_simulations": 2, "width": 2}},
         "value": {"num_train_epochs": 1}, "policy": {"num_train_epochs": 1.0, "eval_fraction": 0.0}}
# The instruct-model recipes and the family of the model each starts from.
RECIPES = {"qwen2.5_0.5b_instruct.yaml": "qwen2.5", "qwen2.5_1.5b_instruct.yaml": "qwen2.5",
           "llama3.2_1b_instruct.yaml": "llama3"}


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
    rows = read_jsonl(GSM8K_ROWS)
    for family in sorted(set(RECIPES.values())):  # the BPE learns the rows' own text, as build_tiny does
        save_model(*build_stand_in(family, [f"{r['question']}\n{r['answer']}" for r in rows]), root / family)
    return {"base_model": str(root / "policy"), "value_backbone": str(root / "policy"),
            "reward_model": str(root / "reward"), "gsm8k": str(root / "gsm8k.jsonl"),
            "prompts": str(root / "prompts.jsonl"), **{f: str(root / f) for f in set(RECIPES.values())}}


def real_paths(path: Path, files: dict[str, str]) -> dict[str, str]:
    """key=value for every placeholder of a shipped config, pointed at the files made here."""
    data = files["prompts"] if "rlhf" in path.parts else files["gsm8k"]
    paths = {"base_model": files["base_model"], "train_data": data, "test_data": data}
    if "rlhf" in path.parts:
        paths["reward_model"] = files["reward_model"]
    else:
        paths["value_backbone"] = files["value_backbone"]
    if path.name in RECIPES:  # the stand-in of the recipe's model family, for the policy and the value model
        paths["base_model"] = paths["value_backbone"] = files[RECIPES[path.name]]
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


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_lora_targets_are_every_linear_layer_of_its_family(name, files):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = REPO / "configs" / "gsm8k" / name
    cfg = load_config(LoopConfig, path, [f"{k}={v}" for k, v in real_paths(path, files).items()])
    targets = set(cfg.policy.lora_target_modules)
    model = AutoModelForCausalLM.from_pretrained(files[RECIPES[name]])
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert targets == linear - {"lm_head"}, "the adapters cover every linear layer of the blocks, and only those"
    peft = get_peft_model(model, LoraConfig(r=cfg.policy.lora_r, target_modules=sorted(targets)))
    adapted = {n.rsplit(".", 1)[-1] for n, m in peft.named_modules() if hasattr(m, "lora_A")}
    assert adapted == targets


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_round_on_its_family_stand_in(name, files, tmp_path):
    """One round from the recipe's own file on the CPU: the stand-in for the hub model, the fixture's
    rows for GSM8k, counts shrunk, the HF backend (small_config); the chat format, system prompt,
    LoRA targets and training settings are the file's."""
    from transformers import AutoTokenizer

    path = REPO / "configs" / "gsm8k" / name
    small = small_config(path, tmp_path, **real_paths(path, files), train_questions=2, max_step_tokens=12)
    out = tmp_path / "run"
    assert main(["run", "--config", str(small), "--output-dir", str(out), "--no-progress"]) == 0
    assert [r["round"] for r in read_jsonl(out / "rounds.jsonl")] == [0, 1]
    saved = json.loads((out / "config.json").read_text())
    shipped = yaml.safe_load(path.read_text())
    assert saved["prompt_format"] == "chat" and saved["system_prompt"] == shipped["system_prompt"]
    assert saved["policy"]["lora_target_modules"] == shipped["policy"]["lora_target_modules"]
    # every prompt of the run opens the assistant's turn of the family's template, with one <bos> at
    # most once encoded (Llama 3's template writes one and its tokenizer adds one)
    tokenizer = AutoTokenizer.from_pretrained(files[RECIPES[name]])
    cfg = load_config(LoopConfig, small)
    template = prompt_template(TaskSettings.of(cfg))
    opening = {"qwen2.5": "<|im_start|>system\n", "llama3": "<|start_header_id|>system"}[RECIPES[name]]
    assert template.startswith(opening)
    assert shipped["system_prompt"] in template
    ids = tokenizer(template.replace("{question}", "How many?"))["input_ids"]  # as the env renders it
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    assert ids[:len(bos)] == bos and ids.count(tokenizer.bos_token_id) == len(bos)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_policy_section_trains_its_lora_on_the_stand_in(name, files, tmp_path):
    """The round above has nothing to learn (a random policy solves no problem), so the recipe's
    policy section trains here on the fixture's own solutions, in the recipe's chat format: the
    adapters on the listed modules train and are merged into a plain checkpoint of the family."""
    from safetensors.torch import load_file

    from tsllm import tasks
    from tsllm.atomic import write_jsonl
    from tsllm.loop_config import trainer_settings
    from tsllm.tasks.warmstart import gsm8k_rows
    from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy

    path = REPO / "configs" / "gsm8k" / name
    cfg = load_config(LoopConfig, path, [f"{k}={v}" for k, v in real_paths(path, files).items()])
    task = tasks.get_task("gsm8k")(TaskSettings.of(cfg))
    write_jsonl(gsm8k_rows(task.test_problems()), tmp_path / "rows.jsonl")
    settings = {**trainer_settings(cfg.policy), "mixed_precision": "no", "max_steps": 2, "eval_fraction": 0.0}
    stand_in = files[RECIPES[name]]
    train_policy(PolicyTrainConfig(base_model=stand_in, data_files=[str(tmp_path / "rows.jsonl")], task="gsm8k",
                                   output_dir=str(tmp_path / "out"), template=prompt_template(TaskSettings.of(cfg)),
                                   **settings), formats=tasks)
    before = load_file(Path(stand_in) / "model.safetensors")
    after = load_file(tmp_path / "out" / "model" / "model.safetensors")
    assert set(after) == set(before), "a merged checkpoint has the base model's tensors, no adapter ones"
    changed = {key.split(".")[-2] for key in before if not torch.equal(before[key], after[key])}
    assert changed == set(cfg.policy.lora_target_modules)  # exactly the adapted layers moved
