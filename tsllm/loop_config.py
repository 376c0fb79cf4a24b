"""The loop's config tree: every setting of a run, its default and its help, in one place.

    cfg = load_config(LoopConfig, "configs/reach/tiny.yaml", ["search.knobs.width=4"])
    tsllm run --print-config [--config F] [key=value ...]     # the resolved tree as YAML (no F: MAIN_JOB)
    python scripts/config_reference.py                        # docs/CONFIG.md from the help strings

`LoopConfig` nests one dataclass per part of the run: `search`, `generator`, `tracking`, `tiny`
(the warm-started model's shape) and the three training stages `warmstart`, `policy`, `value`.
The training sections are built from the trainers' own config classes (every field but the ones
the loop fills at each stage: data files, output folder, starting model, task, seed), with the
loop's defaults laid over the trainer's, so the YAML, the trainers and `config.json` share one
vocabulary. Everything is checked at load, before any work: keys, types, ranges, the search knobs
against the algorithm's signature, and each training section through its trainer's own checks.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import re
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tsllm.config import ConfigError, bad
from tsllm.models.tiny import TinyModelConfig
from tsllm.tasks import get_task, names
from tsllm.tasks.base import TaskSettings, TextTask, check_path
from tsllm.training.policy_trainer import PolicyTrainConfig, check_deepspeed_launch
from tsllm.training.value_trainer import ValueTrainConfig


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its help string (TRL's `field(metadata={"help": ...})`); mutable
    defaults are copied per instance."""
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


# ------------------------------------------------------------------------- training sections

# The trainer fields the loop fills at each stage; every other field is a section key.
# (template: the env's prompt template, so the policy, the value model and the search read one format)
LOOP_FILLED = frozenset({"data_files", "output_dir", "base_model", "tiny", "task", "seed", "template"})


def trainer_section(name: str, trainer: type, defaults: dict[str, Any], doc: str,
                    stage_sets: frozenset[str] = frozenset(), loop_keys: dict[str, tuple[Any, Any]] | None = None
                    ) -> type:
    """A dataclass with `trainer`'s fields minus LOOP_FILLED (and `stage_sets`, what this stage
    always sets itself or never reads), its types and help, and `defaults` laid over the trainer's own (a default
    for a field the trainer lacks fails at import). `loop_keys` (name -> (type, option)) are the
    stage's own settings, read by the loop and never passed to the trainer; they come first."""
    hints = typing.get_type_hints(trainer)
    skip = LOOP_FILLED | stage_sets
    fields = [f for f in dataclasses.fields(trainer) if f.init and f.name not in skip]
    unknown = set(defaults) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{name}: defaults for {sorted(unknown)}, which {trainer.__name__} does not have")
    specs = []
    for f in fields:
        if f.name in defaults:
            default = defaults[f.name]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        specs.append((f.name, hints[f.name], option(default, **{"help": "", **f.metadata})))
    own = [(key, kind, spec) for key, (kind, spec) in (loop_keys or {}).items()]
    cls = dataclasses.make_dataclass(name, own + specs, namespace={"__doc__": doc, "trainer": trainer,
                                                                   "loop_keys": frozenset(loop_keys or ())})
    cls.__module__ = __name__
    return cls


def trainer_settings(section: Any) -> dict[str, Any]:
    """A section's values as keyword arguments for its trainer's config (not the loop's own keys)."""
    return {f.name: copy.deepcopy(getattr(section, f.name)) for f in dataclasses.fields(section)
            if f.name not in section.loop_keys}


def check_trainer_section(key: str, section: Any, task: str) -> None:
    """Run the trainer's own checks on `section` now, with stand-ins for the fields the loop fills
    later (a fresh tiny model, an existing file as data), so `value.lr=-1` stops the run at load
    naming `value.lr` instead of failing in round 0 as `lr`."""
    trainer = section.trainer
    hints = typing.get_type_hints(trainer)
    stand_ins: dict[str, Any] = {}
    for f in dataclasses.fields(trainer):
        if f.name not in LOOP_FILLED:
            continue
        if f.name == "tiny":
            stand_ins[f.name] = TinyModelConfig()
        elif f.name == "task":
            stand_ins[f.name] = task
        elif typing.get_origin(hints[f.name]) is list:
            stand_ins[f.name] = [__file__]  # a data file that exists
    try:
        trial = trainer(**trainer_settings(section), **stand_ins)
        # validate_settings: a trainer's checks of the settings alone, where it has them
        (getattr(trial, "validate_settings", None) or trial.validate)()
    except ConfigError as error:
        message = str(error)
        named = re.sub(r"^config key '", f"config key '{key}.", message)
        raise ConfigError(named if named != message else f"{key}: {message}") from None


ValueSection = trainer_section(
    "ValueSection", ValueTrainConfig,
    {"num_train_epochs": 2.0, "learning_rate": 5e-4, "per_device_train_batch_size": 32},
    "The value model's training each round (ValueTrainConfig's fields the loop does not fill).",
    loop_keys={"continue_from_previous": (bool, option(
        False, "start round k's value model from round k-1's (its body and head) instead of from value_backbone "
               "or the current policy, and train it on the data new in round k only (round k's samples and, with "
               "value_from_search, round k-1's improve trajectories), so a round's value training does not grow "
               "with the rounds; round 0 starts as before"))})
PolicySection = trainer_section(
    "PolicySection", PolicyTrainConfig,
    {"use_lora": True, "merge": "merged", "learning_rate": 1e-3, "num_train_epochs": 2.0,
     "per_device_train_batch_size": 16},
    "The policy's LoRA SFT on each round's search trajectories (PolicyTrainConfig's fields).",
    stage_sets=frozenset({"min_reward"}),  # the task chooses the rows (correct or top-reward), not a threshold
    loop_keys={"target": (Literal["paths", "advantages", "visits", "preferences"], option(
        "paths", "what the policy learns from the improve stage (tsllm/training/targets.py): paths, the winning "
                 "paths the task keeps (SFT); advantages, every step of the training search's trees weighted by "
                 "its advantage Q(s,a) - V(s) > 0; visits, every step weighted by the search's visit share at "
                 "its state (softmax of Q where the search keeps no visits); preferences, step DPO (TRL's "
                 "DPOTrainer, policy.beta) on sibling steps whose Q differ by the margin or more, the policy "
                 "before the stage as reference. Tree targets need improve=search"))})
# Measured (scripts/warmstart_probe.py, 2 CPU cores): small batches = more updates per second, a
# schedule that finishes well inside the time cap (~216 s -> greedy 10%, pass@8 17%). The cap is
# only a safety stop: a cap that bites (a busy machine got 572 of 2352 steps) leaves a policy that
# solves nothing, so a slower machine should take longer, not stop early.
WarmStartSection = trainer_section(
    "WarmStartSection", PolicyTrainConfig,
    {"use_lora": False, "min_reward": None, "learning_rate": 2e-3, "lr_scheduler_type": "cosine",
     "warmup_ratio": 0.05, "per_device_train_batch_size": 8, "num_train_epochs": 16.0, "max_length": 256,
     "eval_fraction": 0.05, "max_seconds": 900.0},
    "Full fine-tuning of the fresh tiny model on the task's warm-start traces (unused with base_model).",
    stage_sets=frozenset({"beta", "nll_weight"}))  # DPO's: the warm start trains on traces, never on pairs


# ---------------------------------------------------------------------------- search section

NOT_KNOBS = frozenset({"budget", "rng", "max_tokens", "max_compute"})  # the loop gives them (search.max_tokens, ...)


def _kinds(param: inspect.Parameter) -> set[str]:
    """The type names in a parameter's annotation ('int | None' -> {'int', 'None'})."""
    text = param.annotation if isinstance(param.annotation, str) else getattr(param.annotation, "__name__", "")
    return {part.strip() for part in str(text).split("|")}


def algorithm_knobs(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters a config may set for search algorithm `name`: those of a type YAML
    can write (not an embedder object), and not those a partial already binds (parallel_rebase's
    rule)."""
    from tsllm.policy_value import BRIDGE_KNOBS, LLMPolicyValue
    from tsllm.search import ALGORITHMS

    fn = ALGORITHMS[name]
    bound = fn.keywords if isinstance(fn, partial) else {}
    params = inspect.signature(fn).parameters.values()
    bridge = inspect.signature(LLMPolicyValue).parameters  # its knobs apply to any algorithm's expansions
    return {**{p.name: p for p in params if p.kind is p.KEYWORD_ONLY and p.name not in NOT_KNOBS
               and p.name not in bound and _kinds(p) & {"bool", "int", "float", "str"}},
            **{name: bridge[name] for name in BRIDGE_KNOBS}}


def check_knob(key: str, value: Any, param: inspect.Parameter) -> None:
    """`value` against the knob's annotation: counts (int) >= 1, floats finite, bools and strings
    as such."""
    kinds = _kinds(param)
    if value is None:
        if "None" not in kinds and param.default is not None:
            raise bad(key, f"must be set (default {param.default!r}), got null")
        return
    if "bool" in kinds:
        ok, want = isinstance(value, bool), "true or false"
    elif "int" in kinds:
        ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1"
    elif "float" in kinds:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        want = "a finite number"
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise bad(key, f"must be {want}, got {value!r}")


@dataclass
class SearchSection:
    algorithm: str = option("mcts_alpha", "the search used for evaluation and for the policy's data: any name "
                                          "in tsllm.search.ALGORITHMS")
    # width 8: the tiny policy's proposals are mostly illegal moves, so it takes ~8 samples to
    # leave a few legal children per node (measured: width 3 -> 9%, width 8 -> 20% on Game24)
    knobs: dict[str, Any] = option(
        {"num_simulations": 6, "width": 8, "parallel_simulations": 3},
        "the algorithm's keyword arguments (its signature's keyword parameters); these defaults are "
        "mcts_alpha's and are dropped when a file or override chooses another algorithm",
        reset_with="algorithm")
    max_tokens: int | None = option(None, "generated tokens allowed per question; null: the algorithm's own "
                                          "stopping rule")
    max_compute: int | None = option(None, "policy tokens processed allowed per question (step tokens + prompt "
                                           "tokens not served from a cache); null: no such limit")
    legal_steps_only: bool = option(True, "drop proposed steps that break the task's rules (env.legal_step), "
                                          "AlphaZero's legal-move mask")
    # AlphaZero trains on its strongest affordable search; evaluation may use another budget
    train_knobs: dict[str, Any] = option(
        {}, "knobs laid over `knobs` for the search on the training pool (the policy's data), e.g. "
            "{num_simulations: 12}; {}: evaluation's knobs", reset_with="algorithm")
    train_max_tokens: int | None = option(None, "generated tokens allowed per training problem; null: max_tokens")
    train_max_compute: int | None = option(None, "compute allowed per training problem; null: max_compute")

    def validate(self) -> None:
        from tsllm.policy_value import move_cutoff_problem
        from tsllm.search import ALGORITHMS

        if self.algorithm not in ALGORITHMS:
            raise bad("search.algorithm", f"unknown algorithm {self.algorithm!r}; choose one of {sorted(ALGORITHMS)}")
        valid = algorithm_knobs(self.algorithm)
        for key in ("knobs", "train_knobs"):
            for name, value in getattr(self, key).items():
                if name not in valid:
                    raise bad(f"search.{key}.{name}", f"{self.algorithm} has no knob {name!r}; "
                                                      f"its knobs: {sorted(valid)}")
                check_knob(f"search.{key}.{name}", value, valid[name])
            if problem := move_cutoff_problem(getattr(self, key).get("move_cutoff", 0.0)):
                raise bad(f"search.{key}.move_cutoff", problem)
        for key in ("max_tokens", "train_max_tokens", "max_compute", "train_max_compute"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(f"search.{key}", f"must be >= 1 or null, got {getattr(self, key)}")

    def budget(self, training: bool) -> tuple[dict[str, Any], dict[str, int | None]]:
        """(knobs, Budget limits per question) of the search on the training pool (`training`) or
        on held-out problems."""
        if not training:
            return dict(self.knobs), {"max_tokens": self.max_tokens, "max_compute": self.max_compute}
        tokens = self.max_tokens if self.train_max_tokens is None else self.train_max_tokens
        compute = self.max_compute if self.train_max_compute is None else self.train_max_compute
        return {**self.knobs, **self.train_knobs}, {"max_tokens": tokens, "max_compute": compute}


# ------------------------------------------------------------------------- other sections

@dataclass
class GeneratorSection:
    """Settings of the generation backend (tsllm.generation); null leaves the backend's default."""

    device: str | None = option(None, "hf: where the policy runs; null: this process's device", backends=("hf",))
    dtype: str | None = option(None, "weights' dtype (float32, bfloat16, auto, ...); null: the backend's default "
                                     "(hf float32, vllm auto)", backends=("hf", "vllm"))
    max_batch_size: int | None = option(None, "hf: sequences decoded together at most", backends=("hf",))
    gpu_memory_utilization: float | None = option(None, "vllm: share of the GPU's memory the engine takes",
                                                  backends=("vllm",))
    kv_cache_gib: float | None = option(None, "vllm: KV-cache size in GiB (instead of gpu_memory_utilization)",
                                        backends=("vllm",))
    max_model_len: int | None = option(None, "vllm: context length of the engine; null: the model's",
                                       backends=("vllm",))
    engine_kwargs: dict[str, Any] = option({}, "vllm: any other vllm.LLM argument, e.g. {enforce_eager: true}",
                                           backends=("vllm",))

    def kwargs(self) -> dict[str, Any]:
        """The set values as the backend's keyword arguments."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "engine_kwargs" and getattr(self, f.name) is not None}
        return {**out, **self.engine_kwargs}

    def check_backend(self, backend: str) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value not in (None, {}) and backend not in f.metadata["backends"]:
                raise bad(f"generator.{f.name}", f"only the {'/'.join(f.metadata['backends'])} backend takes it "
                                                 f"(backend is {backend}); remove it")
        for key in ("max_batch_size", "max_model_len"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(f"generator.{key}", f"must be >= 1 or null, got {getattr(self, key)}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise bad("generator.gpu_memory_utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}")


@dataclass
class TrackingSection:
    report_to: Literal["wandb", "none"] = option("wandb", "where each round's metrics go (W&B falls back to "
                                                          "offline when the server cannot be reached)")
    project: str = option("tsllm", "the W&B project")
    mode: Literal["auto", "online", "offline", "disabled"] = option(
        "auto", "W&B mode; auto: online when logged in, else offline (WANDB_MODE overrides)")


# ------------------------------------------------------------------------------ token budgets

def model_context(folder: str) -> int | None:
    """Positions of the model in local `folder` (its config.json), None when not known here."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None  # a hub id, or a folder validate_task / check_path report on their own
    config = config.get("text_config", config)
    return config.get("max_position_embeddings") or config.get("n_positions")


def check_budgets(cfg: LoopConfig) -> None:
    """Every per-sequence token budget of the run against the context of the model that spends it,
    so a budget that cannot fit stops the run at load (one error naming every such key) instead of
    failing in the sampling stage after the warm start."""
    if cfg.base_model is None:
        policy, where = cfg.tiny.max_position_embeddings, "tiny.max_position_embeddings"
    else:
        policy, where = model_context(cfg.base_model), f"base_model {cfg.base_model}"
    if cfg.backend == "vllm" and cfg.generator.max_model_len is not None:
        policy, where = min(policy or cfg.generator.max_model_len, cfg.generator.max_model_len), \
            "generator.max_model_len"
    value, value_where = policy, where
    if cfg.value_backbone is not None:
        value, value_where = model_context(cfg.value_backbone), f"value_backbone {cfg.value_backbone}"
    task, problems = get_task(cfg.task), []
    if policy is not None and task.needs_model:
        if issubclass(task, TextTask):  # a step is a line: the rollout is max_steps + 1 of them at most
            steps = task.make_env(TaskSettings.of(cfg)).max_steps
            generated = {"max_step_tokens": cfg.max_step_tokens,
                         f"max_step_tokens * (max_steps + 1) = {cfg.max_step_tokens} * {steps + 1} (the rollout)":
                         cfg.max_step_tokens * (steps + 1)}
        else:  # steps are pieces of one response
            generated = {"max_response_tokens": cfg.max_response_tokens}
        # a generation budget must leave room for the prompt; a training length may fill the context
        problems += [f"{key} = {n} leaves no room for a prompt" for key, n in generated.items() if n >= policy]
        trained = {"policy.max_length": cfg.policy.max_length}
        if cfg.base_model is None:
            trained["warmstart.max_length"] = cfg.warmstart.max_length
        problems += [f"{key} = {n}" for key, n in trained.items() if n > policy]
    if problems:
        raise bad(problems[0].split(" ")[0], f"the policy's context is {policy} positions ({where}) but "
                  f"{'; '.join(problems)}; lower them or " +
                  ("raise tiny.max_position_embeddings" if cfg.base_model is None else "use a longer-context model"))
    if value is not None and cfg.value.max_length > value:
        raise bad("value.max_length", f"{cfg.value.max_length} exceeds the value model's context of {value} "
                                      f"positions ({value_where}); set value.max_length<={value}")


def check_vllm_model(cfg: LoopConfig) -> None:
    """A policy vLLM cannot run on this machine (vLLM-CPU's attention takes only some head sizes)
    stops the run at load, naming the key, instead of in the first sampling stage."""
    from tsllm.generation.vllm import cpu_attention_problem, model_folder_problem

    if cfg.base_model is not None:
        if problem := model_folder_problem(cfg.base_model):
            raise bad("base_model", f"{problem}, or backend=hf")
        return
    tiny = {"hidden_size": cfg.tiny.hidden_size, "num_attention_heads": cfg.tiny.num_heads}
    if problem := cpu_attention_problem(tiny):
        raise bad("tiny.num_heads", f"{problem}: the head size is tiny.hidden_size / tiny.num_heads = "
                                    f"{cfg.tiny.hidden_size} / {cfg.tiny.num_heads}; change them or set backend=hf")


# ------------------------------------------------------------------------------ the tree

# What `tsllm run` and `tsllm bench loop` run without --config: the main job, configs/reach/tiny.yaml,
# shipped inside the package so every install has it (tests/test_shipped_configs.py keeps the two
# files identical). The dataclass defaults below are the library's, not a run anyone should start
# bare: their task (Game24) warm-starts on solver traces of its own training pool.
MAIN_JOB = str(Path(__file__).with_name("data") / "reach_tiny.yaml")

COUNTS = ("rounds", "train_questions", "test_questions", "samples_per_question", "max_step_tokens",
          "max_response_tokens")


@dataclass
class LoopConfig:
    """The whole run (see tsllm/loop.py for what a round does)."""

    task: str = option("game24", "the task solved and trained on: any name in tsllm.tasks.names()")
    strict: bool = option(True, "a solution must follow every step rule too, not only end on the right answer")
    output_dir: str = option("runs/game24-tiny", "where the run lives: one folder per round and stage, "
                                                 "config.json, rounds.jsonl, plots")
    rounds: int = option(2, "search-then-train rounds (a final evaluation follows the last)")
    seed: int = option(0, "seed of the problem split, sampling, search and every trainer")
    train_questions: int = option(128, "the training pool: problems sampled and improved on (searched, or "
                                       "sampled for RFT) every round, all of them each round")
    test_questions: int = option(128, "held-out questions for evaluation (fewer: noisier accuracies)")
    base_model: str | None = option(None, "the starting policy, a causal-LM folder; null: build the tiny "
                                          "model and warm-start it")
    value_backbone: str | None = option(None, "the value model's starting LM folder; null: the current policy")
    train_data: str | None = option(None, "gsm8k / rlhf: a local jsonl file or a hub dataset id (gsm8k without "
                                          "it uses synthetic problems, offline)")
    test_data: str | None = option(None, "gsm8k / rlhf: the held-out problems, as train_data")
    train_split: str = option("train", "the split read from a hub train_data")
    test_split: str = option("test", "the split read from a hub test_data")
    prompt_field: str = option("prompt", "rlhf: the prompts' column")
    reward_model: str | None = option(None, "rlhf: a sequence-classification reward model folder (num_labels=1)")
    max_response_tokens: int = option(64, "rlhf: the token-level tree's depth (TS-LLM: 64)")
    prompt_format: Literal["plain", "chat"] = option(
        "plain", "plain: the task's own prompt; chat: the question as a user turn of the policy tokenizer's chat "
                 "template (needs one: tiny.tokenizer bpe, or an instruct base_model), the steps as the "
                 "assistant's lines")
    system_prompt: str | None = option(None, "chat: the system turn before the question; null: none")
    tiny: TinyModelConfig = option(TinyModelConfig(num_layers=2), "the warm-started model's shape "
                                   "(without base_model); 2 layers learn faster per CPU second")
    warmstart: WarmStartSection = option(WarmStartSection(), WarmStartSection.__doc__)
    backend: Literal["hf", "vllm"] = option("hf", "generation backend: transformers or vLLM")
    generator: GeneratorSection = option(GeneratorSection(), GeneratorSection.__doc__)
    samples_per_question: int = option(4, "sampled trajectories per training question for the value model")
    temperature: float = option(1.0, "sampling temperature of the policy's proposals and samples")
    max_step_tokens: int = option(48, "tokens per step at most; a rollout gets max_step_tokens * (steps + 1)")
    value: ValueSection = option(ValueSection(), ValueSection.__doc__)
    policy: PolicySection = option(PolicySection(), PolicySection.__doc__)
    search: SearchSection = option(SearchSection(), "the tree search")
    improve: Literal["search", "sampling"] = option(
        "search", "what each round's policy data comes from: `search`, the tree search on the training pool; "
                  "`sampling`, the RFT baseline: rollouts of the current policy until each problem has spent "
                  "about the generated tokens the training search spends per problem that round")
    value_from_search: bool = option(False, "also train the value model on the improve stage's trajectories of "
                                            "earlier rounds (not only on the samples); reach's config sets it "
                                            "(docs/RESULTS.md), off by default")
    tracking: TrackingSection = option(TrackingSection(), "metrics tracking")

    def validate(self) -> None:
        if self.task not in names():
            raise bad("task", f"must be one of {names()}, got {self.task!r}")
        for key in COUNTS:
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise bad("temperature", f"must be a finite number >= 0, got {self.temperature}")
        if self.value_backbone is not None:
            check_path("value_backbone", self.value_backbone, "a causal-LM folder, or leave it unset to "
                                                                "start the value model from the policy")
        get_task(self.task).check(TaskSettings.of(self), training=True)
        if self.prompt_format == "chat" and self.base_model is None and self.tiny.tokenizer != "bpe":
            raise bad("prompt_format", "chat needs a tokenizer with a chat template, and the char tokenizer has "
                                       "none: set tiny.tokenizer=bpe (ChatML), or a base_model that has one")
        self.generator.check_backend(self.backend)
        if self.policy.target != "paths":  # tree targets read the training search's trees
            if self.improve != "search":
                raise bad("policy.target", f"{self.policy.target} learns from the training search's trees, and "
                                           f"improve={self.improve} keeps none; set improve=search or "
                                           "policy.target=paths")
            if not issubclass(get_task(self.task), TextTask):
                raise bad("policy.target", f"{self.policy.target} trains one step (a line) at a time, and task "
                                           f"{self.task}'s steps are pieces of one response; use policy.target=paths")
        for key in ("warmstart", "policy", "value"):
            section = getattr(self, key)
            if section.deepspeed is not None:
                check_path(f"{key}.deepspeed", section.deepspeed,
                           "a DeepSpeed json such as configs/deepspeed/zero2.json")
                if key != "value":
                    check_deepspeed_launch(f"{key}.deepspeed")
            check_trainer_section(key, section, self.task)
        if self.backend == "vllm":
            check_vllm_model(self)
        check_budgets(self)


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


__all__ = ["MAIN_JOB", "LoopConfig",
           "SearchSection", "GeneratorSection", "TrackingSection", "ValueSection", "PolicySection",
           "WarmStartSection", "algorithm_knobs", "default_of", "trainer_settings"]
