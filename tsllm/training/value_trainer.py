"""Value/ORM trainer: MSE regression of a per-token scalar head onto prefix returns (Accelerate).

    metrics = train_value(ValueTrainConfig(data_files=["traj.jsonl"], tiny=TinyModelConfig()))

One example is one trajectory: its full text is tokenized once (with offsets) and the head is read
at the token holding the last character of every prefix (tsllm.training.data); all other tokens
are ignored (label -100). The loss is the mean squared error over the labelled tokens of a
micro-batch.

Runs as one process, under `torchrun --nproc_per_node N` / `accelerate launch` (DDP; gloo on
CPU), and with DeepSpeed ZeRO when `deepspeed=<json>` is set (or the launcher says
`--use_deepspeed`). Batch geometry lives in ONE place, this config: the DeepSpeed json should say
"auto" for batch sizes, accumulation and clipping, and a hard-coded value that contradicts the
config stops the run at start, naming both values (Accelerate would otherwise silently prefer the
json's accumulation).

Steps: each process sees B = ceil(examples / (processes * per_device_train_batch_size)) batches per
epoch (Accelerate pads the last round by cycling from the start), and the optimizer steps every
`gradient_accumulation_steps` batches and once more on a final partial group, so
steps_per_epoch = ceil(B / gradient_accumulation_steps); all steps: max_steps, or
ceil(steps_per_epoch * num_train_epochs). The schedule (lr_scheduler_type, warmup over warmup_ratio
of all steps) is defined in these optimizer steps. `max_seconds` ends training early (a
checkpoint, then the model as usual).

Checkpoints: `<output_dir>/checkpoints/step_<N>/` holds the model (safetensors via
save_pretrained; the adapter only with LoRA), the tokenizer, the optimizer moments
(optimizer.safetensors; not under DeepSpeed, whose optimizer state is sharded: a DeepSpeed resume
restarts the moments) and trainer_state.json (step, epoch, batches done in the epoch, scheduler
state, config). Each is written to a temporary sibling and renamed, so a killed run leaves only
complete checkpoints, and a rerun with the same config resumes from the newest one: same data
order (the shuffle is seeded per epoch), same schedule, same result as an uninterrupted run.
The finished model (LoRA merged) goes to `<output_dir>/model`, the metrics (keys shared with the
policy trainer: tsllm.training.args) to `<output_dir>/metrics.json`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Sampler

from tsllm.atomic import replace_dir, write_json
from tsllm.config import ConfigError, bad, to_dict
from tsllm.envs.base import DataError
from tsllm.models.value import (
    LORA_TARGETS_DEFAULT,
    add_lora,
    build_value_model,
    merged,
    position_ids_for,
    save_value_model,
)
from tsllm.training.args import METRICS_FILE, MODEL_DIR, TrainArgs, arg, default_of
from tsllm.training.data import (
    Render,
    ValueExample,
    build_orm_examples,
    build_value_examples,
    deduplicate,
    read_trajectories,
    render_for_task,
    split_by_question,
)
from tsllm.training.zero3 import forget_zero3, no_zero3_init

IGNORE = -100.0  # label of tokens that end no prefix
# Keys that may change between a run and its resume without changing what is trained.
RESUME_FREE_KEYS = {"output_dir", "resume", "logging_steps", "save_steps", "save_total_limit", "max_seconds"}


@dataclass
class ValueTrainConfig(TrainArgs):
    """What to train on, from what, and how; the shared keys are TrainArgs'. Launch line: see
    recipes/train_value.py."""

    output_dir: str = default_of(TrainArgs, "output_dir", "out/value")
    per_device_train_batch_size: int = default_of(TrainArgs, "per_device_train_batch_size", 16)
    warmup_ratio: float = default_of(TrainArgs, "warmup_ratio", 0.05)
    lr_scheduler_type: str = default_of(TrainArgs, "lr_scheduler_type", "cosine")
    lora_target_modules: str | list[str] = default_of(TrainArgs, "lora_target_modules", LORA_TARGETS_DEFAULT)
    eval_files: list[str] = arg([], "held-out trajectories jsonl; empty: hold out eval_fraction of the questions")
    template: str | None = arg(None, "prompt template replacing the task's (holds '{question}')")
    target: Literal["value", "orm"] = arg("value", "label every prefix (value) or the final text only (ORM)")
    td_lambda: float | None = arg(None, "null: Monte-Carlo returns; else TD(lambda) targets from the rows' "
                                        "'values'")
    save_steps: int = arg(0, "optimizer steps between checkpoints; 0: at epoch ends only")
    save_total_limit: int = arg(2, "checkpoints kept in <output_dir>/checkpoints (the newest)")
    resume: bool = arg(True, "continue from the newest checkpoint in <output_dir>/checkpoints")

    def validate(self) -> None:
        super().validate()
        if not self.data_files:
            raise bad("data_files", "give at least one trajectories jsonl file")
        for key in ("data_files", "eval_files"):
            for path in getattr(self, key):
                if not Path(path).is_file():
                    raise bad(key, f"file {path} does not exist")
        if self.template is not None and "{question}" not in self.template:
            raise bad("template", "must contain '{question}'")
        if self.td_lambda is not None and not 0.0 <= self.td_lambda <= 1.0:
            raise bad("td_lambda", f"must be in [0, 1] or null, got {self.td_lambda}")
        if self.save_steps < 0:
            raise bad("save_steps", f"must be >= 0, got {self.save_steps}")
        if self.save_total_limit < 1:
            raise bad("save_total_limit", f"must be >= 1, got {self.save_total_limit}")


# ------------------------------------------------------------------------------- DeepSpeed


def resolve_deepspeed_config(config: ValueTrainConfig, world_size: int) -> tuple[dict | None, str]:
    """(DeepSpeed json as a dict, where it came from), or (None, "") without DeepSpeed. Checked
    against the trainer config before anything starts."""
    env_accumulation = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    if env_accumulation and env_accumulation.isdigit() and int(env_accumulation) != config.gradient_accumulation_steps:
        raise ConfigError(
            f"the launcher sets gradient accumulation to {env_accumulation} (accelerate launch "
            f"--gradient_accumulation_steps) but the trainer config says gradient_accumulation_steps="
            f"{config.gradient_accumulation_steps}; drop the launcher flag and set it in the config only")
    launcher_wants_ds = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    env_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config.deepspeed is not None:
        source = config.deepspeed
    elif launcher_wants_ds and env_file != "none":
        source = env_file
    elif launcher_wants_ds:  # `accelerate launch --use_deepspeed --zero_stage N` without a file
        stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        ds = {"zero_optimization": {"stage": stage}, "train_micro_batch_size_per_gpu": "auto",
              "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
        return ds, "accelerate launch --use_deepspeed"
    else:
        return None, ""
    try:
        ds = json.loads(Path(source).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"DeepSpeed config {source} cannot be read as JSON: {err}") from None
    check_deepspeed_config(ds, config, world_size, source)
    return ds, source


def check_deepspeed_config(ds: dict, config: ValueTrainConfig, world_size: int, source: str) -> None:
    """Fail if the json hard-codes batch geometry, clipping or precision that contradicts the config."""
    if not isinstance(ds, dict) or "zero_optimization" not in ds:
        raise ConfigError(f"DeepSpeed config {source} needs a 'zero_optimization' section (see configs/deepspeed/)")
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise ConfigError(f"DeepSpeed config {source} has a '{section}' section, but the trainer builds AdamW "
                              "and the schedule from its config (learning_rate, lr_scheduler_type); remove the section")
    accumulation, micro = config.gradient_accumulation_steps, config.per_device_train_batch_size
    implied = {
        "gradient_accumulation_steps": (accumulation, "gradient_accumulation_steps"),
        "train_micro_batch_size_per_gpu": (micro, "per_device_train_batch_size"),
        "train_batch_size": (micro * accumulation * world_size,
                             f"per_device_train_batch_size x gradient_accumulation_steps x {world_size} processes"),
        "gradient_clipping": (config.max_grad_norm, "max_grad_norm"),
    }
    for key, (want, from_keys) in implied.items():
        got = ds.get(key, "auto")
        if got != "auto" and got != want:
            raise ConfigError(
                f"DeepSpeed config {source} sets {key}={got}, but the trainer config gives {key}={want} "
                f"(from {from_keys}); set \"{key}\": \"auto\" in {source} so the trainer config is the one "
                "place batch geometry is set")
    for precision in ("bf16", "fp16"):
        got = ds.get(precision, {}).get("enabled", "auto")
        if got != "auto" and bool(got) != (config.mixed_precision == precision):
            raise ConfigError(f"DeepSpeed config {source} sets {precision}.enabled={got}, but the trainer config "
                              f"has mixed_precision={config.mixed_precision!r}; use \"auto\" in the json")


def make_accelerator(config: ValueTrainConfig, ds_config: dict | None):
    from accelerate import Accelerator, DeepSpeedPlugin
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import InitProcessGroupKwargs

    # Accelerate keeps its settings in process-wide singletons: forget a previous call's
    # (accumulation, DeepSpeed plugin), keeping the process group.
    GradientState._reset_state()
    AcceleratorState._reset_state()
    on_cpu = not torch.cuda.is_available()
    common = {"gradient_accumulation_steps": config.gradient_accumulation_steps,
              "mixed_precision": config.mixed_precision}
    if ds_config is None:
        return Accelerator(cpu=on_cpu, **common)
    # Not cpu=True here: that silently drops DeepSpeed and runs DDP (DESIGN.md section 6).
    plugin = DeepSpeedPlugin(hf_ds_config=json.loads(json.dumps(ds_config)),
                             gradient_accumulation_steps=config.gradient_accumulation_steps,
                             gradient_clipping=config.max_grad_norm)
    handlers = [InitProcessGroupKwargs(backend="gloo")] if on_cpu else []
    return Accelerator(deepspeed_plugin=plugin, kwargs_handlers=handlers, **common)


# ------------------------------------------------------------------------------- data


class EpochShuffle(Sampler):
    """A permutation of range(n) fixed by (seed, epoch): the same on every rank and on resume."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = list(range(self.n))
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return self.n


def tokenize_examples(examples: list[ValueExample], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """(features, labels dropped by truncation). A feature holds input_ids, the token index of
    each labelled prefix end (the token whose character span holds that character) and targets."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("the value trainer needs a fast tokenizer (character offsets); load it with use_fast=True")
    features, dropped = [], 0
    for ex in examples:
        enc = tokenizer(ex.text, return_offsets_mapping=True, truncation=True, max_length=max_length)
        spans = enc["offset_mapping"]
        positions, targets = [], []
        for char, target in zip(ex.label_chars, ex.targets):
            token = next((i for i, (a, b) in enumerate(spans) if a <= char < b), None)
            if token is None:
                dropped += 1
            else:
                positions.append(token)
                targets.append(target)
        if positions:
            features.append({"input_ids": enc["input_ids"], "positions": positions, "targets": targets})
    return features, dropped


def collate(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, float labels (IGNORE off the prefix ends) and their mask."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE)
    label_mask = torch.zeros((len(features), width), dtype=torch.bool)
    for row, f in enumerate(features):
        ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[row, : len(f["input_ids"])] = 1
        labels[row, f["positions"]] = torch.tensor(f["targets"], dtype=torch.float)
        label_mask[row, f["positions"]] = True
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "label_mask": label_mask}


def load_examples(config: ValueTrainConfig, render: Render | None) -> tuple[list[ValueExample], list[ValueExample]]:
    """(train, eval) examples. Without an explicit `render`, each row is rendered in the format of
    its own "task" field, or of config.task when it has none."""

    def build(paths):
        by_task: dict[str | None, list] = {}
        for trajectory in read_trajectories(paths):
            by_task.setdefault(None if render else (trajectory.task or config.task), []).append(trajectory)
        examples = []
        for task, trajectories in by_task.items():
            task_render = render or _task_render(task, config.template, trajectories[0].where)
            if config.target == "orm":
                examples += build_orm_examples(trajectories, task_render)
            else:
                examples += build_value_examples(trajectories, task_render, td_lambda=config.td_lambda)
        return deduplicate(examples)

    examples = build(config.data_files)
    if config.eval_files:
        return examples, build(config.eval_files)
    train, evaluation = split_by_question(examples, config.eval_fraction, config.seed)
    if not train:
        raise ConfigError(f"no training examples left after holding out eval_fraction={config.eval_fraction} "
                          "of the questions; lower eval_fraction or add trajectories")
    return train, evaluation


def _task_render(task: str, template: str | None, where: str) -> Render:
    try:
        return render_for_task(task, template)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None


# ------------------------------------------------------------------------------- model


def build_model(config: ValueTrainConfig, weights: Path | None = None):
    """(model, tokenizer) as configured; `weights` = a checkpoint folder to start from."""
    if weights is not None and not config.use_lora:  # a full checkpoint is itself a value model folder
        return build_value_model(weights, head_seed=config.seed)
    model, tokenizer = build_value_model(config.base_model, config.tiny, head_seed=config.seed)
    if config.use_lora:
        model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha, target_modules=config.lora_target_modules,
                         dropout=config.lora_dropout)
        if weights is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            result = set_peft_model_state_dict(model, load_file(weights / "adapter_model.safetensors"))
            if result.unexpected_keys:
                raise ValueError(f"checkpoint {weights} does not fit the LoRA config: {result.unexpected_keys[:3]}")
    return model, tokenizer


def make_optimizer(model, config: ValueTrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms (1-d parameters)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)


def value_predictions(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = batch["attention_mask"]
    out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids_for(mask))
    return out.logits[..., 0].float()


def value_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared error over the labelled positions of the micro-batch."""
    predictions = value_predictions(model, batch)
    selected = batch["label_mask"]
    return ((predictions[selected] - batch["labels"][selected]) ** 2).mean()


# ------------------------------------------------------------------------------- checkpoints


def save_optimizer(optimizer, path: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON metadata (param groups, scalars): no pickle."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_file(tensors, path, metadata={"param_groups": json.dumps(state["param_groups"]),
                                       "scalars": json.dumps(scalars)})


def load_optimizer(optimizer, path: Path) -> None:
    from safetensors import safe_open

    state: dict[int, dict[str, Any]] = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = f.get_tensor(key)
    for index, entry in json.loads(meta["scalars"]).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (complete = renamed into place, so it has trainer_state.json)."""
    found = []
    for folder in (output_dir / "checkpoints").glob("step_*"):
        suffix = folder.name[len("step_"):]
        if suffix.isdigit() and (folder / "trainer_state.json").is_file():
            found.append((int(suffix), folder))
    return max(found)[1] if found else None


def resumable_config(config: ValueTrainConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(config).items() if k not in RESUME_FREE_KEYS}


def check_resume(state: dict, config: ValueTrainConfig, num_processes: int, folder: Path) -> None:
    saved, now = state["config"], resumable_config(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        key = changed[0]
        raise ConfigError(f"checkpoint {folder} was trained with {key}={saved.get(key)!r}, the config now says "
                          f"{now.get(key)!r} (changed keys: {changed}); use the same config, a new output_dir, "
                          "or resume=false to start over")
    if state["num_processes"] != num_processes:
        raise ConfigError(f"checkpoint {folder} was written by {state['num_processes']} processes, this run has "
                          f"{num_processes}; the data shards would differ. Relaunch with the same number")


def save_checkpoint(accelerator, model, tokenizer, optimizer, trainer_state: dict, output_dir: Path,
                    keep: int) -> None:
    state_dict = accelerator.get_state_dict(model)  # every rank: gathers shards under ZeRO-3
    if accelerator.is_main_process:
        target = output_dir / "checkpoints" / f"step_{trainer_state['global_step']:07d}"
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        if trainer_state["optimizer_saved"]:
            save_optimizer(optimizer, staging / "optimizer.safetensors")
        (staging / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        replace_dir(staging, target)
        folders = sorted((output_dir / "checkpoints").glob("step_*"))
        complete = [f for f in folders if (f / "trainer_state.json").is_file()]
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_final_model(accelerator, model, tokenizer, config: ValueTrainConfig) -> Path:
    """The finished value model at <output_dir>/model, LoRA merged: what ValueFunction loads."""
    state_dict = accelerator.get_state_dict(model)
    target = Path(config.output_dir) / MODEL_DIR
    if accelerator.is_main_process:
        if config.use_lora:  # fold the adapters into a fresh CPU copy (the trained one may be sharded)
            with no_zero3_init():  # built by this rank alone: no partitioning collectives
                fresh, _ = build_model(config)
            fresh.load_state_dict(state_dict)
            save_value_model(merged(fresh), tokenizer, target)
        else:
            staging = target.with_name(f"model.tmp-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
            replace_dir(staging, target)
    accelerator.wait_for_everyone()
    return target


# ------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(accelerator, model, loader) -> dict[str, float]:
    """Value MSE over all labelled prefixes of the held-out trajectories, and the sign accuracy
    of the value at each trajectory's final labelled prefix (targets of 0 are not counted)."""
    model.eval()
    rows = []
    for batch in loader:
        predictions = value_predictions(model, batch)
        selected = batch["label_mask"]
        squared = torch.where(selected, (predictions - batch["labels"]) ** 2, 0.0).sum(-1)
        positions = torch.arange(selected.shape[1], device=selected.device)
        last = (selected.long() * (positions + 1)).argmax(-1)  # last labelled token of each row
        final_prediction = predictions.gather(1, last[:, None])[:, 0]
        final_target = batch["labels"].gather(1, last[:, None])[:, 0]
        counted = final_target != 0
        correct = (torch.sign(final_prediction) == torch.sign(final_target)) & counted
        rows.append(torch.stack([squared, selected.sum(-1).float(), correct.float(), counted.float()], -1))
    model.train()
    local = torch.cat(rows) if rows else torch.zeros((0, 4), device=accelerator.device)
    totals = accelerator.gather_for_metrics(local).sum(0).tolist()  # drops the padding duplicates
    return {"mse": totals[0] / max(totals[1], 1.0), "sign_acc": totals[2] / max(totals[3], 1.0),
            "labels": int(totals[1]), "trajectories": int(totals[3])}


# ------------------------------------------------------------------------------- training


def train_value(config: ValueTrainConfig, render: Render | None = None) -> dict[str, Any]:
    """Train (or resume training) the value model; returns the metrics also written to
    <output_dir>/metrics.json. `render(question, steps)` defaults to each row's task format
    (config.task for rows without one)."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    config.validate()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ds_config, ds_source = resolve_deepspeed_config(config, world_size)
    accelerator = make_accelerator(config, ds_config)
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if not config.resume and accelerator.is_main_process:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()

    train_examples, eval_examples = load_examples(config, render)
    resume_from = latest_checkpoint(output_dir) if config.resume else None
    trainer_state = json.loads((resume_from / "trainer_state.json").read_text()) if resume_from else None
    if trainer_state:
        check_resume(trainer_state, config, accelerator.num_processes, resume_from)
    # A tiny model is built whole (ZeRO-3 partitions it at prepare); a big backbone loads partitioned.
    with no_zero3_init() if config.tiny is not None else contextlib.nullcontext():
        model, tokenizer = build_model(config, weights=resume_from)
    train_features, dropped = tokenize_examples(train_examples, tokenizer, config.max_length)
    eval_features, eval_dropped = tokenize_examples(eval_examples, tokenizer, config.max_length)
    if not train_features:
        raise ConfigError(f"no training labels fit in max_length={config.max_length} tokens; raise max_length")

    sampler = EpochShuffle(len(train_features), config.seed)
    pad = tokenizer.pad_token_id
    train_loader = DataLoader(train_features, batch_size=config.per_device_train_batch_size, sampler=sampler,
                              collate_fn=lambda f: collate(f, pad))
    raw_optimizer = make_optimizer(model, config)
    use_ds = ds_config is not None
    if trainer_state and trainer_state["optimizer_saved"] and not use_ds:
        load_optimizer(raw_optimizer, resume_from / "optimizer.safetensors")
    prepared = [model, raw_optimizer, train_loader]
    if eval_features:
        prepared.append(DataLoader(eval_features, batch_size=config.per_device_train_batch_size,
                                   collate_fn=lambda f: collate(f, pad)))
    model, optimizer, train_loader, *maybe_eval = accelerator.prepare(*prepared)
    eval_loader = maybe_eval[0] if maybe_eval else None

    batches_per_epoch = len(train_loader)
    accumulation = config.gradient_accumulation_steps
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
    if config.max_steps > 0:
        total_steps = config.max_steps
    else:
        total_steps = math.ceil(steps_per_epoch * config.num_train_epochs)
    epochs = math.ceil(total_steps / steps_per_epoch)
    # Built on the torch optimizer and stepped by hand once per real optimizer step: Accelerate's
    # scheduler wrapper would step it once per process. DeepSpeed's ZeRO optimizer wraps the same
    # torch optimizer and reads the learning rate from its param groups.
    scheduler = get_scheduler(config.lr_scheduler_type, raw_optimizer,
                              num_warmup_steps=round(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    global_step, start_epoch, batches_done = 0, 0, 0
    if trainer_state:
        scheduler.load_state_dict(trainer_state["scheduler"])
        # Building the scheduler set the step-0 rate on the optimizer; put back the saved one.
        for group, lr in zip(raw_optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
        global_step, start_epoch, batches_done = (trainer_state[k] for k in ("global_step", "epoch", "batches_done"))
        if use_ds and accelerator.is_main_process:
            print(f"resuming from {resume_from}: weights and schedule restored; DeepSpeed optimizer moments restart")

    def state_now(epoch: int, done: int) -> dict:
        if done == batches_per_epoch:  # a finished epoch resumes at the start of the next
            epoch, done = epoch + 1, 0
        return {"global_step": global_step, "epoch": epoch, "batches_done": done,
                "scheduler": scheduler.state_dict(), "optimizer_saved": not use_ds,
                "num_processes": accelerator.num_processes, "config": resumable_config(config)}

    def out_of_time() -> bool:
        """Rank 0's clock decides and every rank follows (one that stopped alone would hang the others)."""
        late = torch.tensor(float(config.max_seconds is not None and time.perf_counter() - started_at
                                  > config.max_seconds), device=accelerator.device)
        return bool(accelerator.reduce(late if accelerator.is_main_process else late * 0, "sum").item())

    curve, evals = [], []
    tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    loss_sum = torch.zeros((), device=accelerator.device)
    loss_count = torch.zeros((), device=accelerator.device)
    started_at, steps_this_run, stopped_early = time.perf_counter(), 0, False
    progress = tqdm(total=total_steps, initial=global_step, disable=not accelerator.is_main_process,
                    desc="value", leave=False)
    model.train()
    epoch = epochs - 1  # what a resumed finished run reports
    for epoch in range(start_epoch, epochs):
        skip = batches_done if epoch == start_epoch else 0
        sampler.set_epoch(epoch)  # the epoch fixes the shuffle; set it on every loader that may forward it
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        loader.set_epoch(epoch)
        done = skip
        for batch in loader:
            if global_step >= total_steps:
                break
            with accelerator.accumulate(model):
                loss = value_loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and not use_ds and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            done += 1
            tokens += batch["attention_mask"].sum()
            loss_sum += loss.detach()
            loss_count += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            steps_this_run += 1
            progress.update(1)
            if global_step % config.logging_steps == 0 or global_step == 1:
                mean_loss = (accelerator.reduce(loss_sum, "sum") / accelerator.reduce(loss_count, "sum")).item()
                curve.append({"step": global_step, "epoch": epoch, "loss": mean_loss,
                              "learning_rate": scheduler.get_last_lr()[0]})
                loss_sum.zero_()
                loss_count.zero_()
            stopped_early = out_of_time()
            periodic = config.save_steps and global_step % config.save_steps == 0
            if stopped_early or (periodic and done < batches_per_epoch):  # the epoch end saves anyway
                save_checkpoint(accelerator, model, tokenizer, optimizer, state_now(epoch, done), output_dir,
                                config.save_total_limit)
            if stopped_early:
                break
        if stopped_early:
            break
        if eval_loader is not None:
            evals.append({"epoch": epoch, **evaluate(accelerator, model, eval_loader)})
        save_checkpoint(accelerator, model, tokenizer, optimizer, state_now(epoch, done), output_dir,
                        config.save_total_limit)
    progress.close()
    train_seconds = time.perf_counter() - started_at
    if eval_loader is not None and (stopped_early or not evals):  # stopped mid-epoch, or resumed a finished run
        evals.append({"epoch": epoch, **evaluate(accelerator, model, eval_loader)})
    total_tokens = int(accelerator.reduce(tokens, "sum").item())

    metrics: dict[str, Any] = {
        "train_loss": curve[-1]["loss"] if curve else None,
        "eval_loss": evals[-1]["mse"] if evals else None,
        "eval_mse": evals[-1]["mse"] if evals else None,
        "eval_sign_acc": evals[-1]["sign_acc"] if evals else None,
        "train_loss_curve": curve,
        "evals": evals,
        "global_step": global_step,
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "deepspeed_config": ds_source or None,
        "zero_stage": ds_config["zero_optimization"].get("stage") if ds_config else None,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_examples": len(train_features),
        "eval_examples": len(eval_features),
        "dropped_labels": dropped + eval_dropped,
        "batches_per_epoch": batches_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "steps_this_run": steps_this_run,
        "resumed_from_step": trainer_state["global_step"] if trainer_state else None,
        "stopped_early": stopped_early,
        "train_tokens": total_tokens,
        "train_seconds": train_seconds,
        "tokens_per_second": total_tokens / train_seconds if train_seconds > 0 else None,
        "output_dir": str(output_dir),
        "config": to_dict(config),
    }
    if use_ds:
        metrics["engine_global_steps"] = int(model.global_steps)
    metrics["model_dir"] = str(save_final_model(accelerator, model, tokenizer, config))
    if accelerator.is_main_process:
        write_json(metrics, output_dir / METRICS_FILE)
    accelerator.wait_for_everyone()
    if use_ds:
        forget_zero3()
    return metrics
