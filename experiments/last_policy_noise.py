"""How much of a loop's spread over seeds is the last policy stage's own training noise?

    python experiments/last_policy_noise.py --run runs/reach-seeds/seed_0/paths --train-seeds 1,2,3 --out-dir OUT

Retrains the run's last policy stage (round k = rounds - 1: the same start model, the same
policy_data.jsonl, the same trainer settings) with other training seeds, and evaluates each model
greedily on the run's held-out split (`tsllm eval --run RUN --round rounds --policy MODEL
--methods greedy`). Nothing else changes, so the spread of these greedy accuracies is what the
policy trainer's seed alone (batch order, dropout) does to the loop's final number. It prints the
run's own final greedy beside them and writes OUT/last_policy_noise.json; a rerun reuses the
models already evaluated in OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from tsllm import tasks
from tsllm.cli import main as tsllm_main
from tsllm.config import from_dict
from tsllm.loop import Loop
from tsllm.loop_config import LoopConfig, trainer_settings
from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy


def retrain(loop: Loop, seed: int, out: Path) -> None:
    """The last policy stage of `loop`'s run again, with training seed `seed`, into `out`."""
    config, k = loop.config, loop.config.rounds - 1
    start = loop.out / (f"round_{k - 1}/policy" if k > 0 else "warmstart")  # the model that stage started from
    settings = {**trainer_settings(config.policy), "seed": seed, "min_reward": None}  # as Loop.train_policy
    train_policy(PolicyTrainConfig(base_model=loop.model_path(json.loads((start / "done.json").read_text())["policy"]),
                                   data_files=[str(loop.out / f"round_{k}" / "policy" / "policy_data.jsonl")],
                                   task=config.task, output_dir=str(out), template=loop.template, **settings),
                 formats=tasks)


def greedy_accuracy(run: Path, rounds: int, policy: Path | None, out: Path) -> float:
    """Held-out greedy of `policy` (None: the run's own final policy), kept in `out`: a rerun reads it."""
    if out.is_file():
        return json.loads(out.read_text())["methods"]["greedy"]["accuracy"]
    flags = ["--policy", str(policy)] if policy else []
    code = tsllm_main(["eval", "--run", str(run), "--round", str(rounds), *flags, "--methods", "greedy",
                       "--out", str(out)])
    if code != 0:
        raise SystemExit(f"tsllm eval failed ({code})")
    return json.loads(out.read_text())["methods"]["greedy"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--train-seeds", default="1,2,3")
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args()
    config = from_dict(LoopConfig, json.loads((args.run / "config.json").read_text()))
    loop = Loop(dataclasses.replace(config, output_dir=str(args.run)), progress=False)  # the run's prompts and paths
    seeds = [int(s) for s in args.train_seeds.split(",")]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    own = greedy_accuracy(args.run, config.rounds, None, args.out_dir / "own.json")
    greedy = {}
    for seed in seeds:
        model, evaluated = args.out_dir / f"seed_{seed}", args.out_dir / f"seed_{seed}.json"
        if not evaluated.is_file():
            retrain(loop, seed, model)
        greedy[seed] = greedy_accuracy(args.run, config.rounds, model / "model", evaluated)
        print(f"training seed {seed}: final greedy {greedy[seed]:.1%}", flush=True)
    # the run's own seed retrained is a check that training reproduces, not one more sample
    values = list({**greedy, config.seed: own}.values())
    result = {"run": str(args.run), "run_seed": config.seed, "own_final_greedy": own, "retrained": greedy,
              "reproduced": greedy[config.seed] == own if config.seed in greedy else None,
              "seeds": len(values), "mean": statistics.mean(values),
              "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    (args.out_dir / "last_policy_noise.json").write_text(json.dumps(result, indent=1))
    print(f"{args.run}: own {own:.1%}; retrained {', '.join(f'{g:.1%}' for g in greedy.values())}; "
          f"{len(values)} training seeds {result['mean']:.1%} ± {result['std']:.1%}")


if __name__ == "__main__":
    main()
