"""How many training problems does each improve operator solve, per generated token? One run's round-k
policy and value, its round-k pool, the training search as configured and variants of it, against
sampling (the RFT arm) at each variant's tokens per problem.

    python scripts/improve_probe.py --run runs/reach-tiny --round 0 \
        --variant mcts_alpha:'{}' --variant mcts_alpha:'{"width": 8, "num_simulations": 6}' \
        --variant mcts_rollout:'{"num_paths": 8, "width": 4}'

A variant is ALGORITHM:JSON, the JSON laid over the run's training knobs when the algorithm is the
run's, else used alone. "solved" is what the loop trains on: problems with at least one winning path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a `tsllm run` output folder")
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--variant", action="append", default=[], metavar="ALGORITHM:JSON")
    parser.add_argument("--problems", type=int, help="the first N pool problems (default: all)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()

    from tsllm.config import load_config
    from tsllm.eval_run import pick_round, read_run_config
    from tsllm.loop import Loop, LoopConfig, solved_problems

    k, policy, value = pick_round(args.run, read_run_config(args.run), args.round)  # what `eval --run` takes
    loop = Loop(load_config(LoopConfig, str(Path(args.run) / "config.json"), []), None, progress=False)
    problems = loop.pool(k)[: args.problems]
    s = loop.config.search
    run_algorithm, run_knobs = s.algorithm, dict(s.knobs, **s.train_knobs)  # the training search's
    rows = []
    for spec in args.variant or [f"{run_algorithm}:{{}}"]:
        algorithm, _, knobs = spec.partition(":")
        base = run_knobs if algorithm == run_algorithm else {}
        s.algorithm, s.knobs, s.train_knobs = algorithm, {**base, **json.loads(knobs or "{}")}, {}
        start = time.perf_counter()
        outs, _ = loop._search(policy, value, problems, spec)
        found = [{"question": problems[i]["question"], "reward": loop.env.reward(c.path[-1])}
                 for i, out in enumerate(outs) for c in out.candidates if loop.env.is_terminal(c.path[-1])]
        tokens = sum(out.budget.tokens for out in outs) / len(outs)
        seconds = time.perf_counter() - start
        pv = loop.policy_value(policy, None)
        sampled, spent = loop._sample_to_budget(pv, list(enumerate(problems)), tokens, "sampling")
        rows.append({"variant": spec, "search_solved": solved_problems(found), "search_tokens": tokens,
                     "search_seconds": seconds, "sampling_solved": solved_problems([r for _, r in sampled]),
                     "sampling_tokens": sum(b["tokens"] for _, b in spent) / len(spent)})
        r = rows[-1]
        print(f"{spec:<60} search solved {r['search_solved']:>4} at {tokens:6.0f} tok/problem ({seconds:.0f} s); "
              f"sampling solved {r['sampling_solved']:>4} at {r['sampling_tokens']:6.0f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
