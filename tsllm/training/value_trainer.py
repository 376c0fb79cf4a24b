"""Value/ORM trainer: MSE regression of a per-token scalar head onto prefix returns, on
`transformers.Trainer` (the stack the policy trainer's TRL uses: DeepSpeed, resume, logging).

    metrics = train_value(ValueTrainConfig(data_files=["traj.jsonl"], tiny=TinyModelConfig()))

One example is one trajectory: its full text is tokenized once (with offsets) and the head is read
at the token holding the last character of every prefix (tsllm.training.data); all other tokens
are ignored. `ValueTrainer.compute_loss` is the mean squared error of the token-classification
head's output at those step-end positions against their targets (Monte-Carlo returns, or
TD(lambda)), over a micro-batch; everything else (optimizer, schedule, accumulation, clipping,
DDP and DeepSpeed, data order, logging) is the Trainer's.

Runs as one process, under `torchrun --nproc_per_node N` / `accelerate launch` (DDP; gloo on
CPU), and with DeepSpeed ZeRO-2/3 when `deepspeed=<json>` is set (or the launcher says
`--use_deepspeed`), on GPUs or CPU processes. Batch geometry lives in ONE place, this config: the
DeepSpeed json says "auto" for batch sizes, accumulation and clipping, and a hard-coded value that
contradicts the config stops the run at start, naming both values.

Steps: each process sees B = ceil(examples / (processes * per_device_train_batch_size)) batches
per epoch (the last round is padded by cycling from the start), and the optimizer steps every
`gradient_accumulation_steps` batches and once more on a final partial group, so
steps_per_epoch = ceil(B / gradient_accumulation_steps); all steps: max_steps, or
ceil(steps_per_epoch * num_train_epochs). The schedule (lr_scheduler_type, warmup over
warmup_ratio of all steps) is defined in these optimizer steps. `max_seconds` ends training early
(then the model is saved as usual).

Checkpoints: `<output_dir>/checkpoints/checkpoint-<N>/` holds the model (safetensors; the adapter
only with LoRA), the tokenizer, the optimizer moments (optimizer.safetensors; not under DeepSpeed,
whose optimizer state is sharded and saved by DeepSpeed as pickles: a DeepSpeed resume restarts
the moments, as fp16's loss scale does), the scheduler, the RNG state of each process (safetensors), the Trainer's
trainer_state.json and resume.json (this config, the process count). The Trainer's own checkpoint
writer is replaced because it pickles (optimizer.pt, rng_state.pth, training_args.bin) and writes
in place; here each checkpoint is written to a temporary sibling and renamed, so a killed run
leaves only complete checkpoints, and a rerun with the same config resumes from the newest one
through the Trainer's resume (same data order, schedule and result as an uninterrupted run). The
head has no dropout (tsllm.models.value), so nothing random is left to restore.
The finished model (LoRA merged) goes to `<output_dir>/model`, the metrics (keys shared with the
policy trainer: tsllm.training.args) to `<output_dir>/metrics.json`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import torch
from transformers import Trainer, TrainerCallback

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
from tsllm.progress import quiet_library_bars
from tsllm.training.args import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    MODEL_DIR,
    TrainArgs,
    arg,
    changed_settings,
    default_of,
    resumable_settings,
)
from tsllm.training.callbacks import StopAfterSeconds, quiet_off_terminal
from tsllm.training.data import (
    Formats,
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
CHECKPOINT_PREFIX = "checkpoint-"  # transformers' name, so its resume finds the step in the folder name


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
    target: Literal["value", "orm"] = arg("value", "label every prefix (value) or the final text only (ORM)")
    td_lambda: float | None = arg(None, "null: Monte-Carlo returns; else TD(lambda) targets from the rows' "
                                        "'values'")

    def validate(self) -> None:
        super().validate()
        if self.tiny is not None and self.tiny.tokenizer == "bpe":
            raise bad("tiny.tokenizer", "a fresh tiny value model here has the char tokenizer only (a BPE one is "
                                        "trained with the policy, on its data); set base_model to that policy")
        if not self.data_files:
            raise bad("data_files", "give at least one trajectories jsonl file")
        for path in self.data_files:
            if not Path(path).is_file():
                raise bad("data_files", f"file {path} does not exist")

    def validate_settings(self) -> None:
        super().validate_settings()
        for path in self.eval_files:
            if not Path(path).is_file():
                raise bad("eval_files", f"file {path} does not exist")
        if self.td_lambda is not None and not 0.0 <= self.td_lambda <= 1.0:
            raise bad("td_lambda", f"must be in [0, 1] or null, got {self.td_lambda}")



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



# ------------------------------------------------------------------------------- data


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


def load_examples(config: ValueTrainConfig, render: Render | None,
                  formats: Formats | None = None) -> tuple[list[ValueExample], list[ValueExample]]:
    """(train, eval) examples. Without an explicit `render`, each row is rendered in the format
    (of `formats`) of its own "task" field, or of config.task when it has none."""

    def build(paths):
        by_task: dict[str | None, list] = {}
        for trajectory in read_trajectories(paths, formats):
            by_task.setdefault(None if render else (trajectory.task or config.task), []).append(trajectory)
        examples = []
        for task, trajectories in by_task.items():
            task_render = render or _task_render(task, config.template, trajectories[0].where, formats)
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


def _task_render(task: str, template: str | None, where: str, formats: Formats | None) -> Render:
    try:
        return render_for_task(task, template, formats)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None


# ------------------------------------------------------------------------------- model


def build_model(config: ValueTrainConfig, weights: Path | None = None):
    """(model, tokenizer) as configured; `weights` = a checkpoint folder to start from."""
    if weights is not None and not config.use_lora:  # a full checkpoint is itself a value model folder
        return build_value_model(weights, head_seed=config.seed)
    model, tokenizer = build_value_model(config.base_model, config.tiny, head_seed=config.seed)
    if config.use_lora:
        with torch.random.fork_rng(devices=[]):  # the adapters' init is fixed by the seed alone
            torch.manual_seed(config.seed)
            model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha,
                             target_modules=config.lora_target_modules, dropout=config.lora_dropout)
        if weights is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            result = set_peft_model_state_dict(model, load_file(weights / "adapter_model.safetensors"))
            if result.unexpected_keys:
                raise ValueError(f"checkpoint {weights} does not fit the LoRA config: {result.unexpected_keys[:3]}")
    return model, tokenizer


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


def save_rng_state(folder: Path, rank: int) -> None:
    from safetensors.torch import save_file

    states = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    save_file(states, folder / f"rng_state_{rank}.safetensors")


def load_rng_state(folder: Path, rank: int) -> None:
    from safetensors.torch import load_file

    path = folder / f"rng_state_{rank}.safetensors"
    if path.is_file():
        states = load_file(path)
        torch.random.set_rng_state(states["cpu"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["cuda"])


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint (complete = renamed into place, so it has resume.json)."""
    found = []
    for folder in checkpoints.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = folder.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (folder / "resume.json").is_file():
            found.append((int(suffix), folder))
    return max(found)[1] if found else None


def check_resume(saved: dict, config: ValueTrainConfig, num_processes: int, folder: Path) -> None:
    changed = changed_settings(config, saved["config"])
    if changed:
        key, (before, now) = next(iter(changed.items()))
        raise ConfigError(f"checkpoint {folder} was trained with {key}={before!r}, the config now says "
                          f"{now!r} (changed keys: {list(changed)}); use the same config, a new output_dir, "
                          "or resume=false to start over")
    if saved["num_processes"] != num_processes:
        raise ConfigError(f"checkpoint {folder} was written by {saved['num_processes']} processes, this run has "
                          f"{num_processes}; the data shards would differ. Relaunch with the same number")


# ------------------------------------------------------------------------------- the Trainer


class ValueTrainer(Trainer):
    """transformers.Trainer with the value loss, value metrics, and checkpoints without pickles."""

    def __init__(self, *args, value_config: ValueTrainConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.value_config = value_config
        # The loss is a mean per micro-batch: let the Trainer average it over accumulation
        # (it would otherwise expect a sum over a token count, as causal-LM losses give).
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = value_loss(model, inputs)
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Value MSE over every labelled prefix of the held-out trajectories (eval_loss, eval_mse)
        and the sign accuracy of each trajectory's final labelled prefix (eval_sign_acc)."""
        scores = value_metrics(self.accelerator, self.model, self.get_eval_dataloader(eval_dataset))
        metrics = {f"{metric_key_prefix}_loss": scores["mse"], **{f"{metric_key_prefix}_{k}": v
                                                                    for k, v in scores.items()}}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # -- checkpoints: safetensors and JSON only, written aside and renamed into place

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:  # the Trainer's version also pickles the TrainingArguments
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
            self.processing_class.save_pretrained(output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        root = Path(self.args.output_dir)
        target = root / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        staging = target.with_name(f"{target.name}.tmp")
        main = self.args.should_save
        if main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.save_model(str(staging), _internal_call=True)  # every rank: ZeRO-3 gathers the weights
        save_rng_state(staging, self.args.process_index)
        if main:
            if not self.is_deepspeed_enabled:
                save_optimizer(self.optimizer, staging / "optimizer.safetensors")
            write_json(self.lr_scheduler.state_dict(), staging / "scheduler.json")
            self.state.save_to_json(str(staging / "trainer_state.json"))
            write_json({"config": resumable_settings(self.value_config), "num_processes": self.args.world_size,
                        "optimizer_saved": not self.is_deepspeed_enabled}, staging / "resume.json")
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in
        if main:
            replace_dir(staging, target)
            complete = sorted((int(f.name[len(CHECKPOINT_PREFIX):]), f) for f in root.glob(f"{CHECKPOINT_PREFIX}*")
                              if f.name[len(CHECKPOINT_PREFIX):].isdigit() and (f / "resume.json").is_file())
            for _, old in complete[:-self.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Nothing: the model was built from the checkpoint's weights (see build_model)."""

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        folder = Path(checkpoint)
        if json.loads((folder / "resume.json").read_text())["optimizer_saved"] and not self.is_deepspeed_enabled:
            load_optimizer(self.optimizer, folder / "optimizer.safetensors")
        self.lr_scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
        # Building the scheduler set the step-0 rate on the optimizer; put back the saved one.
        for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_last_lr()):
            group["lr"] = lr
        if self.is_deepspeed_enabled and self.args.should_save:
            print(f"resuming from {folder}: weights and schedule restored; DeepSpeed optimizer moments restart")

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None:
            load_rng_state(Path(checkpoint), self.args.process_index)


class StopAfterCheckpoint(TrainerCallback):
    """Raise `error` once the checkpoint of `step` is written: a kill at a known point (tests)."""

    def __init__(self, step: int, error: type[BaseException]):
        self.step, self.error = step, error

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.error(f"stopped after the checkpoint of step {self.step}")


# ------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def value_metrics(accelerator, model, loader) -> dict[str, float]:
    """MSE over all labelled prefixes and sign accuracy of each row's final labelled prefix
    (targets of 0 are not counted), summed over processes without the padding duplicates."""
    was_training = model.training
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
    model.train(was_training)
    local = torch.cat(rows) if rows else torch.zeros((0, 4), device=accelerator.device)
    totals = accelerator.gather_for_metrics(local).sum(0).tolist()
    return {"mse": totals[0] / max(totals[1], 1.0), "sign_acc": totals[2] / max(totals[3], 1.0),
            "labels": int(totals[1]), "trajectories": int(totals[3])}


# ------------------------------------------------------------------------------- training


def training_arguments(config: ValueTrainConfig, ds_config: dict | None, configured_state: bool = False):
    """The Trainer's arguments from the config (creating them sets up the process group)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(config.output_dir) / CHECKPOINTS_DIR),
        **config.trainer_arguments(ds_config),
        optim="adamw_torch",
        logging_first_step=True,
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,  # read only with save_strategy="steps"
        save_total_limit=config.save_total_limit,
        eval_strategy="epoch",  # turned off in train_value when nothing is held out
        accelerator_config={"use_configured_state": configured_state},
        remove_unused_columns=False,  # the collator's label_mask is not a model argument
    )


def cpu_deepspeed_state(ds_config: dict | None) -> bool:
    """Set up the process group for DeepSpeed on several CPU processes, where the Trainer cannot:
    it hands Accelerate no backend for DeepSpeed, and without GPUs Accelerate then sees one process
    (DeepSpeed sees all and its batch check fails). Built here over gloo, the Trainer is told to use
    it (use_configured_state). False when not needed."""
    if ds_config is None or torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    with mock.patch.dict(os.environ, {"ACCELERATE_USE_DEEPSPEED": "true"}):  # as the Trainer sets it, briefly
        PartialState(backend="gloo")
    return True


def train_value(config: ValueTrainConfig, render: Render | None = None,
                callbacks: list[TrainerCallback] | None = None, formats: Formats | None = None) -> dict[str, Any]:
    """Train (or resume training) the value model; returns the metrics also written to
    <output_dir>/metrics.json. `render(question, steps)` defaults to each row's task format in
    `formats` (e.g. the `tsllm.tasks` module; config.task for rows without one); `callbacks` go
    to the Trainer."""
    config.validate()
    quiet_library_bars()  # before the model loads: its "Loading weights" bar too
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ds_config, ds_source = resolve_deepspeed_config(config, world_size)
    args = training_arguments(config, ds_config, configured_state=cpu_deepspeed_state(ds_config))
    output_dir, checkpoints = Path(config.output_dir), Path(args.output_dir)
    if not config.resume and args.should_save:
        shutil.rmtree(checkpoints, ignore_errors=True)
    barrier()

    train_examples, eval_examples = load_examples(config, render, formats)
    resume_from = latest_checkpoint(checkpoints) if config.resume else None
    resumed_from_step = None
    if resume_from is not None:
        check_resume(json.loads((resume_from / "resume.json").read_text()), config, args.world_size, resume_from)
        resumed_from_step = json.loads((resume_from / "trainer_state.json").read_text())["global_step"]
    # A tiny model is built whole (ZeRO-3 partitions it at prepare); a big backbone loads partitioned.
    with no_zero3_init() if config.tiny is not None else contextlib.nullcontext():
        model, tokenizer = build_model(config, weights=resume_from)
    train_features, dropped = tokenize_examples(train_examples, tokenizer, config.max_length)
    eval_features, eval_dropped = tokenize_examples(eval_examples, tokenizer, config.max_length)
    if not train_features:
        raise ConfigError(f"no training labels fit in max_length={config.max_length} tokens; raise max_length")
    if not eval_features:  # nothing held out (eval_fraction=0, or every label cut)
        from transformers.trainer_utils import IntervalStrategy

        args.eval_strategy = IntervalStrategy.NO

    pad = tokenizer.pad_token_id
    trainer = ValueTrainer(model=model, args=args, train_dataset=train_features,
                           eval_dataset=eval_features or None, data_collator=lambda f: collate(f, pad),
                           processing_class=tokenizer, value_config=config,
                           callbacks=[*([StopAfterSeconds(config.max_seconds)] if config.max_seconds else []),
                                      *(callbacks or [])])
    quiet_off_terminal(trainer)
    # Every process gets the same number of batches (the last round padded from the start).
    batches_per_epoch = math.ceil(len(train_features) / (args.world_size * config.per_device_train_batch_size))
    started = time.perf_counter()
    # DeepSpeed would load its own (pickled) engine checkpoint on resume; the weights came with
    # the model here, and the moments restart (see the module docstring).
    skip_engine_load = mock.patch("transformers.trainer.deepspeed_load_checkpoint", lambda *a, **k: None)
    with skip_engine_load if ds_config is not None else contextlib.nullcontext():
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - started
    metrics = collect_metrics(trainer, config, resumed_from_step, train_seconds, batches_per_epoch)
    metrics.update({"deepspeed_config": ds_source or None,
                    "zero_stage": ds_config["zero_optimization"].get("stage") if ds_config else None,
                    "train_examples": len(train_features), "eval_examples": len(eval_features),
                    "dropped_labels": dropped + eval_dropped})
    if ds_config is not None:
        metrics["engine_global_steps"] = int(trainer.model_wrapped.global_steps)
    metrics["model_dir"] = str(save_final_model(trainer, tokenizer, config))
    if args.should_save:
        write_json(metrics, output_dir / METRICS_FILE)
    barrier()
    if ds_config is not None:
        forget_zero3()
    return metrics


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def collect_metrics(trainer, config: ValueTrainConfig, resumed_from_step: int | None, train_seconds: float,
                    batches_per_epoch: int) -> dict[str, Any]:
    """The metric keys both trainers write (tsllm.training.args), from the Trainer's log history."""
    state = trainer.state
    curve = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"], "learning_rate": e.get("learning_rate")}
             for e in state.log_history if "loss" in e]
    evals = [{"epoch": e.get("epoch"), "mse": e["eval_mse"], "sign_acc": e["eval_sign_acc"]}
             for e in state.log_history if "eval_mse" in e]
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    tokens = int(state.num_input_tokens_seen)
    return {
        "train_loss": curve[-1]["loss"] if curve else None,
        "eval_loss": evals[-1]["mse"] if evals else None,
        "eval_mse": evals[-1]["mse"] if evals else None,
        "eval_sign_acc": evals[-1]["sign_acc"] if evals else None,
        "train_loss_curve": curve,
        "evals": evals,
        "global_step": state.global_step,
        "world_size": trainer.args.world_size,
        "distributed_type": trainer.accelerator.distributed_type.value,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "batches_per_epoch": batches_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": state.max_steps,
        "steps_this_run": state.global_step - (resumed_from_step or 0),
        "resumed_from_step": resumed_from_step or None,
        "stopped_early": state.global_step < state.max_steps,
        "train_tokens": tokens,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens / train_seconds if train_seconds > 0 else None,
        "output_dir": str(config.output_dir),
        "config": to_dict(config),
    }


def save_final_model(trainer, tokenizer, config: ValueTrainConfig) -> Path:
    """The finished value model at <output_dir>/model, LoRA merged: what ValueFunction loads."""
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model_wrapped)  # every rank: gathers shards under ZeRO-3
    target = Path(config.output_dir) / MODEL_DIR
    if trainer.args.should_save:
        if config.use_lora:  # fold the adapters into a fresh CPU copy (the trained one may be sharded)
            with no_zero3_init():  # built by this rank alone: no partitioning collectives
                fresh, _ = build_model(config)
            fresh.load_state_dict(state_dict)
            save_value_model(merged(fresh), tokenizer, target)
        else:
            staging = target.with_name(f"{MODEL_DIR}.tmp-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            accelerator.unwrap_model(trainer.model).save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
            replace_dir(staging, target)
    barrier()
    return target
