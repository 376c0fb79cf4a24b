"""Policy SFT with TRL's `SFTTrainer`, optionally through a PEFT LoRA adapter.

    cfg = PolicyTrainConfig(base_model="out/tiny", data_files=["round_0/search/trajectories.jsonl"])
    metrics = train_policy(cfg)        # writes cfg.output_dir/model atomically, returns losses and throughput

Data: trajectories jsonl rows (`question`, `steps`, `reward`, optional `task`, `gold`, `source`)
become prompt/completion pairs. The prompt is exactly what the env shows the policy before its first
step (`env.prompt(TextState(question))`), the completion is every step followed by "\\n", and TRL
appends the tokenizer's EOS so the policy learns to stop after the answer line. TRL's
prompt-completion format with `completion_only_loss=True` sets prompt labels to -100: the policy is
trained on its own steps, never on the question it is given.

Step rows (what the loop writes for a tree target, tsllm/training/targets.py) hold `steps` (the
state), `step` (the one step trained), `ends` and `weight`: the prompt is the env's text of the
state, the completion that one step, followed by EOS only when the step ends the game (TRL would
append it to every completion, teaching the policy to stop after any step, so these rows are
tokenized here the way TRL tokenizes prompt-completion pairs, less that EOS). Each row's token
losses count `weight` times (`WeightedSFTTrainer`: TRL's loss, the sum of token NLLs over the
batch's completion tokens, with each token's NLL times its row's weight), so weight 1 everywhere
is plain SFT. A file of step rows is recognised by its first row holding `step`.

Preference rows (the `preferences` tree target: sibling steps of one state, the higher-Q one
`chosen`) hold `steps`, `chosen`, `rejected` and `chosen_ends` / `rejected_ends`, and train with
TRL's `DPOTrainer` (step DPO): the prompt is the state's text, each completion one step, EOS
only after a step that ends the game (tokenized here, as step rows are, for the same reason), and
the reference is the policy being trained at its start: with LoRA the base with the adapter off
(TRL's PEFT reference), else a frozen copy. `beta` is DPO's; `nll_weight` adds the chosen step's
negative log-likelihood to the loss (DPO alone can meet its loss by making both steps unlikely:
on reach it taught the policy to write empty steps). A file of preference rows is
recognised by its first row holding `chosen`; the held-out loss is then the training loss.

Output, the layout both trainers share (tsllm.training.args): `<output_dir>/model/` and
`<output_dir>/metrics.json`. `merge`: "merged" saves a full checkpoint (LoRA folded into the base;
what `load_causal_lm` and `HFGenerator(path)` read); "adapter" saves only the LoRA weights (what
`HFGenerator.update_weights(path)` applies to its base). Either way with the tokenizer, in
safetensors, written to a temporary sibling folder and renamed into place.

Resume: the Trainer saves checkpoints (weights in safetensors, optimizer, scheduler, RNG and data
position) in `<output_dir>/checkpoints/` every `save_steps` steps or at each epoch's end, keeping
the newest `save_total_limit`. A run started again on the same output_dir and settings continues
from the newest complete one (a killed run loses at most the steps since it); other settings are
refused unless `resume=false`. The checkpoints are deleted once the model is saved.

Runs as one process, or under `torchrun --nproc_per_node 2` / `accelerate launch` (the Trainer
picks the process group up from the launcher's environment; gloo on CPU). `deepspeed=<json>`
trains through DeepSpeed ZeRO (configs/deepspeed/) on GPUs, or in one CPU process: on several
CPU processes Transformers sets up no backend for it, so that combination is refused at start. Progress
bars are drawn only on a terminal (tsllm/progress.py; TSLLM_PROGRESS=0 turns them off there too).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tsllm.atomic import write_dir, write_json
from tsllm.config import ConfigError, bad, to_dict
from tsllm.envs.base import DataError, iter_jsonl
from tsllm.models.tiny import build_tiny, load_causal_lm
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
    Trajectory,
    parse_trajectory,
    read_trajectories,
    render_for_task,
)
from tsllm.training.zero3 import forget_zero3, no_zero3_init

LLAMA_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class PolicyTrainConfig(TrainArgs):
    """One policy SFT run; the shared keys are TrainArgs'. Settable from YAML and as key=value overrides."""

    output_dir: str = default_of(TrainArgs, "output_dir", "out/policy")
    use_lora: bool = default_of(TrainArgs, "use_lora", True)  # False: full fine-tuning (a fresh tiny model)
    lora_target_modules: str | list[str] = default_of(TrainArgs, "lora_target_modules", LLAMA_LINEAR_LAYERS)
    min_reward: float | None = arg(0.0, "keep rows with reward > min_reward; null keeps every row")
    merge: Literal["merged", "adapter"] = arg("merged", "save a full checkpoint (LoRA folded in), or the "
                                                        "LoRA adapter only")
    beta: float = arg(0.1, "preference rows (step DPO): TRL's DPO beta, how far the policy may move from the "
                           "reference (the policy before this run); larger stays closer")
    nll_weight: float = arg(1.0, "preference rows (step DPO): weight of the chosen step's negative "
                                 "log-likelihood (mean per token) added to DPO's loss, which keeps the chosen "
                                 "step likely (iterative RPO); 0: DPO alone, which can make both steps unlikely")

    def validate_settings(self) -> None:
        super().validate_settings()
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise bad("beta", f"must be a finite number > 0, got {self.beta}")
        if not (math.isfinite(self.nll_weight) and self.nll_weight >= 0):
            raise bad("nll_weight", f"must be a finite number >= 0, got {self.nll_weight}")
        if self.merge == "adapter" and not self.use_lora:
            raise bad("merge", "'adapter' needs use_lora=true (full fine-tuning has no adapter); use 'merged'")


# ---------------------------------------------------------------------------------- data


def trajectory_example(trajectory: Trajectory, render: Render) -> dict[str, str]:
    """The prompt/completion pair of one trajectory: the env's prompt before the first step, and
    the steps as the env renders them after it (each followed by the step separator)."""
    prompt = render(trajectory.question, ())
    full = render(trajectory.question, trajectory.steps)
    return {"prompt": prompt, "completion": full[len(prompt):]}


def cached_render(renders: dict[str, Render], task: str, template: str | None, formats: Formats | None,
                  where: str) -> Render:
    """`task`'s render (built once per task into `renders`); an unknown task is a DataError at `where`."""
    if task not in renders:
        try:
            renders[task] = render_for_task(task, template, formats=formats)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
    return renders[task]


def read_examples(paths: Iterable[str | Path], default_task: str = "game24",
                  min_reward: float | None = 0.0, formats: Formats | None = None,
                  template: str | None = None) -> list[dict[str, str]]:
    """Prompt/completion pairs from trajectories files (read and validated by
    `tsllm.training.data`, rendered by `formats`: pass `tsllm.tasks` for task rows, with `template`
    instead of a task's own when given), keeping rows with steps and reward > min_reward (all rows
    when None). Malformed rows raise DataError naming file and line."""
    paths = [Path(p) for p in paths]
    renders: dict[str, Render] = {}
    examples: list[dict[str, str]] = []
    for trajectory in read_trajectories(paths, formats):
        render = cached_render(renders, trajectory.task or default_task, template, formats, trajectory.where)
        if trajectory.steps and (min_reward is None or trajectory.reward > min_reward):
            examples.append(trajectory_example(trajectory, render))
    if not examples:
        raise DataError(
            f"no trajectory in {[str(p) for p in paths]} has steps and reward > {min_reward}; "
            "collect correct trajectories first, or set min_reward=null to train on all of them"
        )
    return examples


def step_text(row: dict[str, Any], step: Any, where: str, renders: dict[str, Render], default_task: str,
              formats: Formats | None, template: str | None) -> tuple[str, str, str]:
    """(question, prompt, completion) of `step` taken at the state of a step or preference row:
    the prompt is the env's text of the state (`row["steps"]`), the completion what the step adds."""
    if not isinstance(step, str) or not isinstance(row["steps"], list):
        raise DataError(f"{where}: each step must be a string and 'steps' a list of strings")
    # checked as the path to the step's end (a reward is not a step row's business)
    trajectory = parse_trajectory({**row, "steps": row["steps"] + [step], "reward": 0.0}, where, formats)
    render = cached_render(renders, trajectory.task or default_task, template, formats, where)
    prompt = render(trajectory.question, trajectory.steps[:-1])
    full = render(trajectory.question, trajectory.steps)
    if not full.startswith(prompt) or len(full) == len(prompt):
        raise DataError(f"{where}: the state's text does not start the text with the step; the task's "
                        "render must extend prefixes")
    return trajectory.question, prompt, full[len(prompt):]


def read_step_examples(paths: Iterable[str | Path], default_task: str = "game24", formats: Formats | None = None,
                       template: str | None = None) -> list[dict[str, Any]]:
    """Prompt/completion pairs of step rows (module doc), each with its `weight`, `ends` and
    `question` (the held-out split keeps all states of a question on one side). Malformed rows
    raise DataError naming file and line."""
    renders: dict[str, Render] = {}
    examples: list[dict[str, Any]] = []
    for path in map(Path, paths):
        for lineno, row in iter_jsonl(path, required=("question", "steps", "step", "weight")):
            where = f"{path}:{lineno}"
            weight = row["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
                raise DataError(f"{where}: 'weight' must be a finite number > 0, got {weight!r}")
            question, prompt, completion = step_text(row, row["step"], where, renders, default_task, formats,
                                                     template)
            examples.append({"prompt": prompt, "completion": completion, "weight": float(weight),
                             "ends": bool(row.get("ends", False)), "question": question})
    if not examples:
        raise DataError(f"no step rows in {[str(p) for p in paths]}")
    return examples


def read_preference_examples(paths: Iterable[str | Path], default_task: str = "game24",
                             formats: Formats | None = None, template: str | None = None) -> list[dict[str, Any]]:
    """Prompt/chosen/rejected triples of preference rows (module doc), with `chosen_ends`,
    `rejected_ends` and `question`. Malformed rows raise DataError naming file and line."""
    renders: dict[str, Render] = {}
    examples: list[dict[str, Any]] = []
    for path in map(Path, paths):
        for lineno, row in iter_jsonl(path, required=("question", "steps", "chosen", "rejected")):
            where = f"{path}:{lineno}"
            question, prompt, chosen = step_text(row, row["chosen"], where, renders, default_task, formats, template)
            _, _, rejected = step_text(row, row["rejected"], where, renders, default_task, formats, template)
            examples.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "question": question,
                             "chosen_ends": bool(row.get("chosen_ends", False)),
                             "rejected_ends": bool(row.get("rejected_ends", False))})
    if not examples:
        raise DataError(f"no preference rows in {[str(p) for p in paths]}")
    return examples


def row_kind(paths: Sequence[str | Path]) -> Literal["trajectories", "steps", "preferences"]:
    """What the data files hold, by their first row: preference rows (it names `chosen`), step
    rows (`step`) or trajectories."""
    for path in paths:
        if Path(path).is_file():
            for _, row in iter_jsonl(path):
                return "preferences" if "chosen" in row else "steps" if "step" in row else "trajectories"
    return "trajectories"


def split_examples(examples: list[dict[str, Any]], eval_fraction: float, seed: int
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded (train, held-out) split by question (a pair's `question`, else its prompt, which a
    whole path's pair shares with every pair of its question): all pairs of one question land on
    the same side, so the held-out loss is measured on questions the policy was not trained on.
    At least one question is held out when eval_fraction > 0, unless there is only one question:
    then all of it trains (a loop round whose search solved one question must not fail for want
    of a loss)."""
    def group(example: dict[str, Any]) -> str:
        return example.get("question", example["prompt"])

    prompts = list(dict.fromkeys(map(group, examples)))
    random.Random(seed).shuffle(prompts)
    count = 0 if eval_fraction == 0 or len(prompts) < 2 else max(1, round(len(prompts) * eval_fraction))
    if count >= len(prompts):
        raise DataError(f"{len(prompts)} question(s) cannot leave {count} held out and any to train on; "
                        "add data or lower eval_fraction")
    held = set(prompts[:count])
    order = {prompt: index for index, prompt in enumerate(prompts)}
    ranked = sorted(examples, key=lambda e: order[group(e)])  # seeded order, stable within a question
    return [e for e in ranked if group(e) not in held], [e for e in ranked if group(e) in held]


# ---------------------------------------------------------------------------------- model


def load_base(config: PolicyTrainConfig, texts: Sequence[str] = (),
              tokenizer: PreTrainedTokenizerBase | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model to fine-tune (fp32, train mode) and its tokenizer. A fresh tiny model's BPE
    tokenizer (tiny.tokenizer=bpe) learns its merges from `texts`, unless `tokenizer` is given."""
    if config.tiny is not None:
        model, tokenizer = build_tiny(config.tiny, texts, tokenizer)
    else:
        try:
            model, tokenizer = load_causal_lm(config.base_model)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"base_model: {err}; "
                                    "or set `tiny: {}` to start from a fresh tiny Llama") from None
    # Positions past the context would train on rotary angles the model never sees at inference.
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and config.max_length > context:
        raise bad("max_length", f"{config.max_length} exceeds the model's context of {context} positions; "
                  f"set max_length<={context}")
    return model.train(), tokenizer




def save_policy(model: Any, tokenizer: PreTrainedTokenizerBase, out: str | Path, merge: str) -> Path:
    """Save `model` (a PeftModel or plain model) as a merged checkpoint or an adapter, with the
    tokenizer, atomically into the folder `out`."""
    from peft import PeftModel

    if merge == "merged" and isinstance(model, PeftModel):
        model = model.merge_and_unload()  # LoRA folded into the base weights; plain model again
    if merge == "adapter" and not isinstance(model, PeftModel):
        raise ValueError("save_policy: merge='adapter' needs a PEFT model (train with use_lora=true)")

    def write(folder: Path) -> None:
        model.save_pretrained(folder)  # safetensors is the default format
        tokenizer.save_pretrained(folder)

    return write_dir(out, write)


def merge_adapter(base_path: str | Path, adapter_path: str | Path, out_path: str | Path) -> Path:
    """Fold the LoRA adapter in `adapter_path` into the base model and save a full checkpoint."""
    from peft import PeftModel

    if not (Path(adapter_path) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"merge_adapter: {adapter_path} has no adapter_config.json; pass a LoRA adapter folder")
    model, tokenizer = load_causal_lm(base_path)
    merged = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    return save_policy(merged, tokenizer, out_path, merge="merged")


# ---------------------------------------------------------------------------------- training


def check_deepspeed_launch(key: str = "deepspeed") -> None:
    """Transformers' Trainer gives DeepSpeed no process-group backend on a CPU-only machine, so
    under several CPU processes it would train with the wrong world size; refuse at start."""
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise bad(key, "the policy trainer (TRL) cannot run DeepSpeed across several CPU processes; "
                       "unset it to train with DDP on CPU (DeepSpeed policy training needs GPUs, or one process)")


def _trl_config(config: PolicyTrainConfig, checkpoints: Path, preferences: bool = False) -> Any:
    """TRL's SFTConfig, or DPOConfig for preference rows, from the shared keys."""
    from trl import DPOConfig, SFTConfig

    # SFT: prompt labels are -100, so the policy learns the steps, not the question (DPO scores
    # the completions alone by construction)
    own = {"completion_only_loss": True}
    if preferences:  # TRL adds its losses, each times its weight; "sft" is the chosen step's NLL
        losses = {"sigmoid": 1.0, **({"sft": config.nll_weight} if config.nll_weight else {})}
        own = {"beta": config.beta, "loss_type": list(losses), "loss_weights": list(losses.values())}
    return (DPOConfig if preferences else SFTConfig)(
        output_dir=str(checkpoints),  # the Trainer's checkpoints (weights as safetensors), for resume
        **config.trainer_arguments(config.deepspeed),
        max_length=config.max_length,
        **own,
        gradient_checkpointing=False,  # TRL turns it on by default; it only costs time on tiny models
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,  # read only with save_strategy="steps"
        save_total_limit=config.save_total_limit,
        eval_strategy="no",  # held-out loss is measured once before and once after training
    )


RESUME_FILE = "resume.json"  # in <output_dir>/checkpoints: what the checkpoints were trained with


def resume_point(config: PolicyTrainConfig, checkpoints: Path, examples: int) -> Path | None:
    """The newest complete checkpoint to resume from (complete: the Trainer writes its
    trainer_state.json last), or None to start over. Every rank must call it before the main
    process writes a fresh resume.json. A checkpoint of other settings is refused, naming them."""
    if not config.resume:
        return None
    done = [p for p in checkpoints.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    if not done:
        return None
    saved = json.loads((checkpoints / RESUME_FILE).read_text()) if (checkpoints / RESUME_FILE).is_file() else {}
    trained = saved.pop("examples", None)
    changed = [*changed_settings(config, saved), *(["examples"] if trained != examples else [])]
    if changed:
        raise ConfigError(f"{checkpoints} holds checkpoints trained with other settings ({', '.join(changed)}); "
                          "restore them, or set resume=false to start over")
    return max(done, key=lambda p: int(p.name.split("-")[-1]))


def lora_config(config: PolicyTrainConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets if isinstance(targets, str) else list(targets), task_type="CAUSAL_LM")


def gathered_model(trainer: Any, config: PolicyTrainConfig) -> Any:
    """The trained model whole, on the main process (None elsewhere). Under ZeRO-3 every rank
    holds only a shard of each weight, so the full weights are gathered (every rank takes part)
    into a fresh copy built on this process alone; otherwise the Trainer's model is already whole."""
    stage = trainer.accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None
    if stage != 3:
        return trainer.model if trainer.is_world_process_zero() else None
    from peft import get_peft_model


    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.is_world_process_zero():
        return None
    with no_zero3_init():
        fresh, _ = load_base(config, tokenizer=trainer.processing_class)
        if config.use_lora:
            fresh = get_peft_model(fresh, lora_config(config))
    fresh.load_state_dict(state_dict)
    return fresh


def tokenize_steps(examples: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[dict[str, Any]]:
    """Step pairs as TRL tokenizes prompt-completion pairs (the completion starts where the
    prompt's ids and the whole text's ids diverge), with EOS after a step only where it `ends` the
    game, and the pair's weight."""
    from trl.data_utils import common_prefix_length

    rows = []
    for e in examples:
        prompt = tokenizer(e["prompt"])["input_ids"]
        full = tokenizer(e["prompt"] + e["completion"])["input_ids"] + ([tokenizer.eos_token_id] if e["ends"] else [])
        start = common_prefix_length(prompt, full)
        rows.append({"input_ids": full, "completion_mask": [0] * start + [1] * (len(full) - start),
                     "weight": e["weight"]})
    return rows


class WeightCollator:
    """TRL's collator, plus each row's `weight` as a tensor (TRL's drops columns it does not know)."""

    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self.collate(rows), "weight": torch.tensor([r["weight"] for r in rows], dtype=torch.float32)}


def weighted_trainer_class() -> type:
    """`SFTTrainer` whose loss weighs each row's tokens by the row's `weight` (module doc); built
    on call, as TRL is imported only where a trainer is built."""
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.data_collator = WeightCollator(self.data_collator)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight, labels = inputs.pop("weight"), inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            targets = labels[:, 1:]  # the logits at token t predict token t + 1
            nll = torch.nn.functional.cross_entropy(outputs.logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                                    ignore_index=-100, reduction="none").view_as(targets)
            # normalised as TRL's own loss: by the batch's completion tokens (over every
            # accumulated micro-batch and rank when the Trainer counts them)
            tokens = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
            loss = (nll * weight[:, None]).sum() / torch.as_tensor(tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return WeightedSFTTrainer


def tokenize_pairs(examples: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[dict[str, Any]]:
    """Preference triples as TRL's DPOTrainer tokenizes them (the completions start where the
    prompt's ids and each whole text's ids diverge), with EOS after a step only where it ends the
    game."""
    from trl.data_utils import common_prefix_length

    def ids(e: dict[str, Any], side: str) -> list[int]:
        eos = [tokenizer.eos_token_id] if e[f"{side}_ends"] else []
        return tokenizer(e["prompt"] + e[side])["input_ids"] + eos

    rows = []
    for e in examples:
        prompt = tokenizer(e["prompt"])["input_ids"]
        sides = {side: ids(e, side) for side in ("chosen", "rejected")}
        start = min(common_prefix_length(prompt, ids) for ids in sides.values())
        rows.append({"prompt_ids": prompt[:start], "chosen_ids": sides["chosen"][start:],
                     "rejected_ids": sides["rejected"][start:]})
    return rows


def preference_trainer_class() -> type:
    """TRL's `DPOTrainer` on triples already tokenized by `tokenize_pairs`; built on call, as TRL
    is imported only where a trainer is built."""
    from trl import DPOTrainer

    class StepDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # TRL's would tokenize the text again with EOS after every completion; the rows are
            # tokenized, so only its filter is kept: a prompt that fills max_length leaves no
            # completion token to learn from
            return dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)

    return StepDPOTrainer


def build_trainer(config: PolicyTrainConfig, train: list[dict[str, Any]], held_out: list[dict[str, Any]],
                  model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  callbacks: list[Any] | None = None) -> Any:
    """The `SFTTrainer` for one run (datasets tokenized, labels built, LoRA injected); for
    weighted step pairs the `WeightedSFTTrainer` on pairs tokenized by `tokenize_steps`; for
    preference triples the `DPOTrainer` (`preference_trainer_class`)."""
    from datasets import Dataset
    from trl import SFTTrainer

    out = Path(config.output_dir).expanduser()
    callbacks = ([StopAfterSeconds(config.max_seconds)] if config.max_seconds else []) + list(callbacks or [])
    peft_config = lora_config(config) if config.use_lora else None
    if train and "chosen" in train[0]:
        train, held_out = tokenize_pairs(train, tokenizer), tokenize_pairs(held_out, tokenizer)
        # the reference is the policy as it starts: with LoRA, TRL's (the adapter off); else a frozen copy
        reference = None if config.use_lora else copy.deepcopy(model).eval().requires_grad_(False)
        return quiet_off_terminal(preference_trainer_class()(
            model=model, ref_model=reference, args=_trl_config(config, out / CHECKPOINTS_DIR, preferences=True),
            train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(held_out) if held_out else None,
            processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks))
    args = _trl_config(config, out / CHECKPOINTS_DIR)
    weighted = bool(train) and "weight" in train[0]
    if weighted:
        train, held_out = tokenize_steps(train, tokenizer), tokenize_steps(held_out, tokenizer)
        args.remove_unused_columns = False  # keep `weight` for the collator (every column is used)
    return quiet_off_terminal((weighted_trainer_class() if weighted else SFTTrainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(held_out) if held_out else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    ))


def cut_rows(dataset: Any, max_length: int) -> int:
    """Rows of a trainer's tokenized dataset that max_length cuts: SFT rows are cut already (so a
    row of max_length tokens may have lost its end); DPO's collator cuts prompt + completion later."""
    if "input_ids" in dataset.column_names:
        return sum(len(ids) >= max_length for ids in dataset["input_ids"])
    return sum(len(p) + max(len(c), len(r)) > max_length
               for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]))


def train_policy(config: PolicyTrainConfig, examples: list[dict[str, str]] | None = None,
                 formats: Formats | None = None, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Fine-tune the policy on prompt/completion pairs (`examples`, or those read from
    `config.data_files` and rendered by `formats`, e.g. the `tsllm.tasks` module), save it to
    `<output_dir>/model`, and return the metrics (also saved as `<output_dir>/metrics.json`; keys
    shared with the value trainer): loss curve, held-out loss before/after, optimizer steps,
    non-padding tokens and seconds, plus the in-memory `model` and `tokenizer` that were saved.
    `callbacks` (transformers TrainerCallbacks) go to the Trainer."""
    config.validate()
    quiet_library_bars()  # before the model loads: its "Loading weights" bar too
    if config.deepspeed is not None:
        check_deepspeed_launch()
    if examples is None:
        if not config.data_files:
            raise ConfigError("config key 'data_files': list at least one trajectories jsonl file")
        kind = row_kind(config.data_files)
        if kind == "preferences":
            examples = read_preference_examples(config.data_files, config.task, formats, config.template)
        elif kind == "steps":
            examples = read_step_examples(config.data_files, config.task, formats, config.template)
        else:
            examples = read_examples(config.data_files, config.task, config.min_reward, formats, config.template)
    train, held_out = split_examples(examples, config.eval_fraction, config.seed)
    completions = ("chosen", "rejected") if train and "chosen" in train[0] else ("completion",)
    model, tokenizer = load_base(config, texts=[e["prompt"] + e[c] for e in train for c in completions])
    trainer = build_trainer(config, train, held_out, model, tokenizer, callbacks)
    out = Path(config.output_dir).expanduser()
    truncated = cut_rows(trainer.train_dataset, config.max_length)
    if truncated or len(trainer.train_dataset) < len(train):
        warnings.warn(f"{truncated} training pair(s) were cut at max_length={config.max_length} tokens (their "
                      f"ends, EOS included, are not learned) and {len(train) - len(trainer.train_dataset)} "
                      "had no completion left and were dropped; raise max_length if the model's context allows",
                      stacklevel=2)

    # Under DeepSpeed the loss before training is not measured: Transformers refuses to evaluate
    # before training with ZeRO-1/2, and with ZeRO-3 the inference engine it builds for that
    # leaves the Trainer without a training engine (backward on None).
    eval_before = trainer.evaluate()["eval_loss"] if held_out and config.deepspeed is None else None
    checkpoints = out / CHECKPOINTS_DIR
    resume_from = resume_point(config, checkpoints, len(train))
    if trainer.is_world_process_zero() and resume_from is None:  # a fresh start: drop stale checkpoints
        shutil.rmtree(checkpoints, ignore_errors=True)
        write_json({**resumable_settings(config), "examples": len(train)}, checkpoints / RESUME_FILE)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank trains before the checkpoints folder is settled
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    evaluated = trainer.evaluate() if held_out else {}
    eval_after = evaluated.get("eval_loss")

    state = trainer.state
    curve = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"], "learning_rate": e.get("learning_rate")}
             for e in state.log_history if "loss" in e]
    metrics = {
        "train_loss": curve[-1]["loss"] if curve else None,
        "eval_loss": eval_after,
        "eval_loss_before": eval_before,
        # DPO's held-out implicit reward: how often, and by how much, the chosen step beats the rejected
        **{f"eval_reward_{name}": evaluated[f"eval_rewards/{key}"]
           for name, key in (("accuracy", "accuracies"), ("margin", "margins")) if f"eval_rewards/{key}" in evaluated},
        "train_loss_curve": curve,
        "global_step": state.global_step,
        "world_size": trainer.args.world_size,
        "train_examples": len(trainer.train_dataset),
        "eval_examples": len(trainer.eval_dataset) if held_out else 0,
        "train_tokens": int(state.num_input_tokens_seen),  # non-padding, summed over ranks
        "train_seconds": seconds,
        "resumed_from_step": int(resume_from.name.split("-")[-1]) if resume_from else None,
        "tokens_per_second": state.num_input_tokens_seen / seconds if seconds > 0 else None,
        "output_dir": str(out),
        "model_dir": str(out / MODEL_DIR),
        "config": to_dict(config),
    }
    model = gathered_model(trainer, config)
    if model is not None:  # the main process saves
        if config.merge == "merged" and config.use_lora:
            model = model.merge_and_unload()  # LoRA folded into the base weights; a plain model again
        save_policy(model, tokenizer, out / MODEL_DIR, config.merge)
        write_json(metrics, out / METRICS_FILE)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank returns before the model exists
    if trainer.is_world_process_zero():  # the model is saved: the checkpoints served resume only
        shutil.rmtree(checkpoints, ignore_errors=True)
    if config.deepspeed is not None:
        forget_zero3()
    # In-memory results for callers (not JSON): the saved model (merged, or PEFT with the adapter);
    # the other processes return the Trainer's model (a shard of it under ZeRO-3).
    model = model if model is not None else trainer.model
    return {**metrics, "model": model.eval(), "tokenizer": tokenizer}
