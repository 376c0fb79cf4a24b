"""Loop benchmark: which improve stage makes the policy better, round by round, from one warm start?

    tsllm bench loop [--config FILE] [--output-dir DIR] [--out FILE.json] [--arms A,B,...] [--seeds N]
                     [--first-seed S] [key=value ...]

An arm is one loop: a policy target (`paths`, `advantages`, `visits`, `preferences`: `improve=search`
with that `policy.target`, tsllm/training/targets.py) or `sampling` (the RFT baseline: the policy's own
rollouts, under the task's rules, at the training search's compute per problem (policy tokens
processed, generated or scored, plus prompts not served from a cache), trained on their winning
paths). `search` is the old name of `paths`, and the default arms are `search,sampling`, the search
loop against the RFT loop. Each arm runs under <output-dir>/<arm>; with `--seeds N` everything is repeated with
seed=0..N-1 (S..S+N-1 with `--first-seed S`, to add seeds to a finished bench) under
<output-dir>/seed_<s>/<arm>. The table shows one row per round and arm of the
first seed: held-out greedy and search accuracy, training problems solved, distinct problems in
the policy's data, and the improve stage's step tokens and compute per problem (compute is the
unit the arms are matched in); then the held-out greedy
accuracy per round and arm as mean ± std over seeds. The JSON holds every run's rounds, both
tables and the command; a PNG beside it draws greedy accuracy per round, one line per arm, with a
band of ± one std over seeds.

All arms of one seed start from one warm start: every arm after the first begins with copies of
the first arm's `warmstart` folder and its round-0 `sample`, `value` and `eval` stages, which are
identical by construction (the same config but `improve` / `policy.target`, the same seed, and
nothing yet trained on any arm's improve data), so the comparison is not blurred by several warm
starts and each extra arm costs one less. Round 0's training search is the same in every arm too
(the same policy, value model and knobs): when the first arm is a search arm, the later ones get
its `search` stage, a tree target only if the first arm kept its trees (put a tree target first to
share it with all), and the RFT arm reads its compute target from it instead of running the
search again to measure it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tsllm.config import ConfigError
from tsllm.loop_config import LoopConfig
from tsllm.training.targets import TARGETS, TREE_TARGETS

ARMS = (*TARGETS, "sampling")
ALIASES = {"search": "paths"}  # the arm's old name: the search loop on winning paths
DEFAULT_ARMS = ("search", "sampling")
SHARED_ROUND_0 = ("sample", "value", "eval")  # stages that do not depend on the improve mode or target


def parse_arms(text: str) -> list[str]:
    """`--arms`: comma-separated arm names, each once."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS and a not in ALIASES]
    if not arms or unknown:
        raise ConfigError(f"--arms: {', '.join(unknown) or 'none given'}; choose from {', '.join(ARMS)} "
                          "(search: the old name of paths)")
    if len({ALIASES.get(a, a) for a in arms}) < len(arms):
        raise ConfigError(f"--arms: {text!r} names an arm twice")
    return arms


def arm_overrides(arm: str) -> list[str]:
    """The config keys that make `arm` of the bench's loop."""
    if arm == "sampling":
        return ["improve=sampling"]
    return ["improve=search", f"policy.target={ALIASES.get(arm, arm)}"]


def arm_dir(out: Path, arm: str, seed: int | None) -> Path:
    """Where an arm's run lives: <out>/<arm>, or <out>/seed_<s>/<arm> when seeds are repeated."""
    return out / arm if seed is None else out / f"seed_{seed}" / arm


def shared_stages(first: LoopConfig, arm: LoopConfig) -> list[str]:
    """The stages `arm` can take from the seed's first arm: the warm start, round 0's shared stages,
    and round 0's training search when `first` ran one that holds what `arm` reads (trees for a
    tree target; the RFT arm reads only its compute)."""
    stages = ["warmstart", *(f"round_0/{name}" for name in SHARED_ROUND_0)]
    # the RFT arm's target is paths (a tree target with sampling is refused at load)
    if first.improve == "search" and (first.policy.target in TREE_TARGETS or arm.policy.target not in TREE_TARGETS):
        stages.append("round_0/search")
    return stages


def share_warm_start(source: Path, target: Path, stages: list[str]) -> list[str]:
    """Copy `source`'s `stages` into `target` (those it lacks and `source` completed), with the
    paths their done.json / results.json name pointed at `target`'s copies. Returns what was copied."""
    copied = []
    for stage in stages:
        src, dst = source / stage, target / stage
        if not (src / "done.json").is_file() or dst.exists():
            continue
        shutil.copytree(src, dst)
        for name in ("done.json", "results.json"):
            if (dst / name).is_file():
                (dst / name).write_text((dst / name).read_text().replace(str(source), str(target)))
        copied.append(stage)
    return copied


def load_arm(config_file: str | None, overrides: list[str], output_dir: Path, arm: str,
             seed: int | None) -> LoopConfig:
    from tsllm.config import load_config

    seeded = [] if seed is None else [f"seed={seed}"]
    return load_config(LoopConfig, config_file, [*overrides, *seeded, *arm_overrides(arm),
                                                 f"output_dir={arm_dir(output_dir, arm, seed)}"])


def run_loop_bench(config_file: str | None, overrides: list[str], output_dir: str | Path, progress: bool = True,
                   arms: list[str] | tuple[str, ...] = DEFAULT_ARMS, seeds: int | None = None,
                   first_seed: int = 0) -> dict[str, Any]:
    """Every arm's loop for every seed (`seeds` None: once, with the config's seed; else seed
    first_seed..first_seed+seeds-1), the first arm of a seed first; raises ConfigError before any
    work on a bad config."""
    from tsllm.config import to_dict
    from tsllm.loop import Loop, check_output_dir
    from tsllm.tracking import make_tracker

    out = Path(output_dir)
    seed_list: list[int | None] = [None] if seeds is None else list(range(first_seed, first_seed + seeds))
    configs = {(seed, arm): load_arm(config_file, overrides, out, arm, seed)  # all checked first
               for seed in seed_list for arm in arms}
    for config in configs.values():
        check_output_dir(config)
    first = configs[seed_list[0], arms[0]]
    result: dict[str, Any] = {"config": to_dict(first), "arms": list(arms), "seeds": seeds, "first_seed": first_seed,
                              "seed_runs": {}, "shared_warm_start": {}}
    for seed in seed_list:
        runs, shared = {}, {}
        for arm in arms:
            config = configs[seed, arm]
            if arm != arms[0]:
                shared[arm] = share_warm_start(arm_dir(out, arms[0], seed), arm_dir(out, arm, seed),
                                               shared_stages(configs[seed, arms[0]], config))
            print(f"tsllm bench loop: arm {arm} ({' '.join(arm_overrides(arm))}), seed {config.seed}, "
                  f"output {config.output_dir}", file=sys.stderr)
            name = f"{out.name}-{arm}" + ("" if seed is None else f"-seed{seed}")
            tracker = make_tracker(config.tracking.report_to, Path(config.output_dir), project=config.tracking.project,
                                   run_name=name, config=to_dict(config), mode=config.tracking.mode)
            try:
                runs[arm] = Loop(config, tracker, progress=progress).run()
            finally:
                tracker.finish()
        key = str(configs[seed, arms[0]].seed)
        result["seed_runs"][key], result["shared_warm_start"][key] = runs, shared
    result["runs"] = next(iter(result["seed_runs"].values()))  # the first seed's, as the table shows
    result["table"] = table_rows(result["runs"])
    result["summary"] = summary_rows(result["seed_runs"])
    return result


def table_rows(runs: dict[str, list[dict]]) -> list[dict]:
    """One row per (round, arm) with the numbers the comparison reads."""
    rows = []
    for k in range(max(len(r) for r in runs.values())):
        for mode, rounds in runs.items():
            if k < len(rounds):
                r = rounds[k]
                rows.append({"round": k, "mode": mode, "greedy_accuracy": r["greedy_accuracy"],
                             "search_accuracy": r["search_accuracy"], "train_solved": r.get("train_solved"),
                             "train_problems": r.get("train_problems"), "policy_problems": r.get("policy_problems"),
                             "improve_tokens_per_question": r.get("improve_tokens_per_question"),
                             "improve_compute_per_question": r.get("improve_compute_per_question")})
    return rows


def summary_rows(seed_runs: dict[str, dict[str, list[dict]]], metrics: tuple[str, ...] = ("greedy_accuracy",
                                                                                           "search_accuracy")
                 ) -> list[dict]:
    """One row per (round, arm): each metric's mean and std over the seeds that reached the round
    (std: the sample standard deviation, 0 for one seed), and how many seeds that is."""
    from tsllm.sweep import spread

    arms = list(dict.fromkeys(arm for runs in seed_runs.values() for arm in runs))
    rounds = max(len(rows) for runs in seed_runs.values() for rows in runs.values())
    summary = []
    for k in range(rounds):
        for arm in arms:
            reached = [runs[arm][k] for runs in seed_runs.values() if arm in runs and k < len(runs[arm])]
            if not reached:
                continue
            row: dict[str, Any] = {"round": k, "arm": arm, "seeds": len(reached)}
            for metric in metrics:
                summary_of = spread([r[metric] for r in reached])
                row[f"{metric}_mean"], row[f"{metric}_std"] = summary_of["mean"], summary_of["std"]
            summary.append(row)
    return summary


def print_loop_table(result: dict[str, Any]) -> None:
    search = result["config"]["search"]["algorithm"]  # the eval search, named (the column is its accuracy)
    width = max(8, len(search) + 2)
    arm_width = max(9, *(len(a) + 1 for a in result["runs"]))
    header = (f"{'round':>5}  {'arm':<{arm_width}}{'greedy':>8}{search:>{width}}{'solved':>12}"
              f"{'policy problems':>17}{'tok/q':>9}{'compute/q':>11}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in result["table"]:
        solved = "-" if r["train_solved"] is None else f"{r['train_solved']}/{r['train_problems']}"
        problems = "-" if r["policy_problems"] is None else str(r["policy_problems"])
        tokens, compute = ("-" if r.get(key) is None else f"{r[key]:.0f}"
                           for key in ("improve_tokens_per_question", "improve_compute_per_question"))
        print(f"{r['round']:>5}  {r['mode']:<{arm_width}}{r['greedy_accuracy']:>8.1%}"
              f"{r['search_accuracy']:>{width}.1%}{solved:>12}{problems:>17}{tokens:>9}{compute:>11}")
    print(f"greedy / {search}: held-out accuracy of the round's policy; solved: training problems the round's "
          "improve stage solved; policy problems: distinct problems in the policy's data after the round; "
          "tok/q, compute/q: the improve stage's step tokens and compute (the matched unit) per training problem")
    last = ", ".join(f"{arm} loop {rounds[-1]['greedy_accuracy']:.1%}" for arm, rounds in result["runs"].items())
    print(f"last round greedy: {last}")
    seeds = len(result["seed_runs"])
    if seeds > 1:
        print(f"\nheld-out greedy accuracy, mean ± std over {seeds} seeds")
        for r in result["summary"]:
            print(f"{r['round']:>5}  {r['arm']:<{arm_width}}{r['greedy_accuracy_mean']:>8.1%} ± "
                  f"{r['greedy_accuracy_std']:.1%}  ({r['seeds']} seeds)")


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")


def write_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Held-out greedy accuracy per round, one line per arm, a band of ± one std over seeds."""
    from tsllm.tracking import plot_mean_per_round

    return plot_mean_per_round(result["summary"], "greedy_accuracy", path,
                               title=f"Held-out greedy accuracy per round ({len(result['seed_runs'])} seed(s))")
