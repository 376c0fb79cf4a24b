"""The value model and its trainer, single process: scoring at the last real token, save/load
round trips (plain and LoRA), tokenizer checks, loss going down, Game24 solvability learned on
held-out puzzles, resume after a kill, and bad input refused at start."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tsllm import tasks
from tsllm.config import ConfigError, load_config
from tsllm.envs.base import DataError
from tsllm.models.tiny import (
    TinyModelConfig,
    build_char_tokenizer,
    build_tiny_llama,
    save_model,
)
from tsllm.models.value import (
    ValueFunction,
    add_lora,
    build_value_model,
    check_same_tokenizer,
    load_value_model,
    save_value_model,
)
from tsllm.tasks.warmstart import game24_contrast_trajectories
from tsllm.training.args import resumable_settings
from tsllm.training.data import (
    build_value_examples,
    parse_trajectory,
    render_for_task,
    split_by_question,
    write_jsonl,
)
from tsllm.training.value_trainer import (
    StopAfterCheckpoint,
    ValueTrainConfig,
    check_resume,
    train_value,
)

TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=128)
TEXTS = ["Input: 4 4 6 8\n", "Input: 4 4 6 8\n4 + 4 = 8 (left: 6 8 8)\n", "x",
         "Input: 1 1 1 1\n1 + 1 = 2 (left: 1 1 2)\n"]


def values_of(model, tokenizer, texts=TEXTS, **kwargs):
    return ValueFunction(model, tokenizer, **kwargs)(texts)


def test_value_is_read_at_the_last_real_token_whatever_the_padding():
    model, tokenizer = build_value_model(tiny=TINY)
    model.eval()
    with torch.no_grad():  # reference: each text alone, no padding, head at its last token
        alone = [model(**tokenizer(t, return_tensors="pt")).logits[0, -1, 0].item() for t in TEXTS]
    tokenizer.padding_side = "left"
    left = values_of(model, tokenizer)
    tokenizer.padding_side = "right"
    right = values_of(model, tokenizer, max_batch_size=3)  # two chunks, results back in input order
    assert left == pytest.approx(alone, abs=1e-5) and right == pytest.approx(alone, abs=1e-5)
    assert len({round(v, 6) for v in alone}) == len(TEXTS)  # the texts really score differently
    scorer = ValueFunction(model, tokenizer, max_batch_size=3)
    assert scorer([]) == [] and scorer(TEXTS) and scorer.calls == 2
    assert scorer.tokens_scored == sum(len(t) + 1 for t in TEXTS)  # characters + <bos>, no pads


def test_backbone_folder_gives_its_body_and_a_seeded_new_head(tmp_path):
    tokenizer = build_char_tokenizer()
    policy = build_tiny_llama(TINY, tokenizer)
    save_model(policy, tokenizer, tmp_path / "policy")
    rng = torch.get_rng_state()
    value, _ = build_value_model(tmp_path / "policy", head_seed=1)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    assert torch.equal(value.model.layers[0].self_attn.q_proj.weight, policy.model.layers[0].self_attn.q_proj.weight)
    again, _ = build_value_model(tmp_path / "policy", head_seed=1)
    other, _ = build_value_model(tmp_path / "policy", head_seed=2)
    assert torch.equal(value.score.weight, again.score.weight)
    assert not torch.equal(value.score.weight, other.score.weight)
    with pytest.raises(ValueError, match="num_labels=2, not a value model"):
        load_value_model(tmp_path / "policy")  # a causal LM is not a value model until it has a head
    with pytest.raises(ValueError, match="exactly one of"):
        build_value_model(tmp_path / "policy", tiny=TINY)


def test_the_head_has_no_dropout_however_the_model_is_built(tmp_path):
    """transformers drops a classifier_dropout keyword Llama's config does not declare, which left
    the head with dropout 0.1: noisy training values and resumes that could not replay the masks."""
    tokenizer = build_char_tokenizer()
    save_model(build_tiny_llama(TINY, tokenizer), tokenizer, tmp_path / "policy")
    from_backbone, _ = build_value_model(tmp_path / "policy")
    save_value_model(from_backbone, tokenizer, tmp_path / "value")
    ids = tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    for model in (build_value_model(tiny=TINY)[0], from_backbone, build_value_model(tmp_path / "value")[0]):
        assert model.dropout.p == 0.0 and model.training
        with torch.no_grad():  # train mode, yet the same values twice: no dropout masks anywhere
            assert torch.equal(model(**ids).logits, model(**ids).logits)


def test_a_pickled_checkpoint_is_never_loaded(tmp_path):
    model, tokenizer = build_value_model(tiny=TINY)
    save_value_model(model, tokenizer, tmp_path / "v")
    torch.save(model.state_dict(), tmp_path / "v" / "pytorch_model.bin")  # a stray pickle instead
    (tmp_path / "v" / "model.safetensors").unlink()
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        load_value_model(tmp_path / "v")
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        build_value_model(tmp_path / "v")


def test_save_load_round_trip_gives_identical_values(tmp_path):
    model, tokenizer = build_value_model(tiny=TINY)
    before = values_of(model, tokenizer)
    save_value_model(model, tokenizer, tmp_path / "v")
    assert (tmp_path / "v" / "model.safetensors").is_file() and not list(tmp_path.glob("v.*"))
    assert not list((tmp_path / "v").glob("*.bin")) and not list((tmp_path / "v").glob("*.pt"))
    assert ValueFunction(tmp_path / "v")(TEXTS) == before


def test_lora_trains_adapters_and_head_and_saves_merged(tmp_path):
    model, tokenizer = build_value_model(tiny=TINY)
    lora = add_lora(model, r=4, alpha=8)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".score." in n for n in trainable)
    assert any(".score." in n for n in trainable)  # the new head is trained in full
    with torch.no_grad():  # pretend training moved the adapters, so merging has work to do
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    with_adapters = values_of(lora, tokenizer)
    save_value_model(lora, tokenizer, tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    loaded = ValueFunction(tmp_path / "merged")(TEXTS)
    assert loaded == pytest.approx(with_adapters, abs=1e-5)
    assert loaded != pytest.approx(values_of(*build_value_model(tiny=TINY)), abs=1e-3)


def test_tokenizer_mismatch_is_an_explained_error_unless_allowed(tmp_path):
    tokenizer = build_char_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert check_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(tmp_path))
    other = build_char_tokenizer("0123456789+-*/=() \n")
    with pytest.raises(ValueError, match="tokenizers differ: vocabulary sizes 100 vs 23.*allow_different=True"):
        check_same_tokenizer(tokenizer, other)
    with pytest.warns(UserWarning, match="tokenizers differ"):
        assert check_same_tokenizer(tokenizer, other, allow_different=True) is False


# ------------------------------------------------------------------------------- training


def config(tmp_path, rows, **overrides) -> ValueTrainConfig:
    write_jsonl(rows, tmp_path / "train.jsonl")
    base = {"data_files": [str(tmp_path / "train.jsonl")], "tiny": TINY, "output_dir": str(tmp_path / "out"),
            "learning_rate": 5e-3, "num_train_epochs": 3, "per_device_train_batch_size": 4, "eval_fraction": 0.0,
            "logging_steps": 1, "max_length": 128}
    return ValueTrainConfig(**{**base, **overrides})


SMALL = game24_contrast_trajectories(12, seed=0)  # 24 trajectories, 12 questions
# A fixed set whose outcome shows in the first step: the fit can approach the irreducible loss of
# the question-only prefix (targets +1 and -1 on the same text).
FIXED = [{"question": f"pick {i}", "steps": [f"{name} {i}", "done"], "reward": reward, "task": "text"}
         for i in range(12) for name, reward in (("left", 1.0), ("right", -1.0))]


def test_training_lowers_the_loss_and_reports_what_it_did(tmp_path):
    metrics = train_value(config(tmp_path, FIXED, num_train_epochs=8, eval_fraction=0.25, warmup_ratio=0.0),
                          formats=tasks)
    curve = [point["loss"] for point in metrics["train_loss_curve"]]
    assert metrics["steps_per_epoch"] == 5 and metrics["global_step"] == 40 and len(curve) == 40  # 18 train rows / 4
    # Perfect on the step prefixes, 1 on the question-only one: a loss of 1/3 is the floor.
    assert sum(curve[:5]) / 5 > 0.9 and sum(curve[-5:]) / 5 < 0.5, curve
    assert metrics["distributed_type"] == "NO" and metrics["train_examples"] == 18 and metrics["eval_examples"] == 6
    assert metrics["eval_mse"] is not None and 0.0 <= metrics["eval_sign_acc"] <= 1.0
    assert metrics["eval_sign_acc"] == 1.0 and metrics["eval_mse"] < 0.5  # unseen "pick i" questions
    examples = build_value_examples([parse_trajectory(r, "") for r in FIXED], render_for_task("text"))
    train_texts = [e.text for e in split_by_question(examples, 0.25, seed=0)[0]]
    assert metrics["train_tokens"] == 8 * sum(len(t) + 1 for t in train_texts)  # chars + <bos>, no pads
    assert metrics["train_seconds"] > 0 and metrics["tokens_per_second"] > 0
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 40
    assert (out / "model" / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # no pickles anywhere
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) == 2  # save_total_limit


def test_value_separates_solvable_from_unsolvable_game24_states_on_held_out_puzzles(tmp_path):
    """Solver traces (+1) against traces whose first step leaves no way to 24 (-1); after training,
    the value of 2-step prefixes of held-out puzzles must rank solvable states above unsolvable
    ones (ROC AUC), well above chance (0.5). Texts are cut at 88 tokens: the root and the first two
    steps are labelled, the rest is dropped, which keeps this under a minute on two cores."""
    rows = game24_contrast_trajectories(500, seed=0)
    train_rows, held_out = rows[:800], rows[800:]  # 400 puzzles to learn from, 100 never seen
    write_jsonl(held_out, tmp_path / "held_out.jsonl")
    cfg = config(tmp_path, train_rows, eval_files=[str(tmp_path / "held_out.jsonl")], num_train_epochs=16,
                 learning_rate=3e-3, per_device_train_batch_size=32, max_length=88, logging_steps=50)
    metrics = train_value(cfg, formats=tasks)
    assert 1000 <= metrics["dropped_labels"] <= 2000  # the answer (and most third steps) fall past 88
    render = render_for_task("game24", formats=tasks)
    score = ValueFunction(metrics["model_dir"])
    solvable = score([render(r["question"], r["steps"][:2]) for r in held_out if r["reward"] > 0])
    unsolvable = score([render(r["question"], r["steps"][:2]) for r in held_out if r["reward"] < 0])
    auc = sum((a > b) + 0.5 * (a == b) for a in solvable for b in unsolvable) / (len(solvable) * len(unsolvable))
    assert auc > 0.7, f"held-out AUC {auc:.3f}"


class Killed(Exception):
    """Stands in for a SIGKILL right after a checkpoint is written."""


def test_a_checkpoint_saved_before_a_key_existed_resumes_while_it_keeps_its_default(tmp_path):
    cfg = config(tmp_path, [])
    saved = {k: v for k, v in resumable_settings(cfg).items() if k != "warmup_ratio"}  # an older version's
    check_resume({"config": saved, "num_processes": 1}, cfg, 1, tmp_path)
    with pytest.raises(ConfigError, match=f"warmup_ratio={cfg.warmup_ratio}, the config now says 0.2"):  # its default
        check_resume({"config": saved, "num_processes": 1}, config(tmp_path, [], warmup_ratio=0.2), 1, tmp_path)


@pytest.mark.parametrize("use_lora", [False, True])
def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_model(tmp_path, use_lora):
    straight = train_value(config(tmp_path / "a", SMALL, use_lora=use_lora, lora_r=4, save_steps=4), formats=tasks)
    with pytest.raises(Killed):
        train_value(config(tmp_path / "b", SMALL, use_lora=use_lora, lora_r=4, save_steps=4),
                    callbacks=[StopAfterCheckpoint(8, Killed)], formats=tasks)
    out = tmp_path / "b" / "out"
    assert not (out / "model").exists()
    checkpoints = out / "checkpoints"
    assert (checkpoints / "checkpoint-8" / ("adapter_model.safetensors" if use_lora else "model.safetensors")).is_file()
    assert not list(checkpoints.rglob("*.bin")) and not list(checkpoints.rglob("*.pt"))  # no pickles
    # A checkpoint cut off mid-write (temp name, or no resume.json) must be ignored.
    shutil.copytree(checkpoints / "checkpoint-8", checkpoints / "checkpoint-9.tmp")
    (checkpoints / "checkpoint-10").mkdir()
    resumed = train_value(config(tmp_path / "b", SMALL, use_lora=use_lora, lora_r=4), formats=tasks)
    assert resumed["resumed_from_step"] == 8 and resumed["steps_this_run"] == straight["global_step"] - 8
    assert resumed["global_step"] == straight["global_step"] == 18  # 24 rows / 4 = 6 steps x 3 epochs
    expected = ValueFunction(straight["model_dir"])(TEXTS)
    assert ValueFunction(resumed["model_dir"])(TEXTS) == pytest.approx(expected, abs=1e-6)
    def losses(metrics):
        return [point["loss"] for point in metrics["train_loss_curve"]]
    # The curve carries on from the checkpoint's log: same batches in the same order.
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5) and len(losses(resumed)) == 18


def test_a_sigkilled_recipe_resumes_to_the_same_model_as_an_uninterrupted_run(tmp_path):
    """A real SIGKILL at whatever point the first checkpoint lets it land (possibly mid-write of
    the next), on a value model built from a causal-LM folder as the loop builds it."""
    tokenizer = build_char_tokenizer()
    save_model(build_tiny_llama(TINY, tokenizer), tokenizer, tmp_path / "policy")
    write_jsonl(SMALL, tmp_path / "train.jsonl")
    settings = [f"data_files=[{tmp_path / 'train.jsonl'}]", f"base_model={tmp_path / 'policy'}", "learning_rate=5e-3",
                "num_train_epochs=3", "per_device_train_batch_size=4", "eval_fraction=0.0", "max_length=128",
                "logging_steps=1", "save_steps=1", "save_total_limit=30"]
    straight = train_value(load_config(ValueTrainConfig, None, [*settings, f"output_dir={tmp_path / 'a'}"]),
                           formats=tasks)
    recipe = [sys.executable, str(Path(__file__).resolve().parents[2] / "recipes" / "train_value.py"), *settings,
              f"output_dir={tmp_path / 'b'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TSLLM_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(recipe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "b" / "checkpoints").glob("checkpoint-*/resume.json")):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "b" / "model").exists()  # killed before the end
    resumed = subprocess.run(recipe, capture_output=True, text=True, env=env, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert metrics["resumed_from_step"] >= 1 and metrics["global_step"] == straight["global_step"] == 18
    expected = ValueFunction(straight["model_dir"])(TEXTS)
    assert ValueFunction(metrics["model_dir"])(TEXTS) == pytest.approx(expected, abs=1e-6)


def test_resuming_with_a_changed_config_is_refused(tmp_path):
    with pytest.raises(Killed):
        train_value(config(tmp_path, SMALL, save_steps=2), callbacks=[StopAfterCheckpoint(2, Killed)], formats=tasks)
    with pytest.raises(ConfigError, match=r"trained with learning_rate=0.005, the config now says 0.001"):
        train_value(config(tmp_path, SMALL, learning_rate=1e-3), formats=tasks)
    assert train_value(config(tmp_path, SMALL, learning_rate=1e-3, resume=False),
                       formats=tasks)["resumed_from_step"] is None


def test_bad_input_fails_at_start_naming_the_cause(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = config(tmp_path, SMALL)
    with pytest.raises(DataError, match=f"{empty}: no trajectories"):
        train_value(ValueTrainConfig(**{**cfg.__dict__, "data_files": [str(empty)]}), formats=tasks)

    def deepspeed_json(**fields):
        path = tmp_path / f"ds_{'_'.join(fields)}.json"
        path.write_text(json.dumps({"zero_optimization": {"stage": 2}, **fields}))
        return str(path)

    contradictions = {
        "gradient_accumulation_steps=4, but the trainer config gives gradient_accumulation_steps=2":
            deepspeed_json(gradient_accumulation_steps=4),
        r"train_batch_size=64, but the trainer config gives train_batch_size=8 \(from per_device_train_batch_size":
            deepspeed_json(train_batch_size=64),
        "train_micro_batch_size_per_gpu=8, but the trainer config gives train_micro_batch_size_per_gpu=4":
            deepspeed_json(train_micro_batch_size_per_gpu=8),
        "has a 'optimizer' section": deepspeed_json(optimizer={"type": "Adam"}),
    }
    for message, path in contradictions.items():
        with pytest.raises(ConfigError, match=message):
            train_value(ValueTrainConfig(**{**cfg.__dict__, "deepspeed": path, "gradient_accumulation_steps": 2}),
                        formats=tasks)
    assert not (tmp_path / "out").exists()  # refused before anything was built or written

    with pytest.raises(ConfigError, match="set exactly one of base_model"):
        train_value(ValueTrainConfig(**{**cfg.__dict__, "tiny": None}), formats=tasks)
    with pytest.raises(ConfigError, match="unknown config key 'num_train_epoch'; did you mean 'num_train_epochs'"):
        load_config(ValueTrainConfig, overrides=["num_train_epoch=3"])


def test_shipped_config_loads():
    cfg = load_config(ValueTrainConfig, "configs/value/tiny.yaml",
                      ["data_files=[configs/value/tiny.yaml]"])  # any existing file passes validation
    assert cfg.tiny.num_layers == 2 and cfg.gradient_accumulation_steps == 1 and cfg.deepspeed is None
