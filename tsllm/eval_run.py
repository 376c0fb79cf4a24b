"""`tsllm eval --run RUN_DIR [--round k]`: evaluate a loop run's checkpoint without retyping it.

    tsllm eval --run runs/reach-tiny                       # the last round with models
    tsllm eval --run runs/reach-tiny --round 0 --set mcts_alpha.num_simulations=16

From the run's `config.json` (what `tsllm run` saved, see tsllm/loop.py) come the task, the
held-out split (seed, test_questions, test_data and its split), the step and response budgets,
the temperature, the strictness and the search: `--methods greedy,<search.algorithm>,<the task's
baseline>` with `--set <algorithm>.<knob>=<value>` for each of `search.knobs` (and
`search.max_tokens`), i.e. what the loop's eval stage runs. From the run's stage results come the
models of round k: its policy (round 0: the warm start or base_model; round k: what round k-1's
policy stage trained, or kept) and its value model (round k's; for the final evaluation round,
the last round's, as the loop evaluates it). Stage results store model paths relative to the run
folder (`Loop.model_path`), so a moved run folder still resolves.

Every flag given explicitly wins over the run; `--set` knobs are laid over the run's. The
resolution rewrites the parsed flags, so the rest of `tsllm eval` runs exactly as if the user had
typed them, and it happens before any model loads: a folder that is not a run, or a round without
its models, stops with one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tsllm.config import ConfigError

# The eval flags a run can fill: flag attribute -> the LoopConfig key it comes from, and the
# default when neither the flag nor a run gives it (the parser's default is None so that an
# explicit flag can be told from an absent one).
FROM_RUN: dict[str, str] = {
    "task": "task", "seed": "seed", "test_questions": "test_questions", "data": "test_data",
    "split": "test_split", "prompt_field": "prompt_field", "reward_model": "reward_model",
    "max_response_tokens": "max_response_tokens", "backend": "backend", "max_step_tokens": "max_step_tokens",
    "temperature": "temperature", "prompt_format": "prompt_format", "system_prompt": "system_prompt",
}
EVAL_DEFAULTS: dict[str, Any] = {
    "task": "game24", "seed": 0, "test_questions": 100, "data": None, "split": "test", "prompt_field": "prompt",
    "reward_model": None, "max_response_tokens": 64, "backend": "hf", "max_step_tokens": 48, "temperature": 1.0,
    "prompt_format": "plain", "system_prompt": None,
}



def add_model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """The flags `tsllm eval` and `tsllm serve` share: which run, round and models, and how they
    decode (`verb`: what the command does with the models, for the help). Their defaults are None,
    so a run fills the flags not given, then EVAL_DEFAULTS the rest (`resolve_eval_args`)."""
    from tsllm.tasks import names

    def run_default(name: str) -> str:
        return f"default: the run's, else {EVAL_DEFAULTS[name]}"

    parser.add_argument("--run", metavar="RUN_DIR", help=f"a `tsllm run` output folder: {verb} the policy and value "
                        "of --round, with the run's task, held-out split and search settings (flags given win)")
    parser.add_argument("--round", type=int, help="with --run: the round whose policy and value to take (0: the "
                                                  "warm start; default: the last round with both models)")
    parser.add_argument("--policy", help="policy model folder (every task but toy)")
    parser.add_argument("--value", help="value model folder (needed by value-guided searches)")
    parser.add_argument("--task", choices=names(), help=run_default("task"))
    parser.add_argument("--reward-model", help="rlhf: a sequence-classification reward model folder (num_labels=1)")
    parser.add_argument("--max-response-tokens", type=int,
                        help=f"rlhf: the token-level tree's depth ({run_default('max_response_tokens')})")
    parser.add_argument("--seed", type=int, help=f"split and sampling seed, must match training's "
                                                 f"({run_default('seed')})")
    parser.add_argument("--backend", choices=["hf", "vllm"], help=run_default("backend"))
    parser.add_argument("--max-step-tokens", type=int, help=run_default("max_step_tokens"))
    parser.add_argument("--prompt-format", choices=["plain", "chat"],
                        help="chat: the question as a user turn of the policy tokenizer's chat template "
                             f"({run_default('prompt_format')})")
    parser.add_argument("--system-prompt", help="with --prompt-format chat: the system turn before the question "
                                                "(default: the run's, else none)")
    parser.add_argument("--temperature", type=float,
                        help=f"sampling temperature, not greedy's ({run_default('temperature')})")
    parser.add_argument("--allow-illegal-steps", action="store_true",
                        help="let searches keep proposed steps that break the task's rules (env.legal_step)")


def read_run_config(run: str) -> dict[str, Any]:
    """The saved config of the loop run in folder `run`."""
    folder, saved = Path(run), Path(run) / "config.json"
    if not folder.is_dir():
        raise ConfigError(f"--run: {run} is not a folder; give a run folder (the output_dir of `tsllm run`)")
    if not saved.is_file():
        raise ConfigError(f"--run: {run} has no config.json, so it is not a run folder; give the output_dir "
                          "of `tsllm run`")
    try:
        config = json.loads(saved.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"--run: {saved} cannot be read as JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str) \
            or not isinstance(config.get("search"), dict):
        raise ConfigError(f"--run: {saved} is not a run config (no task and search keys)")
    return config


def stage_result(run: str, stage: str) -> dict[str, Any] | None:
    """A complete stage's done.json (see tsllm.loop.run_stage), or None when it is not complete."""
    done = Path(run) / stage / "done.json"
    try:
        return json.loads(done.read_text()) if done.is_file() else None
    except (OSError, ValueError):
        return None


def model_path(run: str, stored: str) -> str:
    """A model path as a stage stores it (relative to the run folder, or absolute): `Loop.model_path`."""
    return stored if Path(stored).is_absolute() else str(Path(run) / stored)


def round_policy(run: str, config: dict[str, Any], k: int) -> str | None:
    """The policy round k of the run started from (and its final evaluation, k == rounds, measures)."""
    if k == 0:
        if config.get("base_model"):
            return config["base_model"]
        done = stage_result(run, "warmstart")
    else:
        done = stage_result(run, f"round_{k - 1}/policy")
    return model_path(run, done["policy"]) if done and done.get("policy") else None


def value_stage(config: dict[str, Any], k: int) -> str:
    """The stage whose value model the loop evaluates round k's policy with: round k's, or the last
    round's for the final evaluation (which trains none)."""
    return f"round_{k - 1 if k == config.get('rounds') and k > 0 else k}/value"


def round_value(run: str, config: dict[str, Any], k: int) -> str | None:
    done = stage_result(run, value_stage(config, k))
    return model_path(run, done["value"]) if done and done.get("value") else None


def pick_round(run: str, config: dict[str, Any], wanted: int | None) -> tuple[int, str, str | None]:
    """(round, policy, value): round `wanted`, or by default the last round that has both models
    (the last with a policy when none has a value yet)."""
    rounds = config.get("rounds")
    last = rounds if isinstance(rounds, int) and rounds >= 0 else 0
    found = {k: (round_policy(run, config, k), round_value(run, config, k)) for k in range(last + 1)}
    with_policy = [k for k, (policy, _) in found.items() if policy]
    if wanted is not None:
        if not 0 <= wanted <= last:
            raise ConfigError(f"--round: the run {run} has rounds 0..{last} (round {last} is its final "
                              f"evaluation), got {wanted}")
        if not found[wanted][0]:
            where = "warmstart" if wanted == 0 else f"round_{wanted - 1}/policy"
            have = f"rounds with a policy: {with_policy}" if with_policy else "no round has one yet"
            raise ConfigError(f"--run: round {wanted} of {run} has no policy model ({where} is not complete); "
                              f"{have}")
        return wanted, *found[wanted]
    if not with_policy:
        raise ConfigError(f"--run: {run} has no policy model yet (its warm start is not complete)")
    complete = [k for k in with_policy if found[k][1]]
    k = (complete or with_policy)[-1]
    return k, *found[k]


def knob_flags(algorithm: str, search: dict[str, Any]) -> list[str]:
    """`--set` items for the run's search knobs and token budget (values as YAML literals)."""
    knobs = dict(search.get("knobs") or {})
    for limit in ("max_tokens", "max_compute"):
        if search.get(limit) is not None:
            knobs[limit] = search[limit]
    return [f"{algorithm}.{name}={json.dumps(value)}" for name, value in knobs.items()]


def resolve_eval_args(args: argparse.Namespace, swept: Sequence[str] = ()) -> str | None:
    """Fill the eval flags the user left out: from the run of `--run` (see the module doc), then
    from EVAL_DEFAULTS. `swept`: the methods --sweep adds to --methods (they take the run's knobs
    too). Changes `args` in place; returns a one-line account of what the run gave, or None
    without --run. Raises ConfigError (message starting with the flag) before any model loads."""
    if args.run is None:
        if args.round is not None:
            raise ConfigError("--round: needs --run RUN_DIR (the round of which run?)")
        for name, default in EVAL_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        return None
    from tsllm.tasks import get_task, names

    config = read_run_config(args.run)
    if config["task"] not in names():
        raise ConfigError(f"--run: the run's task {config['task']!r} is not registered here; choose one of "
                          f"{names()} or import the module that registers it")
    for name, key in FROM_RUN.items():
        if getattr(args, name) is None:
            setattr(args, name, config.get(key, EVAL_DEFAULTS[name]))
    k, policy, value = pick_round(args.run, config, args.round)
    args.round = k
    args.policy = args.policy or policy
    args.value = args.value or value
    args.lenient = args.lenient or config.get("strict") is False
    search = config["search"]
    args.allow_illegal_steps = args.allow_illegal_steps or search.get("legal_steps_only") is False
    algorithm = search.get("algorithm")
    if args.methods is None:
        args.methods = ",".join(dict.fromkeys(["greedy", algorithm, get_task(args.task).baseline]))
    # a swept method joins --methods: `--methods greedy --sweep mcts_alpha...` searches as the run does
    methods = list(dict.fromkeys([m.strip() for m in args.methods.split(",")] + list(swept)))
    if algorithm in methods:  # the run's knobs first: the user's --set items come after and win
        args.set = knob_flags(algorithm, search) + list(args.set)
    guided = [m for m in methods if m not in ("greedy", "cot_sc")]
    if guided and not args.value and get_task(args.task).needs_model:
        raise ConfigError(f"--run: round {k} of {args.run} has no value model ({value_stage(config, k)} is not "
                          "complete) "
                          f"and {guided} need one; choose another --round, give --value, or use --methods "
                          "greedy,cot_sc")
    return (f"run {args.run}, round {k}: task {args.task}, policy {args.policy}, value {args.value}, "
            f"methods {args.methods}" + (f", --set {' '.join(args.set)}" if args.set else ""))
