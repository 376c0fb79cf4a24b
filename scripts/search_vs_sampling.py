"""Search against sampling at matched cost, given the same information: the tables and plots of
docs/RESULTS.md ("Search against sampling, same information"), from a run's checkpoints.

    python scripts/search_vs_sampling.py --run runs/reach-tiny --rounds 0,3 --out-dir OUT [--seeds 3]
        [--set dfs.prior_weight=0.25]

For each round it runs `tsllm eval --run RUN --round K` sweeps (each point over --seeds seeds):
- checker at test time: the run's search (and DFS, if the run's search is another) with terminal
  rewards, each at several caps of compute per question (`max_compute`), against sampling + the
  same checker (`best_of_n_checker`) at the same caps (its sweep is run once per round and reused
  by every --set of the search). Every point records its mean cost in both
  units (step tokens, compute) and the value model's tokens, so the sweep's plot compares the
  curves in each (and in compute + the critic's tokens);
- no checker at test time (TS-LLM's setting): the run's search with `use_terminal_reward=false`
  at its shipped knobs, against CoT-SC and best-of-N (ORM) given its compute per question.
`--set` knobs (repeatable) go to every evaluation, e.g. the shipped search knobs when the run was
made with others. Every sweep writes its JSON and PNG to --out-dir, and the checker setting's two
curves are drawn together in `round<K>_checker<tag>.png`; the script then prints a markdown table per
round and setting (accuracy mean ± std over seeds, cost per question in both units), which is
what the doc holds. Run it on an idle machine: it measures accuracy and cost, not time, so a
busy machine changes nothing but the wall clock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tsllm.sweep import plot_sweep

SETS: list[str] = []  # --set knobs for every evaluation


def methods_in(args: list[str]) -> set[str]:
    """The methods an eval's flags run: those of --methods and those a --sweep or --set names."""
    names = set()
    for flag, value in zip(args, args[1:]):
        if flag == "--methods":
            names.update(value.split(","))
        elif flag in ("--sweep", "--set"):
            names.add(value.split(".")[0])
    return names


def eval_sweep(run: str, round_: int, out: Path, args: list[str], seeds: int) -> dict:
    """One `tsllm eval --run` sweep (skipped when its JSON is already there: resumable)."""
    if not out.exists():
        named = methods_in(args)  # eval refuses a --set for a method it does not run
        command = [sys.executable, "-m", "tsllm.cli", "eval", "--run", run, "--round", str(round_),
                   "--seeds", str(seeds), "--out", str(out), *args,
                   *(a for s in SETS if s.split(".")[0] in named for a in ("--set", s))]
        print("$ tsllm " + " ".join(command[3:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads(out.read_text())


def checker_sweep(run: str, round_: int, out_dir: Path, caps: list[int], search: str, seeds: int) -> dict:
    """The search(es) and sampling + checker at each compute cap (the points record both units).
    Two evaluations: the search's file is named after the --set knobs it takes, and sampling's
    (which no search knob changes) is shared by every search setting of the round."""
    values = ",".join(map(str, caps))
    limit = "max_compute"
    searched = [search] + [m for m in ("dfs",) if m != search]
    tag = "".join(f"_{s.split('.', 1)[1]}" for s in SETS if s.split(".")[0] in searched)
    found = eval_sweep(run, round_, out_dir / f"round{round_}_checker_search{tag}.json", [
        "--methods", "greedy",
        *[arg for m in searched
          for arg in ("--sweep", f"{m}.{limit}={values}", "--set", f"{m}.use_terminal_reward=true")]], seeds)
    sampled = eval_sweep(run, round_, out_dir / f"round{round_}_checker_sampling.json", [
        "--methods", "best_of_n_checker", "--sweep", f"best_of_n_checker.{limit}={values}",
        "--set", "best_of_n_checker.n=64"], seeds)
    # the search's evaluation adds one matched sampling point of its own (tsllm eval pairs every
    # checker search); the sweep above is the baseline
    points = [p for p in found["points"] if p["method"] != "best_of_n_checker"] + sampled["points"]
    plot_sweep(points, out_dir / f"round{round_}_checker{tag}.png")  # both curves on one plot
    return {"points": points}


def no_checker(run: str, round_: int, out_dir: Path, search: str, seeds: int) -> dict:
    """The search without terminal rewards, and CoT-SC / best-of-N (ORM) at its compute."""
    first = eval_sweep(run, round_, out_dir / f"round{round_}_value_search.json", [
        "--methods", f"greedy,{search}", "--set", f"{search}.use_terminal_reward=false"], seeds)
    point = next(p for p in first["points"] if p["method"] == search)
    cap = max(1, round(point["compute_per_question"]["mean"]))
    second = eval_sweep(run, round_, out_dir / f"round{round_}_value_sampling.json", [
        "--methods", "cot_sc,best_of_n", "--set", f"cot_sc.max_compute={cap}", "--set", "cot_sc.k=64",
        "--set", f"best_of_n.max_compute={cap}", "--set", "best_of_n.n=64"], seeds)
    return {"points": first["points"] + second["points"]}


def table(points: list[dict]) -> str:
    lines = ["| method | budget | accuracy (mean ± std over seeds) | step tokens / q | compute / q | value calls / q "
             "| value-model tokens / q |", "|---|---|---|---|---|---|---|"]
    for p in points:
        budget = "-" if p["knob"] is None else f"{p['knob']}={p['value']}"
        a, seeds = p["accuracy"], len(p["runs"])
        spread = f" ± {a['std']:.1%} ({seeds} seeds)" if seeds > 1 else " (deterministic: 1 run)"
        lines.append(f"| {p['method']} | {budget} | {a['mean']:.1%}{spread} | "
                     f"{p['tokens_per_question']['mean']:.0f} | {p['compute_per_question']['mean']:.0f} | "
                     f"{p.get('value_calls_per_question', {}).get('mean', 0):.0f} | "
                     f"{p.get('value_tokens_per_question', {}).get('mean', 0):.0f} |")
    return "\n".join(lines)


UNITS = (("tokens_per_question", "step tokens"), ("compute_per_question", "compute"),
         ("total_compute_per_question", "compute + value-model tokens"))


def matched_table(points: list[dict], search: str, baseline: str = "best_of_n_checker") -> str:
    """Per point of the search: the baseline's accuracy read off its curve at the search's cost, in
    each unit (sampling with a checker runs no critic: its total is its compute); '-' outside the
    costs it spent."""
    from tsllm.sweep import at_cost

    curve = [p for p in points if p["method"] == baseline]
    lines = ["| search point | accuracy | " + " | ".join(f"sampling at its {name}" for _, name in UNITS) + " |",
             "|---|---|" + "---|" * len(UNITS)]
    for p in (p for p in points if p["method"] == search):
        cells = []
        for key, _ in UNITS:
            at = at_cost([(r[key]["mean"], r["accuracy"]["mean"]) for r in curve if r[key]["mean"] > 0], p[key]["mean"])
            cells.append("-" if at is None else f"{at[0]:.1%} ({p[key]['mean']:.0f})")
        lines.append(f"| {p['knob']}={p['value']} | {p['accuracy']['mean']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a `tsllm run` output folder")
    parser.add_argument("--rounds", default="0", help="comma-separated rounds whose checkpoints to compare")
    parser.add_argument("--out-dir", required=True, help="where the sweeps' JSON and PNG files go")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--compute-caps", default="1000,2000,4000,8000,16000")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KNOB=VALUE",
                        help="a knob for every evaluation (repeatable)")
    args = parser.parse_args()
    SETS.extend(args.set)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    search = json.loads((Path(args.run) / "config.json").read_text())["search"]["algorithm"]
    for round_ in (int(r) for r in args.rounds.split(",")):
        caps = [int(c) for c in args.compute_caps.split(",")]
        result = checker_sweep(args.run, round_, out_dir, caps, search, args.seeds)
        print(f"\n### Round {round_}, checker at test time\n\n{table(result['points'])}")
        print(f"\n{matched_table(result['points'], search)}")
        result = no_checker(args.run, round_, out_dir, search, args.seeds)
        print(f"\n### Round {round_}, no checker at test time\n\n{table(result['points'])}")


if __name__ == "__main__":
    main()
