"""Policy SFT with TRL + PEFT on a real tiny Llama: the loss falls on held-out pairs, prompt tokens
never enter the loss, merged and adapter saves reload to the same model, a 2-process torchrun run
takes the expected optimizer steps, and bad input fails at start naming file and line."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from tests.launch import TORCHRUN, run_launcher
from tsllm import tasks
from tsllm.config import ConfigError, load_config, to_dict
from tsllm.envs.base import DataError
from tsllm.envs.game24 import Game24Env, split
from tsllm.generation.hf import HFGenerator
from tsllm.models.tiny import (
    load_causal_lm,
)
from tsllm.training.args import METRICS_FILE, RESUME_FREE_KEYS
from tsllm.training.policy_trainer import (
    RESUME_FILE,
    PolicyTrainConfig,
    build_trainer,
    load_base,
    merge_adapter,
    read_examples,
    read_step_examples,
    resume_point,
    split_examples,
    train_policy,
)
from tsllm.types import SamplingParams

REPO = Path(__file__).resolve().parents[2]
def solver_rows(count, start=0):
    train, _ = split()
    return [{"question": p["question"], "gold": p["numbers"], "steps": p["solution"].split("\n"),
             "reward": 1.0, "task": "game24", "source": "warmstart"} for p in train[start:start + count]]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def traj_file(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("data") / "traj.jsonl", solver_rows(64))


def config(base_dir, out, **overrides):
    settings = dict(base_model=str(base_dir), output_dir=str(out), learning_rate=1e-2, num_train_epochs=3,
                    per_device_train_batch_size=8, eval_fraction=0.25, logging_steps=5, max_length=160)
    settings.update(overrides)
    return PolicyTrainConfig(**settings)


def no_leftovers(out: Path):
    return [p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".")]


# ------------------------------------------------------------------------------ data


def test_pairs_are_env_prompt_and_rendered_steps_with_reward_filter(tmp_path):
    rows = solver_rows(3)
    rows[1]["reward"] = -1.0
    path = write_rows(tmp_path / "t.jsonl", rows)
    env = Game24Env()
    examples = read_examples([path], formats=tasks)
    assert len(examples) == 2  # the -1 row is dropped by default
    prompt = env.prompt(env.initial_state(rows[0]["question"]))
    assert examples[0]["prompt"] == prompt == f"Input: {rows[0]['question']}\n"
    assert examples[0]["completion"] == "".join(s + "\n" for s in rows[0]["steps"])
    assert len(read_examples([path], min_reward=None, formats=tasks)) == 3
    assert len(read_examples([path, path], formats=tasks)) == 4  # several files (earlier rounds) are concatenated


def test_held_out_split_keeps_each_question_on_one_side():
    examples = [{"prompt": f"q{i % 10}", "completion": str(i)} for i in range(40)]  # 4 samples per question
    train, held_out = split_examples(examples, 0.2, seed=0)
    assert len(held_out) == 8 and len(train) == 32
    assert not {e["prompt"] for e in train} & {e["prompt"] for e in held_out}
    assert split_examples(examples, 0.2, seed=0) == (train, held_out)
    assert split_examples(examples, 0.0, seed=0)[1] == []
    assert split_examples(examples[:1], 0.1, seed=0) == (examples[:1], [])  # one question: all of it trains
    with pytest.raises(DataError, match="lower eval_fraction"):
        split_examples(examples[:3], 0.9, seed=0)  # 3 questions, 3 held out: none left to train on


def test_bad_trajectory_files_name_file_and_line(tmp_path, base_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=f"{empty}: no trajectories"):
        read_examples([empty], formats=tasks)
    rows = [json.dumps(r) for r in solver_rows(2)]
    cases = {
        "{not json": "invalid JSON",
        json.dumps({"question": "1 2 3 4", "steps": ["x"]}): r"missing field\(s\) \['reward'\]",
        json.dumps({"question": "1 2 3 4", "steps": "a line", "reward": 1}): "'steps' must be a list of strings",
        json.dumps({"question": "1 2 3 4", "steps": ["a\nb"], "reward": 1}): "holds a newline",
        json.dumps({"question": "1 2 3 4", "steps": ["x"], "reward": "high"}): "'reward' must be a finite number",
        json.dumps({"question": "1 2 3 4", "steps": ["x"], "reward": 1, "task": "chess"}): "unknown task 'chess'",
    }
    for bad_line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join(rows + [bad_line]) + "\n")
        with pytest.raises(DataError, match=f"{path}:3: .*{message}"):
            read_examples([path], formats=tasks)
    only_wrong = write_rows(tmp_path / "wrong.jsonl", [dict(r, reward=-1.0) for r in solver_rows(2)])
    with pytest.raises(DataError, match="steps and reward > 0.*min_reward=null"):
        read_examples([only_wrong], formats=tasks)
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        read_examples([tmp_path / "missing.jsonl"], formats=tasks)


def test_missing_base_model_and_bad_config_fail_at_start(tmp_path, traj_file, base_dir):
    cfg = PolicyTrainConfig(base_model=str(tmp_path / "no_model"), data_files=[str(traj_file)])
    with pytest.raises(FileNotFoundError, match="no_model does not exist.*tiny"):
        train_policy(cfg, formats=tasks)
    with pytest.raises(ConfigError, match="'max_length': 400 exceeds the model's context of 160"):
        load_base(PolicyTrainConfig(base_model=str(base_dir), max_length=400))
    with pytest.raises(ConfigError, match="'base_model'"):
        PolicyTrainConfig(data_files=[str(traj_file)]).validate()
    with pytest.raises(ConfigError, match="'merge'.*use_lora"):
        PolicyTrainConfig(base_model="m", use_lora=False, merge="adapter").validate()
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(PolicyTrainConfig, None, ["base_model=m", "learning_rat=1"])
    # The recipe turns bad input into one line on stderr and exit status 2, not a traceback.
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes/train_policy.py"), f"base_model={tmp_path / 'no_model'}",
         f"data_files=[{traj_file}]"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert result.returncode == 2 and "no_model does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ masking


def test_prompt_tokens_are_masked_from_the_loss(base_dir, traj_file, tmp_path):
    cfg = config(base_dir, tmp_path / "out", per_device_train_batch_size=4)
    examples = read_examples([traj_file], formats=tasks)[:4]
    model, tokenizer = load_base(cfg)
    trainer = build_trainer(cfg, examples, [], model, tokenizer)

    for example, row in zip(examples, trainer.train_dataset):
        prompt_ids = tokenizer(example["prompt"])["input_ids"]  # <bos> + one id per character
        n = len(prompt_ids)
        assert row["input_ids"][:n] == prompt_ids
        assert row["labels"][:n] == [-100] * n  # no prompt token is a target
        assert row["labels"][n:] == row["input_ids"][n:]  # every completion token is
        assert row["input_ids"][-1] == tokenizer.eos_token_id  # and the policy learns to stop
        assert tokenizer.decode(row["input_ids"][n:-1]) == example["completion"]

    # The loss the trainer optimises is the mean NLL over completion tokens only.
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def nll(labels):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)

    assert loss.item() == pytest.approx(nll(batch["labels"]).item(), rel=1e-4)
    all_tokens = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert abs(loss.item() - nll(all_tokens).item()) > 1e-3  # the prompt would change it


def step_rows(count):
    """Step rows (tsllm/training/targets.py) of the first `count` solver paths: each path's steps,
    one row per step, the last one ending the game; weights 1, 2, 3, ... along the path."""
    return [{"question": r["question"], "task": "game24", "steps": r["steps"][:i], "step": step,
             "ends": i == len(r["steps"]) - 1, "weight": float(i + 1)}
            for r in solver_rows(count) for i, step in enumerate(r["steps"])]


def test_step_rows_train_one_step_after_the_state_with_eos_only_at_the_end(base_dir, tmp_path):
    rows = step_rows(2)
    examples = read_step_examples([write_rows(tmp_path / "steps.jsonl", rows)], formats=tasks)
    env = Game24Env()
    first, second = examples[0], examples[1]
    assert first["prompt"] == f"Input: {rows[0]['question']}\n" and first["completion"] == rows[0]["step"] + "\n"
    assert second["prompt"] == env.prompt(env.initial_state(rows[0]["question"])) + rows[0]["step"] + "\n"
    assert [e["weight"] for e in examples[:3]] == [1.0, 2.0, 3.0] and examples[0]["question"] == rows[0]["question"]
    cfg = config(base_dir, tmp_path / "out")
    model, tokenizer = load_base(cfg)
    trainer = build_trainer(cfg, examples, [], model, tokenizer)
    for example, row in zip(examples, trainer.train_dataset):
        n = len(tokenizer(example["prompt"])["input_ids"])
        assert row["labels"][:n] == [-100] * n and row["labels"][n:] == row["input_ids"][n:]
        # EOS after the step that ends the game only: elsewhere the policy must go on to the next step
        assert (row["input_ids"][-1] == tokenizer.eos_token_id) == example["ends"]
        assert row["weight"] == example["weight"]
    bad = write_rows(tmp_path / "bad.jsonl", [{**rows[0], "weight": 0}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'weight' must be a finite number > 0"):
        read_step_examples([bad], formats=tasks)


def test_the_weighted_loss_is_trl_s_loss_with_each_row_s_tokens_counted_weight_times(base_dir, traj_file, tmp_path):
    cfg = config(base_dir, tmp_path / "out", per_device_train_batch_size=4, use_lora=False)  # one model, two trainers
    paths = read_examples([traj_file], formats=tasks)[:4]
    model, tokenizer = load_base(cfg)
    plain = build_trainer(cfg, paths, [], model, tokenizer)  # TRL's own loss on whole paths
    # the same pairs as step rows that end the game (EOS appended as TRL does) with weight 1
    steps = [{**e, "weight": 1.0, "ends": True, "question": e["prompt"]} for e in paths]
    weighted = build_trainer(cfg, steps, [], model, tokenizer)
    batch = next(iter(plain.get_train_dataloader()))
    weighted_batch = next(iter(weighted.get_train_dataloader()))
    assert torch.equal(batch["input_ids"], weighted_batch["input_ids"]) and torch.equal(batch["labels"],
                                                                                         weighted_batch["labels"])
    with torch.no_grad():
        loss = plain.compute_loss(plain.model, dict(batch)).item()
        assert weighted.compute_loss(weighted.model, dict(weighted_batch)).item() == pytest.approx(loss, rel=1e-5)
        doubled = {**weighted_batch, "weight": 2 * weighted_batch["weight"]}
        assert weighted.compute_loss(weighted.model, doubled).item() == pytest.approx(2 * loss, rel=1e-5)
        # a weight on one row moves the loss by that row's share of the tokens only
        first_only = {**weighted_batch, "weight": torch.tensor([1.0, 0.0, 0.0, 0.0])}
        assert 0 < weighted.compute_loss(weighted.model, first_only).item() < loss


def test_a_policy_trains_on_weighted_step_rows(base_dir, tmp_path):
    data = write_rows(tmp_path / "steps.jsonl", step_rows(16))
    metrics = train_policy(config(base_dir, tmp_path / "out", data_files=[str(data)], num_train_epochs=1,
                                  task="game24"), formats=tasks)
    assert metrics["train_examples"] > 0 and metrics["eval_loss"] is not None
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ training and saving


def test_lora_sft_lowers_held_out_loss_and_merged_save_reloads_identically(base_dir, traj_file, tmp_path):
    run = tmp_path / "merged"
    metrics = train_policy(config(base_dir, run, data_files=[str(traj_file)]), formats=tasks)
    assert metrics["train_examples"] == 48 and metrics["eval_examples"] == 16
    assert metrics["global_step"] == 3 * 48 // 8
    assert metrics["eval_loss"] < metrics["eval_loss_before"] - 0.1
    curve = [point["loss"] for point in metrics["train_loss_curve"]]
    assert len(curve) == 3 and curve[-1] < curve[0] and metrics["train_loss"] == curve[-1]
    assert metrics["train_tokens"] > 48 * 3 * 60 and metrics["train_seconds"] > 0  # non-padding tokens seen

    out = run / "model"
    assert {p.name for p in run.iterdir()} == {"model", METRICS_FILE}  # no scratch folder left behind
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not (out / "adapter_config.json").exists() and not no_leftovers(out)
    saved = json.loads((run / METRICS_FILE).read_text())
    assert saved["global_step"] == metrics["global_step"] and saved["model_dir"] == str(out)

    reloaded, tokenizer = load_causal_lm(out)
    ids = tokenizer(["Input: 4 6 8 2\n6 * 4 = 24"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, metrics["model"](ids).logits)
        base, _ = load_causal_lm(base_dir)
        assert not torch.allclose(base(ids).logits, reloaded(ids).logits, atol=1e-3)  # it did train


def test_adapter_save_applies_through_the_generator_like_the_merged_model(base_dir, traj_file, tmp_path):
    metrics = train_policy(config(base_dir, tmp_path / "adapter", data_files=[str(traj_file)], merge="adapter"),
                           formats=tasks)
    adapter = tmp_path / "adapter" / "model"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists() and not no_leftovers(adapter)

    merged_dir = merge_adapter(base_dir, adapter, tmp_path / "merged")
    in_memory = metrics["model"].merge_and_unload()
    tokenizer = metrics["tokenizer"]
    through_update = HFGenerator(base_dir)
    through_update.update_weights(str(adapter))
    greedy = SamplingParams(temperature=0, max_new_tokens=40, stop=["\n"])
    prompts = [f"Input: {p['question']}\n" for p in split()[1][:4]]
    expected = [row[0].text for row in HFGenerator(in_memory, tokenizer).generate(prompts, greedy)]
    assert [row[0].text for row in through_update.generate(prompts, greedy)] == expected
    assert [row[0].text for row in HFGenerator(merged_dir).generate(prompts, greedy)] == expected
    base_out = [row[0].text for row in HFGenerator(base_dir).generate(prompts, greedy)]
    assert base_out != expected  # the adapter changed what the policy writes


def test_full_finetune_from_a_fresh_tiny_model(traj_file, tmp_path):
    cfg = load_config(PolicyTrainConfig, None, [
        f"data_files=[{traj_file}]", f"output_dir={tmp_path / 'fresh'}", "use_lora=false", "learning_rate=3e-3",
        "num_train_epochs=2", "tiny.hidden_size=32", "tiny.num_layers=2", "tiny.intermediate_size=64",
        "tiny.max_position_embeddings=160", "max_length=160", "max_steps=4",
    ])
    metrics = train_policy(cfg, formats=tasks)
    assert metrics["global_step"] == 4  # max_steps wins over epochs
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    model, _ = load_causal_lm(tmp_path / "fresh" / "model")
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2


def test_pairs_cut_at_max_length_are_reported(base_dir, traj_file, tmp_path):
    cfg = config(base_dir, tmp_path / "short", data_files=[str(traj_file)], max_length=40, max_steps=1,
                 eval_fraction=0.0)
    with pytest.warns(UserWarning, match="64 training pair\\(s\\) were cut at max_length=40"):
        train_policy(cfg, formats=tasks)


# ------------------------------------------------------------------------------ two processes


@pytest.mark.all_cores  # alone on the machine (tests/conftest.py)
def test_torchrun_two_processes_split_the_batches(traj_file, tmp_path):
    out = tmp_path / "ddp"
    rows = [json.loads(line) for line in traj_file.read_text().splitlines()][:40]
    data = write_rows(tmp_path / "t40.jsonl", rows)
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun), "--nproc_per_node", "2", str(REPO / "recipes/train_policy.py"),
        "--config", str(REPO / "configs/policy/tiny_oracle.yaml"),
        f"data_files=[{data}]", f"output_dir={out}", "min_reward=0", "eval_fraction=0.2",
        "per_device_train_batch_size=4", "gradient_accumulation_steps=2", "num_train_epochs=2", "max_seconds=null",
        "tiny.hidden_size=32", "tiny.num_layers=2", "tiny.intermediate_size=64",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TSLLM_PROGRESS": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    # 32 training pairs / (4 per process x 2 processes) = 4 batches per process per epoch,
    # 2 batches per optimizer step, 2 epochs -> 4 steps (one process would take 8).
    assert metrics["world_size"] == 2 and metrics["train_examples"] == 32
    assert metrics["global_step"] == 4
    assert (out / "model" / "model.safetensors").is_file() and not no_leftovers(out)


# ------------------------------------------------------------------------------ DeepSpeed


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
def test_zero3_lora_saves_the_whole_merged_model(base_dir, traj_file, tmp_path):
    """Under ZeRO-3 every rank holds a shard of each weight (shape (0,) in the module): the saved
    checkpoint must still be whole, with the trained LoRA folded in. One process: DeepSpeed on
    several CPU processes is refused (tests/test_loop_tasks.py)."""
    out = tmp_path / "zero3"
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "1", str(REPO / "recipes/train_policy.py"),
               f"base_model={base_dir}", f"data_files=[{traj_file}]", f"output_dir={out}", "max_steps=3",
               "learning_rate=1e-2", "per_device_train_batch_size=8", "max_length=160",
               f"deepspeed={REPO / 'configs/deepspeed/zero3.json'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TSLLM_PROGRESS": "0"}
    stdout, _ = run_launcher(command, tmp_path, env, timeout=300)
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics["global_step"] == 3 and metrics["eval_loss_before"] is None  # not measurable under DeepSpeed
    base, _ = load_causal_lm(base_dir)
    trained, _ = load_causal_lm(out / "model")
    base_weights, trained_weights = base.state_dict(), trained.state_dict()
    assert {k: v.shape for k, v in trained_weights.items()} == {k: v.shape for k, v in base_weights.items()}
    changed = [k for k in base_weights if not torch.equal(base_weights[k], trained_weights[k])]
    assert changed and all(any(m in k for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj")) for k in changed)  # LoRA targets only


# ------------------------------------------------------------------------------ checkpoints


class Killed(Exception):
    pass


class KillAfterCheckpoint(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # called once the checkpoint is on disk
        if state.global_step == self.step:
            raise Killed(f"killed after the checkpoint of step {self.step}")


def test_checkpoints_saved_before_a_key_existed_resume_while_it_keeps_its_default(base_dir, tmp_path):
    cfg = config(base_dir, tmp_path / "out")
    checkpoints = tmp_path / "out" / "checkpoints"
    (checkpoints / "checkpoint-4").mkdir(parents=True)
    (checkpoints / "checkpoint-4" / "trainer_state.json").write_text("{}")
    # what a version without nll_weight wrote
    saved = {k: v for k, v in to_dict(cfg).items() if k not in RESUME_FREE_KEYS and k != "nll_weight"}
    (checkpoints / RESUME_FILE).write_text(json.dumps({**saved, "examples": 64}))
    assert resume_point(cfg, checkpoints, examples=64) == checkpoints / "checkpoint-4"
    with pytest.raises(ConfigError, match=r"\(nll_weight\)"):  # not its default: other training
        resume_point(config(base_dir, tmp_path / "out", nll_weight=0.5), checkpoints, examples=64)
    with pytest.raises(ConfigError, match=r"\(examples\)"):
        resume_point(cfg, checkpoints, examples=65)


def test_a_killed_run_resumes_from_its_safetensors_checkpoint_to_the_same_curve(base_dir, traj_file, tmp_path):
    settings = dict(data_files=[str(traj_file)], max_steps=8, save_steps=4, eval_fraction=0.0, logging_steps=1)
    straight = train_policy(config(base_dir, tmp_path / "a", **settings), formats=tasks)
    with pytest.raises(Killed):
        train_policy(config(base_dir, tmp_path / "b", **settings), formats=tasks, callbacks=[KillAfterCheckpoint(4)])
    checkpoint = tmp_path / "b" / "checkpoints" / "checkpoint-4"
    assert list(checkpoint.glob("*.safetensors")) and not list(checkpoint.glob("*model*.bin"))  # weights: safetensors
    with pytest.raises(ConfigError, match="learning_rate"):  # other settings would not continue the same run
        train_policy(config(base_dir, tmp_path / "b", **settings, learning_rate=1e-3), formats=tasks)
    resumed = train_policy(config(base_dir, tmp_path / "b", **settings), formats=tasks)
    assert (straight["resumed_from_step"], resumed["resumed_from_step"]) == (None, 4)
    assert resumed["global_step"] == 8
    assert [e["loss"] for e in resumed["train_loss_curve"]] == \
        pytest.approx([e["loss"] for e in straight["train_loss_curve"]], rel=1e-4)
    assert not (tmp_path / "b" / "checkpoints").exists()  # the model is saved; the checkpoints are gone
