"""How good is the warm-started tiny policy? Writes Game24 warm-start data (train split only),
runs the warm-start SFT of configs/policy/tiny_oracle.yaml (a fresh default tiny Llama; ~10 min of 2-core
CPU, or what `max_seconds=...` allows),
then decodes the 100 test-split puzzles step by step through the env (greedy, stop at "\\n") and
with sampling (pass@k), and prints one JSON line of results.

    OMP_NUM_THREADS=1 python scripts/warmstart_probe.py [--out out/probe] [--samples 8] [key=value ...]
    OMP_NUM_THREADS=1 python scripts/warmstart_probe.py num_train_epochs=7 max_seconds=180   # 3 minutes
    OMP_NUM_THREADS=1 python scripts/warmstart_probe.py --puzzles 300 --out out/p300   # fewer puzzles
    python scripts/warmstart_probe.py --policy out/policy/warmstart     # evaluate a trained checkpoint only

Accuracy is reported under both Game24 checkers: `answer` (the final expression makes 24) and
`strict` (every step is valid too; what the warm-start labels use).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tsllm import tasks
from tsllm.config import load_config
from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, split
from tsllm.generation.hf import HFGenerator
from tsllm.tasks.warmstart import WarmStartConfig, game24_rows, write_jsonl
from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy
from tsllm.types import SamplingParams

REPO = Path(__file__).resolve().parents[1]
STEP_TOKENS = 48  # a step line is at most ~40 characters


def decode_stepwise(generator: HFGenerator, env: Game24Env, states: list[TextState],
                    sampling: SamplingParams) -> list[TextState]:
    """Extend every state one line at a time (one batched call per depth) until all are terminal."""
    states = list(states)
    while True:
        open_ = [i for i, s in enumerate(states) if not env.is_terminal(s)]
        if not open_:
            return states
        outs = generator.generate([env.prompt(states[i]) for i in open_], sampling)
        for i, row in zip(open_, outs):
            text = row[0].text.strip()
            # An empty line or an early end of text would stall the walk: end the trace there.
            states[i] = env.step(states[i], text if text else "Answer: none")
            if row[0].finish_reason == "eos" and not env.is_terminal(states[i]):
                states[i] = env.step(states[i], "Answer: none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/probe")
    parser.add_argument("--samples", type=int, default=8, help="k for pass@k (temperature 1)")
    parser.add_argument("--imperfect-fraction", type=float, default=0.2)
    parser.add_argument("--traces-per-puzzle", type=int, default=1,
                        help="WarmStartConfig.game24_traces_per_puzzle: different valid traces per puzzle")
    parser.add_argument("--puzzles", type=int, default=None,
                        help="WarmStartConfig.game24_puzzles: train on the first N train-split puzzles only "
                             "(held-out greedy against N shows how data-limited the policy is)")
    parser.add_argument("--policy", help="evaluate this checkpoint folder instead of training one")
    parser.add_argument("overrides", nargs="*", help="PolicyTrainConfig key=value overrides")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    if args.policy:
        generator = HFGenerator(args.policy, max_batch_size=256)
        results["policy"] = args.policy
    else:
        rows = game24_rows(WarmStartConfig(prontoqa_problems=0, imperfect_fraction=args.imperfect_fraction,
                                           game24_traces_per_puzzle=args.traces_per_puzzle,
                                           game24_puzzles=args.puzzles))
        data = write_jsonl(rows, out / "warmstart.jsonl")
        config = load_config(PolicyTrainConfig, REPO / "configs/policy/tiny_oracle.yaml",
                             [f"data_files=[{data}]", f"output_dir={out / 'policy'}", *args.overrides])
        metrics = train_policy(config, formats=tasks)
        generator = HFGenerator(metrics["model"], metrics["tokenizer"], max_batch_size=256)
        results.update({
            "train_rows": len(rows),
            "train_puzzles": len({r["question"] for r in rows}),
            "train_seconds": round(metrics["train_seconds"], 1),
            "global_step": metrics["global_step"],
            "epochs": round(metrics["global_step"] * config.per_device_train_batch_size / metrics["train_examples"], 1),
            "train_tokens_per_second": round(metrics["tokens_per_second"]),
            "eval_loss_before": metrics["eval_loss_before"],
            "eval_loss": metrics["eval_loss"],
            "train_loss": metrics["train_loss"],
        })

    train, test = split()
    strict, loose = Game24Env(strict=True), Game24Env()
    seen = decode_stepwise(generator, strict, [strict.initial_state(p) for p in train[:100]],
                           SamplingParams(temperature=0, max_new_tokens=STEP_TOKENS, stop=["\n"]))
    started = time.perf_counter()
    roots = [strict.initial_state(p) for p in test]
    greedy = decode_stepwise(generator, strict, roots,
                             SamplingParams(temperature=0, max_new_tokens=STEP_TOKENS, stop=["\n"]))
    greedy_seconds = time.perf_counter() - started
    sampled = [decode_stepwise(generator, strict, roots, SamplingParams(
        temperature=1.0, max_new_tokens=STEP_TOKENS, stop=["\n"], seed=1000 + k)) for k in range(args.samples)]

    def solved(env, state):
        return env.reward(state) > 0

    results.update({
        "test_puzzles": len(test),
        "greedy_acc_strict": sum(solved(strict, s) for s in greedy) / len(test),
        "greedy_acc_answer": sum(solved(loose, s) for s in greedy) / len(test),
        f"pass@{args.samples}_strict": sum(any(solved(strict, run[i]) for run in sampled)
                                           for i in range(len(test))) / len(test),
        f"pass@{args.samples}_answer": sum(any(solved(loose, run[i]) for run in sampled)
                                           for i in range(len(test))) / len(test),
        "sample_acc_strict": sum(solved(strict, run[i]) for run in sampled
                                 for i in range(len(test))) / (len(test) * args.samples),
        "train_split_greedy_acc_strict": sum(solved(strict, s) for s in seen) / len(seen),  # memorised?
        "greedy_decode_seconds": round(greedy_seconds, 1),
        "greedy_examples": ["\n".join(s.steps) for s in greedy[:3]],
    })
    print(json.dumps(results, indent=1))
    (out / "probe.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TSLLM_PROGRESS", "0")
    main()
