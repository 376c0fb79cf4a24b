"""Training throughput benchmark: non-padding tokens/s of value and policy training on the tiny
model, one process against two (torchrun, gloo on CPU), measured in one run.

    python scripts/bench_train.py [--epochs 2] [--out bench_train.json]

Not a test. Each run is the real recipe (recipes/train_value.py, recipes/train_policy.py) as a
subprocess with OMP_NUM_THREADS=1 per process, on the same data: Game24 solver/losing traces for
the value model, warm-start traces for the policy. Throughput is the trainer's own count of
non-padding tokens over its training seconds; the table ends with the 2-process/1-process ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_recipe(recipe: str, config: str, processes: int, overrides: list[str], metrics_file: Path) -> dict:
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TSLLM_PROGRESS": "0", "WANDB_MODE": "disabled"}
    cmd = [*launcher, str(ROOT / "recipes" / recipe), "--config", str(ROOT / config), *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(metrics_file.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=2, help="epochs per run (value and policy)")
    parser.add_argument("--puzzles", type=int, default=300, help="Game24 puzzles in the training data")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from tsllm.tasks.warmstart import WarmStartConfig, game24_rows, write_jsonl

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        policy_data = write_jsonl(game24_rows(WarmStartConfig(game24_puzzles=args.puzzles)), tmp / "warm.jsonl")
        for processes in (1, 2):
            out = tmp / f"value{processes}"
            m = run_recipe("train_value.py", "configs/value/tiny.yaml", processes,
                           ["--demo-data", str(args.puzzles), f"data_files=[{tmp / 'value.jsonl'}]",
                            f"output_dir={out}", f"num_train_epochs={args.epochs}", "save_steps=0",
                            "resume=false"], out / "metrics.json")
            results.append({"model": "value", "processes": processes, "tokens": m["train_tokens"],
                            "seconds": m["train_seconds"], "tokens_per_second": m["tokens_per_second"]})
            out = tmp / f"policy{processes}"
            m = run_recipe("train_policy.py", "configs/policy/tiny_oracle.yaml", processes,
                           [f"data_files=[{policy_data}]", f"output_dir={out}", f"num_train_epochs={args.epochs}",
                            "max_seconds=null", "eval_fraction=0.0"], out / "metrics.json")
            results.append({"model": "policy", "processes": processes, "tokens": m["train_tokens"],
                            "seconds": m["train_seconds"], "tokens_per_second": m["tokens_per_second"]})
            print(f"done: {processes} process(es)", file=sys.stderr, flush=True)

    print(f"\n{'model':<8}{'procs':>6}{'tokens':>10}{'seconds':>9}{'tokens/s':>10}")
    for r in results:
        print(f"{r['model']:<8}{r['processes']:>6}{r['tokens']:>10}{r['seconds']:>9.1f}{r['tokens_per_second']:>10.0f}")
    for model in ("value", "policy"):
        one, two = (next(r for r in results if r["model"] == model and r["processes"] == p) for p in (1, 2))
        print(f"{model}: 2 processes / 1 process = {two['tokens_per_second'] / one['tokens_per_second']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
