"""The settings both trainers share, under the names of transformers' `TrainingArguments` and TRL.

    ValueTrainConfig(data_files=["traj.jsonl"], tiny=TinyModelConfig(), learning_rate=3e-3)
    PolicyTrainConfig(base_model="out/policy", data_files=["traj.jsonl"], learning_rate=1e-3)

`TrainArgs` holds every key the value trainer (tsllm.training.value_trainer) and the policy
trainer (tsllm.training.policy_trainer) have in common, each with a help string, so the same thing
has the same name in both YAML sections and both recipes. A trainer's config extends it with its
own keys and may change a default with `default_of` (the help text stays the one written here).

Output layout, both trainers: `<output_dir>/model/` (the finished model, safetensors),
`<output_dir>/metrics.json` (METRICS_FILE) and, where the trainer checkpoints,
`<output_dir>/checkpoints/`. Metric keys both write: train_loss, eval_loss, train_loss_curve
(points {"step", "epoch", "loss", "learning_rate"}), global_step, world_size, train_examples,
eval_examples, train_tokens, train_seconds, tokens_per_second, output_dir, model_dir, config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tsllm.config import as_read_now, bad, to_dict
from tsllm.models.tiny import TinyModelConfig

METRICS_FILE = "metrics.json"  # in <output_dir>, beside model/ and checkpoints/
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
# Keys that may change between a run and its resume without changing what is trained.
RESUME_FREE_KEYS = {"output_dir", "resume", "logging_steps", "save_steps", "save_total_limit", "max_seconds"}


def resumable_settings(config: Any) -> dict[str, Any]:
    """A trainer config's settings that a resume must find unchanged (written beside checkpoints)."""
    return {k: v for k, v in to_dict(config).items() if k not in RESUME_FREE_KEYS}


def changed_settings(config: Any, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, value now)} for each resumable setting `config` changes from `saved`,
    read as this version reads it: keys added since the checkpoints were written count at their
    defaults, so an upgrade that adds a key does not refuse every earlier checkpoint."""
    before = {k: v for k, v in as_read_now(type(config), saved).items() if k not in RESUME_FREE_KEYS}
    now = resumable_settings(config)
    return {k: (before.get(k), now.get(k)) for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)}


def arg(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002 (TRL's name)
    """A dataclass field with a help string (printed by config tools, as in TRL's configs)."""
    if isinstance(default, (list, dict)):
        value = default
        kwargs["default_factory"] = lambda: type(value)(value)
        return field(metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def default_of(base: type, name: str, default: Any) -> Any:
    """The field `name` of `base` with another default and the same help string."""
    return arg(default, base.__dataclass_fields__[name].metadata["help"])


@dataclass
class TrainArgs:
    """Keys common to both trainers. A subclass adds its own and calls `validate()` before work."""

    # what to train, on what
    base_model: str | None = arg(None, "model folder or hub id to start from (a causal LM; the value "
                                       "trainer also takes a saved value model); set this or tiny")
    tiny: TinyModelConfig | None = arg(None, "instead of base_model: a fresh tiny Llama with the character "
                                             "tokenizer, e.g. {num_layers: 2}")
    data_files: list[str] = arg([], "trajectories jsonl files to train on (tsllm.training.data)")
    task: str = arg("game24", "prompt format for rows without a 'task' field: a task name (the caller passes the "
                              "tasks' formats to the trainer) or 'text'")
    template: str | None = arg(None, "prompt template replacing the task's (holds '{question}')")
    eval_fraction: float = arg(0.1, "share of the questions held out for the eval loss (all rows of a "
                                    "question on one side)")
    output_dir: str = arg("out/train", "folder for model/, metrics.json and checkpoints/")
    # optimisation, as transformers.TrainingArguments names it
    learning_rate: float = arg(1e-3, "peak AdamW learning rate")
    num_train_epochs: float = arg(1.0, "passes over the training rows")
    max_steps: int = arg(-1, "optimizer steps in all; > 0 overrides num_train_epochs")
    max_seconds: float | None = arg(None, "stop training after this many seconds (all processes stop "
                                          "together); null: no time limit")
    # checkpoints, as transformers.TrainingArguments names them, and resume from them
    save_steps: int = arg(0, "optimizer steps between checkpoints; 0: at epoch ends only")
    save_total_limit: int = arg(2, "checkpoints kept in <output_dir>/checkpoints (the newest)")
    resume: bool = arg(True, "continue from the newest checkpoint in <output_dir>/checkpoints")
    per_device_train_batch_size: int = arg(8, "rows per process per micro-batch")
    gradient_accumulation_steps: int = arg(1, "micro-batches per optimizer step (set here only; a "
                                              "DeepSpeed json says \"auto\")")
    max_length: int = arg(512, "tokens per row; longer rows are cut at the end")
    lr_scheduler_type: str = arg("linear", "learning-rate schedule (transformers' get_scheduler names: "
                                           "linear, cosine, constant_with_warmup, ...)")
    warmup_ratio: float = arg(0.0, "share of the optimizer steps spent warming the learning rate up")
    weight_decay: float = arg(0.0, "AdamW weight decay (not on biases and norms)")
    max_grad_norm: float = arg(1.0, "gradient clipping norm; 0 turns clipping off")
    logging_steps: int = arg(10, "optimizer steps between points of train_loss_curve")
    seed: int = arg(0, "seed of initialisation, data order and the held-out split")
    # LoRA (PEFT)
    use_lora: bool = arg(False, "train LoRA adapters (and the value head) instead of every weight")
    lora_r: int = arg(8, "LoRA rank (width of the adapters)")
    lora_alpha: int = arg(16, "LoRA scaling numerator")
    lora_dropout: float = arg(0.0, "dropout on the LoRA inputs")
    lora_target_modules: str | list[str] = arg("all-linear", "modules that get adapters: a list of names "
                                                             "or 'all-linear'")
    # hardware
    deepspeed: str | None = arg(None, "DeepSpeed json (configs/deepspeed/zero2.json, zero3.json); null: "
                                      "plain DDP or one process")
    mixed_precision: Literal["no", "bf16", "fp16"] = arg("no", "bf16 on recent GPUs; 'no' (fp32) on CPU")

    def validate(self) -> None:
        """Everything, before a run: what to train and on what, then every setting."""
        if (self.base_model is None or self.base_model == "") == (self.tiny is None):
            raise bad("base_model", "set exactly one of base_model=<model folder> or tiny (a TinyModelConfig "
                                    "mapping, e.g. `tiny: {}`)")
        self.validate_settings()

    def validate_settings(self) -> None:
        """The settings alone (not base_model, tiny, data_files, task, which a caller such as the
        loop fills in at run time): a config section can be checked at load, before any work."""
        if self.template is not None and "{question}" not in self.template:
            raise bad("template", "must contain '{question}'")
        positive = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "logging_steps", "lora_r", "lora_alpha")
        for key in positive:
            if not getattr(self, key) > 0:
                raise bad(key, f"must be > 0, got {getattr(self, key)}")
        if self.max_length < 2:
            raise bad("max_length", f"must be >= 2, got {self.max_length}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise bad("max_steps", f"must be > 0, or -1 to train num_train_epochs, got {self.max_steps}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise bad("max_seconds", f"must be > 0 or null, got {self.max_seconds}")
        if self.save_steps < 0:
            raise bad("save_steps", f"must be >= 0, got {self.save_steps}")
        if self.save_total_limit < 1:
            raise bad("save_total_limit", f"must be >= 1, got {self.save_total_limit}")
        for key in ("warmup_ratio", "eval_fraction", "lora_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        for key in ("weight_decay", "max_grad_norm"):
            if not getattr(self, key) >= 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        from transformers import SchedulerType

        names = [s.value for s in SchedulerType]
        if self.lr_scheduler_type not in names:
            raise bad("lr_scheduler_type", f"unknown schedule {self.lr_scheduler_type!r}; use one of {names}")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise bad("deepspeed", f"file {self.deepspeed} does not exist (see configs/deepspeed/)")

    def trainer_arguments(self, deepspeed: Any) -> dict[str, Any]:
        """The transformers `TrainingArguments` both trainers set from these keys, the same way;
        `deepspeed` is the DeepSpeed config (path or dict) the Trainer gets, or None."""
        import torch

        from tsllm.progress import quiet_library_bars, show_progress

        quiet_library_bars()

        return dict(
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_ratio,  # a float below 1 is a ratio of the total steps
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            logging_steps=self.logging_steps,
            seed=self.seed,
            data_seed=self.seed,
            bf16=self.mixed_precision == "bf16",  # TRL defaults to bf16: fp32 unless asked
            fp16=self.mixed_precision == "fp16",
            # use_cpu would make Accelerate drop DeepSpeed silently and run DDP (docs/CPU.md, several processes)
            use_cpu=not torch.cuda.is_available() and deepspeed is None,
            deepspeed=deepspeed,
            report_to="none",  # the loop sends the curves to its own W&B run (callbacks.ReportLogs)
            include_num_input_tokens_seen="non_padding",
            dataloader_num_workers=0,
            disable_tqdm=not show_progress(),  # off a terminal each redraw is a log line
            ddp_find_unused_parameters=False,
        )
