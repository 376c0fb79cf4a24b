"""How often the policy's own sampled games break the task's rules (a line naming no allowed move),
which the sampling baselines pay for and a search over legal moves never does.

    python scripts/broken_rules.py runs/reach-tiny/warmstart/model runs/reach-tiny/round_2/policy/model \
        [--task reach --samples 8 --test-questions 256 --seed 0]

The game's held-out problems (rebuilt from the task's generator, as a run builds them), `--samples`
sampled games each at temperature 1 on the HF backend, the policy alone (no legal-move mask).
"""

import argparse

from tsllm.generation import make_generator
from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policies", nargs="+", help="policy model folders")
    parser.add_argument("--task", default="reach", help="a game task (its env lists legal moves)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--test-questions", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="the run's seed")
    parser.add_argument("--max-step-tokens", type=int, default=16, help="the run's max_step_tokens")
    args = parser.parse_args()
    task = get_task(args.task)(TaskSettings(seed=args.seed, test_questions=args.test_questions,
                                          max_step_tokens=args.max_step_tokens))
    env, roots = task.env, [task.env.initial_state(p) for p in task.test_problems()]
    for policy in args.policies:
        pv = task.policy_value(policy, lambda path: make_generator("hf", path), lambda texts: [0.0] * len(texts),
                               1.0, legal_steps_only=False)
        broken = total = 0
        for i in range(0, len(roots), 64):
            for root, rollouts in zip(roots[i:i + 64], pv.rollout(roots[i:i + 64], args.samples)):
                for rollout in rollouts:
                    state = root
                    for action in rollout.actions:
                        state = env.step(state, action)
                    total += 1
                    broken += env.board(state) is None
        print(f"{policy}: {broken}/{total} sampled games broke a rule ({broken / total:.1%})")


if __name__ == "__main__":
    main()
