"""Step DPO (`policy.target: preferences`): preference rows become TRL DPO triples rendered as the
env renders states, with EOS only after a step that ends the game, on the char tokenizer and on a
BPE one; training raises the policy's log-probability margin of the chosen step over the rejected
one against a reference that is the policy at its start (LoRA: the adapter off; full: a frozen copy)."""

import json
import math

import pytest
import torch

from tests.training.test_policy import KillAfterCheckpoint, Killed, solver_rows, write_rows
from tsllm import tasks
from tsllm.config import ConfigError, load_config
from tsllm.envs.base import DataError
from tsllm.envs.game24 import Game24Env
from tsllm.models.tiny import build_stand_in, save_model
from tsllm.training.policy_trainer import (
    PolicyTrainConfig,
    build_trainer,
    load_base,
    read_preference_examples,
    row_kind,
    tokenize_pairs,
    train_policy,
)


def preference_rows(count):
    """At each state of the first `count` solver paths, the solver's step chosen over the next
    path's step at the same depth (a step of another puzzle: wrong here); the last step ends the game."""
    paths = solver_rows(count + 1)
    return [{"question": p["question"], "task": "game24", "steps": p["steps"][:i], "chosen": step,
             "chosen_ends": i == len(p["steps"]) - 1, "rejected": other["steps"][i], "rejected_ends": False,
             "margin": 2.0}
            for p, other in zip(paths, paths[1:]) for i, step in enumerate(p["steps"])]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A Qwen2 stand-in with a byte-level BPE tokenizer learnt on the rows' text."""
    path = tmp_path_factory.mktemp("models") / "bpe"
    texts = [f"Input: {r['question']}\n" + "\n".join(r["steps"]) for r in solver_rows(64)]
    save_model(*build_stand_in("qwen2.5", texts), path)
    return path


def settings(base, out, **overrides):
    return PolicyTrainConfig(**{**dict(base_model=str(base), output_dir=str(out), learning_rate=1e-2,
                                       per_device_train_batch_size=4, eval_fraction=0.0, logging_steps=1,
                                       max_length=160, max_steps=4), **overrides})


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_preference_rows_are_the_env_s_state_and_each_step_with_eos_only_at_the_end(kind, base_dir, bpe_dir,
                                                                                      tmp_path):
    rows = preference_rows(2)
    path = write_rows(tmp_path / "pairs.jsonl", rows)
    assert row_kind([path]) == "preferences"
    examples = read_preference_examples([path], formats=tasks)
    env = Game24Env()
    state = env.initial_state(rows[1]["question"])
    state = env.step(state, rows[1]["steps"][0])
    assert examples[1]["prompt"] == env.prompt(state)  # the state as the policy sees it
    assert (examples[1]["chosen"], examples[1]["rejected"]) == (rows[1]["chosen"] + "\n", rows[1]["rejected"] + "\n")
    cfg = settings(base_dir if kind == "char" else bpe_dir, tmp_path / "out")
    _, tokenizer = load_base(cfg)
    for example, tokenized in zip(examples, tokenize_pairs(examples, tokenizer)):
        for side in ("chosen", "rejected"):
            whole = tokenizer(example["prompt"] + example[side])["input_ids"]
            ends = [tokenizer.eos_token_id] if example[f"{side}_ends"] else []
            assert tokenized["prompt_ids"] + tokenized[f"{side}_ids"] == whole + ends
            assert tokenizer.decode(tokenized[f"{side}_ids"][:len(tokenized[f"{side}_ids"]) - len(ends)]) \
                == example[side]
    assert any(e["chosen_ends"] for e in examples) and not any(e["rejected_ends"] for e in examples)
    bad = write_rows(tmp_path / "bad.jsonl", [{**rows[0], "chosen": "a\nb"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*holds a newline"):
        read_preference_examples([bad], formats=tasks)


def completion_logp(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """log p(completion | prompt) under `model`: the sum over the completion's tokens."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    picked = logps.gather(1, targets[:, None])[:, 0]
    return picked[len(prompt_ids) - 1:].sum().item()


@pytest.mark.parametrize("kind, use_lora", [("char", True), ("bpe", False)])
def test_a_dpo_step_raises_the_margin_of_the_chosen_step_over_the_rejected(kind, use_lora, base_dir, bpe_dir,
                                                                          tmp_path):
    pair = read_preference_examples([write_rows(tmp_path / "pair.jsonl", preference_rows(1)[:1])], formats=tasks)
    # the same pair under several questions: a batch of 4 (DPO has no held-out pair here)
    examples = [{**pair[0], "question": str(i)} for i in range(4)]
    cfg = settings(base_dir if kind == "char" else bpe_dir, tmp_path / "out", use_lora=use_lora, nll_weight=0.0)
    model, tokenizer = load_base(cfg)
    [ids] = tokenize_pairs(examples[:1], tokenizer)

    def margin(m):
        return completion_logp(m, ids["prompt_ids"], ids["chosen_ids"]) - \
            completion_logp(m, ids["prompt_ids"], ids["rejected_ids"])

    before = margin(model)
    trainer = build_trainer(cfg, examples, [], model, tokenizer)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    # the reference is the policy as it starts, so the first step's loss is -log sigmoid(0)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and losses[-1] < losses[0]
    trained = trainer.model.merge_and_unload() if use_lora else trainer.model
    assert margin(trained.eval()) > before + 1.0


def test_a_policy_trains_on_a_file_of_preference_rows_and_saves_it(base_dir, tmp_path):
    # one wrong step rejected everywhere: a preference the held-out questions share
    data = write_rows(tmp_path / "pairs.jsonl", [{**r, "rejected": "0 * 0 = 0"} for r in preference_rows(12)])
    out = tmp_path / "out"
    metrics = train_policy(settings(base_dir, out, data_files=[str(data)], eval_fraction=0.25, max_steps=-1,
                                    num_train_epochs=2, beta=0.5, nll_weight=0.0), formats=tasks)
    assert metrics["eval_loss"] < metrics["eval_loss_before"] == pytest.approx(math.log(2), abs=1e-4)
    assert metrics["eval_reward_accuracy"] > 0.5 and metrics["eval_reward_margin"] > 0
    assert metrics["train_tokens"] > 0 and (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["config"]["beta"] == 0.5
    assert not (out / "checkpoints").exists()


def test_a_killed_dpo_run_resumes_from_its_checkpoint_to_the_same_curve(base_dir, tmp_path):
    data = write_rows(tmp_path / "pairs.jsonl", preference_rows(4))
    run = dict(data_files=[str(data)], max_steps=6, save_steps=3)
    straight = train_policy(settings(base_dir, tmp_path / "a", **run), formats=tasks)
    with pytest.raises(Killed):
        train_policy(settings(base_dir, tmp_path / "b", **run), formats=tasks, callbacks=[KillAfterCheckpoint(3)])
    checkpoint = tmp_path / "b" / "checkpoints" / "checkpoint-3"
    assert list(checkpoint.glob("*.safetensors")) and not list(checkpoint.glob("*model*.bin"))
    with pytest.raises(ConfigError, match="beta"):  # another beta would not continue the same run
        train_policy(settings(base_dir, tmp_path / "b", **run, beta=0.2), formats=tasks)
    resumed = train_policy(settings(base_dir, tmp_path / "b", **run), formats=tasks)
    assert resumed["resumed_from_step"] == 3 and resumed["global_step"] == 6
    assert [e["loss"] for e in resumed["train_loss_curve"]] == \
        pytest.approx([e["loss"] for e in straight["train_loss_curve"]], rel=1e-4)


def test_beta_is_checked_at_load_naming_the_key():
    with pytest.raises(ConfigError, match="config key 'beta': must be a finite number > 0"):
        load_config(PolicyTrainConfig, None, ["base_model=m", "beta=0"]).validate()


def test_nll_weight_adds_the_chosen_step_s_mean_token_nll_to_the_dpo_loss(base_dir, tmp_path):
    """The first step's loss is DPO's log 2 (policy = reference) plus nll_weight times the chosen
    step's negative log-likelihood per token, computed here from plain forward passes."""
    pair = read_preference_examples([write_rows(tmp_path / "pair.jsonl", preference_rows(1)[:1])], formats=tasks)
    examples = [pair[0]] * 4
    cfg = settings(base_dir, tmp_path / "out", use_lora=True, nll_weight=0.5, max_steps=1)
    model, tokenizer = load_base(cfg)
    [ids] = tokenize_pairs(examples[:1], tokenizer)
    nll = -completion_logp(model.eval(), ids["prompt_ids"], ids["chosen_ids"]) / len(ids["chosen_ids"])
    trainer = build_trainer(cfg, examples, [], model, tokenizer)
    trainer.train()
    [first] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert nll > 1.0  # an untrained step: the term is large enough to be seen
    assert first == pytest.approx(math.log(2) + 0.5 * nll, rel=1e-4)
    with pytest.raises(ConfigError, match="config key 'nll_weight': must be a finite number >= 0"):
        load_config(PolicyTrainConfig, None, ["base_model=m", "nll_weight=-1"]).validate()
