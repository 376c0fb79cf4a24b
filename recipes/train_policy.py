"""Policy SFT (LoRA or full) on trajectories jsonl with TRL; saves a merged checkpoint or an adapter.

Launch (any of):
    python recipes/train_policy.py --config configs/policy/tiny_oracle.yaml [key=value ...]
    torchrun --nproc_per_node 2 recipes/train_policy.py --config configs/policy/tiny_oracle.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/train_policy.py --config configs/policy/tiny_oracle.yaml

On a machine without a GPU the two processes talk over gloo (`--multi_gpu` is only accelerate's
name for "several processes"; `--cpu --num_processes 2` would run one). Overrides use dots for
nested keys, e.g. `tiny.hidden_size=64 min_reward=null data_files=[a.jsonl,b.jsonl]`.
Prints one JSON line of metrics (rank 0), also saved as <output_dir>/metrics.json; the model goes
to <output_dir>/model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tsllm import distributed, tasks
from tsllm.config import ConfigError, load_config
from tsllm.envs.base import DataError
from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file of PolicyTrainConfig keys")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(PolicyTrainConfig, args.config, args.overrides)
        tasks.check_prompt_format(config.task)
        metrics = train_policy(config, formats=tasks)  # rows rendered in their tasks' formats
        distributed.finish()  # leave the process group before exit: a rank exiting inside it can abort
    except (ConfigError, DataError, FileNotFoundError) as err:  # bad input: say what, not a traceback
        print(f"train_policy: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {k: v for k, v in metrics.items() if k not in ("model", "tokenizer", "config")}
        print(json.dumps(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
