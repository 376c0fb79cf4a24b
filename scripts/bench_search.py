"""Throughput benchmark for every search algorithm on a large batch of random toy trees.

    python scripts/bench_search.py                       # 256 roots, depth 6, branching 4
    python scripts/bench_search.py --algorithms bfs,parallel_dora --repeats 5 --out bench.json

Not a test: it measures how fast the search code itself is (the toy policy costs almost nothing),
i.e. the Python overhead per expansion and per value call when many trees are searched together.
Each algorithm runs on the same batch with a fresh toy policy; the table shows the median wall
time of --repeats runs, and per-second rates of states expanded and states valued (from the toy
policy's counters), batched expand calls, tree nodes and generated tokens.

Algorithms come from the `tsllm.search.ALGORITHMS` registry; each gets the knobs below plus the
same per-root --max-expansions. One that raises is reported and the others are still measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search import ALGORITHMS, takes_rng
from tsllm.types import Budget

# name in tsllm.search.ALGORITHMS -> knobs (the parallel rules share num_rollouts/beam_width)
KNOBS: dict[str, dict] = {
    "cot_greedy": {},
    "cot_sc": {"k": 8},
    "best_of_n": {"n": 8},
    "bfs": {"beam_width": 4, "width": 4},
    "dfs": {"width": 4, "max_answers": 4},
    "best_first": {"width": 4},
    "mcts": {"num_simulations": 16, "width": 4},
    "mcts_alpha": {"num_simulations": 10, "width": 4},
    "mcts_rollout": {"num_paths": 8, "width": 4},
    "gumbel_mcts": {"num_simulations": 16, "width": 4},
}
PARALLEL_KNOBS = {"num_rollouts": 16, "beam_width": 4}


def build_batch(roots: int, depth: int, branching: int, distinct: int) -> tuple[FixedTreeEnv, list[str]]:
    """`roots` trees under prefixes q0/, q1/, ...; only `distinct` of them are generated (random
    trees are slow to build) and the rest are relabelled copies, so every root has its own ids."""
    distinct = roots if distinct <= 0 else min(distinct, roots)
    templates = [random_tree(depth, branching, seed=i) for i in range(distinct)]
    nodes: dict[str, dict] = {}
    for i in range(roots):
        prefix = f"q{i}/"
        for node_id, node in templates[i % distinct].items():
            node = dict(node)
            if "children" in node:
                node["children"] = [prefix + c for c in node["children"]]
            nodes[prefix + node_id] = node
    ids = [f"q{i}/root" for i in range(roots)]
    return FixedTreeEnv(nodes, root=ids[0]), ids


def run_once(func, knobs: dict, env: FixedTreeEnv, roots: list[str], max_expansions: int) -> dict:
    pv = FixedTreePolicyValue(env, seed=0)
    start = time.perf_counter()
    randomness = {"rng": np.random.default_rng(0)} if takes_rng(func) else {}
    outputs = func(env, pv, roots, **knobs, budget=Budget(max_expansions=max_expansions), **randomness)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "states_expanded": pv.states_expanded,
        "states_evaluated": pv.states_evaluated,
        "expand_calls": pv.expand_calls,
        "evaluate_calls": pv.evaluate_calls,
        "rollout_calls": pv.rollout_calls,
        "nodes": int(sum(o.stats.get("nodes", 0) for o in outputs)),
        "tokens": int(sum(o.budget.tokens for o in outputs)),
        "answered": sum(o.answer is not None for o in outputs),
    }


def bench(name: str, env, roots, repeats: int, max_expansions: int) -> dict:
    func = ALGORITHMS[name]
    knobs = KNOBS.get(name, PARALLEL_KNOBS)
    try:
        runs = [run_once(func, knobs, env, roots, max_expansions) for _ in range(repeats)]
    except Exception as e:  # a broken algorithm must not stop the others being measured
        return {"algorithm": name, "knobs": knobs, "error": f"{type(e).__name__}: {e}"}
    wall = statistics.median(r["wall_s"] for r in runs)
    last = runs[-1]
    return {
        "algorithm": name, "knobs": knobs, "wall_s": wall, "wall_s_all": [r["wall_s"] for r in runs],
        **{k: v for k, v in last.items() if k != "wall_s"},
        "expansions_per_s": last["states_expanded"] / wall if wall > 0 else float("inf"),
        "value_calls_per_s": last["states_evaluated"] / wall if wall > 0 else float("inf"),
    }


HEADER = f"{'algorithm':<18}{'wall s':>9}{'expand/s':>11}{'value/s':>11}{'exp calls':>10}{'nodes':>9}{'tokens':>9}"


def print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['algorithm']:<18}  {r['error']}")
    else:
        print(f"{r['algorithm']:<18}{r['wall_s']:>9.3f}{r['expansions_per_s']:>11.0f}"
              f"{r['value_calls_per_s']:>11.0f}{r['expand_calls']:>10}{r['nodes']:>9}{r['tokens']:>9}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", type=int, default=256, help="trees searched together")
    parser.add_argument("--depth", type=int, default=6, help="depth of each random tree")
    parser.add_argument("--branching", type=int, default=4, help="children per inner node")
    parser.add_argument("--distinct", type=int, default=8,
                        help="how many different random trees to generate (0 = one per root)")
    parser.add_argument("--max-expansions", type=int, default=32, help="per-root expansion limit")
    parser.add_argument("--repeats", type=int, default=3, help="runs per algorithm (median wall)")
    parser.add_argument("--algorithms", default="all",
                        help=f"comma-separated names, or 'all': {', '.join(ALGORITHMS)}")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    names = list(ALGORITHMS) if args.algorithms == "all" else [a.strip() for a in args.algorithms.split(",")]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        parser.error(f"unknown algorithms {unknown}; choose from {list(ALGORITHMS)}")
    for flag in ("roots", "depth", "branching", "repeats", "max_expansions"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")

    start = time.perf_counter()
    env, roots = build_batch(args.roots, args.depth, args.branching, args.distinct)
    print(f"{len(env.nodes)} nodes in {args.roots} trees built in {time.perf_counter() - start:.1f} s; "
          f"median of {args.repeats} runs, max {args.max_expansions} expansions per root\n")
    print(HEADER + "\n" + "-" * len(HEADER))
    results = []
    for name in names:
        results.append(bench(name, env, roots, args.repeats, args.max_expansions))
        print_row(results[-1])
    if args.out:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.out.write_text(json.dumps({"config": config, "results": results}, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
