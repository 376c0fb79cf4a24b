"""Loop benchmark: does the tree search improve the policy more than sampling at the same tokens?

    tsllm bench loop [--config FILE] [--output-dir DIR] [--out FILE.json] [key=value ...]

Runs the configured loop twice, `improve=search` under <output-dir>/search and `improve=sampling`
(the RFT baseline: the policy's own rollouts at the search's generated tokens per problem) under
<output-dir>/sampling, and prints one table row per round and mode: held-out greedy and search
accuracy, training problems solved, distinct problems in the policy's data, and the improve
stage's generated tokens per problem; the rows and the two runs' rounds go to a JSON file.

Both runs start from one warm start: the sampling run begins with copies of the search run's
`warmstart` folder and its round-0 `sample`, `value` and `eval` stages, which are identical by
construction (the same config but `improve`, the same seed, and nothing yet trained on either
run's improve data), so the comparison is not blurred by two warm starts and costs one less.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tsllm.loop_config import LoopConfig

MODES = ("search", "sampling")
SHARED_ROUND_0 = ("sample", "value", "eval")  # stages that do not depend on the improve mode


def share_warm_start(source: Path, target: Path) -> list[str]:
    """Copy `source`'s warm start and round-0 shared stages into `target` (those it lacks), with the
    paths their done.json / results.json name pointed at `target`'s copies. Returns what was copied."""
    copied = []
    for stage in ["warmstart", *(f"round_0/{name}" for name in SHARED_ROUND_0)]:
        src, dst = source / stage, target / stage
        if not (src / "done.json").is_file() or dst.exists():
            continue
        shutil.copytree(src, dst)
        for name in ("done.json", "results.json"):
            if (dst / name).is_file():
                (dst / name).write_text((dst / name).read_text().replace(str(source), str(target)))
        copied.append(stage)
    return copied


def load_mode(config_file: str | None, overrides: list[str], output_dir: Path, mode: str) -> LoopConfig:
    from tsllm.config import load_config

    return load_config(LoopConfig, config_file, [*overrides, f"improve={mode}", f"output_dir={output_dir / mode}"])


def run_loop_bench(config_file: str | None, overrides: list[str], output_dir: str | Path,
                   progress: bool = True) -> dict[str, Any]:
    """Both loops, the search one first; raises ConfigError before any work on a bad config."""
    from tsllm.config import to_dict
    from tsllm.loop import Loop, check_output_dir
    from tsllm.tracking import make_tracker

    out = Path(output_dir)
    configs = {mode: load_mode(config_file, overrides, out, mode) for mode in MODES}  # both checked first
    for config in configs.values():
        check_output_dir(config)
    result: dict[str, Any] = {"config": to_dict(configs["search"]), "runs": {}}
    for mode, config in configs.items():
        if mode == "sampling":
            result["shared_from_search"] = share_warm_start(out / "search", out / "sampling")
        print(f"tsllm bench loop: improve={mode}, output {config.output_dir}", file=sys.stderr)
        tracker = make_tracker(config.tracking.report_to, Path(config.output_dir), project=config.tracking.project,
                               run_name=f"{out.name}-{mode}", config=to_dict(config), mode=config.tracking.mode)
        try:
            result["runs"][mode] = Loop(config, tracker, progress=progress).run()
        finally:
            tracker.finish()
    result["table"] = table_rows(result["runs"])
    return result


def table_rows(runs: dict[str, list[dict]]) -> list[dict]:
    """One row per (round, mode) with the numbers the comparison reads."""
    rows = []
    for k in range(max(len(r) for r in runs.values())):
        for mode, rounds in runs.items():
            if k < len(rounds):
                r = rounds[k]
                rows.append({"round": k, "mode": mode, "greedy_accuracy": r["greedy_accuracy"],
                             "search_accuracy": r["search_accuracy"], "train_solved": r.get("train_solved"),
                             "train_problems": r.get("train_problems"), "policy_problems": r.get("policy_problems"),
                             "improve_tokens_per_question": r.get("improve_tokens_per_question")})
    return rows


def print_loop_table(result: dict[str, Any]) -> None:
    search = result["config"]["search"]["algorithm"]  # the eval search, named (the column is its accuracy)
    width = max(8, len(search) + 2)
    header = (f"{'round':>5}  {'improve':<9}{'greedy':>8}{search:>{width}}{'solved':>12}{'policy problems':>17}"
              f"{'tok/q':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in result["table"]:
        solved = "-" if r["train_solved"] is None else f"{r['train_solved']}/{r['train_problems']}"
        problems = "-" if r["policy_problems"] is None else str(r["policy_problems"])
        tokens = "-" if r["improve_tokens_per_question"] is None else f"{r['improve_tokens_per_question']:.0f}"
        print(f"{r['round']:>5}  {r['mode']:<9}{r['greedy_accuracy']:>8.1%}{r['search_accuracy']:>{width}.1%}"
              f"{solved:>12}{problems:>17}{tokens:>9}")
    print(f"greedy / {search}: held-out accuracy of the round's policy; solved: training problems the round's "
          "improve stage solved; policy problems: distinct problems in the policy's data after the round; "
          "tok/q: the improve stage's generated tokens per training problem")
    last = {mode: rounds[-1]["greedy_accuracy"] for mode, rounds in result["runs"].items()}
    print(f"last round greedy: search loop {last['search']:.1%}, sampling (RFT) loop {last['sampling']:.1%}")


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")
