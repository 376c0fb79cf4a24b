"""Held-out accuracy of a reach evaluation by shortest-solution length (the generator's depth).

    python scripts/reach_by_depth.py runs/reach-tiny/round_0/eval/results.json [more eval JSONs] \
        [--seed 0 --test-questions 256]

Reads `tsllm eval --out` files or a run's round_<k>/eval/results.json; the held-out problems are
rebuilt from the task's generator (the same seed and count as the run) to know each one's depth.
"""

import argparse
import json
from collections import defaultdict

from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="eval JSON files")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed")
    parser.add_argument("--test-questions", type=int, default=256, help="the run's test_questions")
    args = parser.parse_args()
    task = get_task("reach")(TaskSettings(seed=args.seed, test_questions=args.test_questions))
    depth = {p["question"]: p["depth"] for p in task.test_problems()}
    for path in args.results:
        for method, result in json.load(open(path))["methods"].items():
            solved = defaultdict(lambda: [0, 0])
            for q in result["per_question"]:
                solved[depth[q["question"]]][0] += q["correct"]
                solved[depth[q["question"]]][1] += 1
            cells = "  ".join(f"{d}: {a}/{n}" for d, (a, n) in sorted(solved.items()))
            print(f"{path}  {method:<12}{result['accuracy']:>7.1%}   by depth  {cells}")


if __name__ == "__main__":
    main()
