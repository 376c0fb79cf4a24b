"""The per-round table of several runs of one config (seeds), as mean ± std and min-max: what
docs/RESULTS.md gives for the main job.

    python scripts/seeds_table.py runs/reach-s0 runs/reach-s1 runs/reach-s2

Each RUN is a `tsllm run` output folder (its rounds.jsonl). Columns: held-out greedy, the search,
the compute-matched and token-matched sampling baselines (accuracy), the search's step tokens and
compute per held-out problem, and the pool problems the training search solved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tsllm.sweep import spread

ACCURACIES = ("greedy_accuracy", "search_accuracy", "baseline_accuracy", "baseline_tokens_accuracy")
COSTS = ("tokens_per_question", "search_compute_per_question", "train_solved")


def rounds(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines() if line.strip()]


def cell(values: list[float], percent: bool) -> str:
    if not values:
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    mean, std, low, high = (spread(values)[key] * scale for key in ("mean", "std", "min", "max"))
    if len(values) == 1:
        return f"{mean:,.1f}{unit}" if percent else f"{mean:,.0f}"
    if percent:
        return f"{mean:.1f}% ± {std:.1f} ({low:.1f}-{high:.1f})"
    return f"{mean:,.0f} ± {std:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="`tsllm run` output folders of one config")
    args = parser.parse_args()
    runs = [rounds(run) for run in args.runs]
    header = ["round", "greedy", "search", "sampling, compute-matched", "sampling, token-matched",
              "search step tokens / q", "search compute / q", "pool problems solved"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for k in range(max(map(len, runs))):
        reached = [r[k] for r in runs if k < len(r)]
        cells = [cell([r[key] for r in reached if r.get(key) is not None], True) for key in ACCURACIES]
        cells += [cell([r[key] for r in reached if r.get(key) is not None], False) for key in COSTS]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"\n{len(runs)} runs; mean ± sample std (min-max) over the runs that reached the round.")


if __name__ == "__main__":
    main()
