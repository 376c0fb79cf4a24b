"""Train the value/ORM model (MSE to prefix returns) on trajectories jsonl with transformers.Trainer.

Launch (any of):
    python recipes/train_value.py --config configs/value/tiny.yaml [key=value ...]
    torchrun --nproc_per_node 2 recipes/train_value.py --config configs/value/tiny.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/train_value.py --config configs/value/tiny.yaml
    torchrun --nproc_per_node 2 recipes/train_value.py --config configs/value/tiny.yaml \
        deepspeed=configs/deepspeed/zero2.json          # DeepSpeed ZeRO-2 (zero3.json on GPUs)

Gradient accumulation and batch sizes are set in the config only; the DeepSpeed json leaves them
"auto". `--demo-data N` first writes N Game24 puzzles' solver traces (+1) and losing traces (-1)
to the first of data_files when it does not exist, so the tiny config runs with no other stage.
A rerun with the same output_dir resumes from its newest checkpoint. Prints one JSON line of
metrics (rank 0); they are also saved in <output_dir>/metrics.json, the model in <output_dir>/model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from tsllm import distributed, tasks
from tsllm.atomic import write_jsonl
from tsllm.config import ConfigError, load_config, merge, parse_overrides
from tsllm.envs.base import DataError
from tsllm.tasks.warmstart import game24_contrast_trajectories
from tsllm.training.value_trainer import ValueTrainConfig, train_value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file of ValueTrainConfig keys")
    parser.add_argument("--demo-data", type=int, default=0, metavar="N",
                        help="write N Game24 puzzles of demo trajectories to the first of data_files if it is missing")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learning_rate=3e-4 tiny.num_layers=2")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        config = _load(args)
        tasks.check_prompt_format(config.task)
        metrics = train_value(config, formats=tasks)  # rows rendered in their tasks' formats
        distributed.finish()  # leave the process group before exit: a rank exiting inside it can abort
    except (ConfigError, DataError, FileNotFoundError) as err:  # bad input: say what, not a traceback
        print(f"train_value: {err}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps({k: v for k, v in metrics.items() if k != "train_loss_curve"}))
    return 0


def _load(args: argparse.Namespace) -> ValueTrainConfig:
    if args.demo_data:
        _write_demo_data(args.config, args.overrides, args.demo_data)
    return load_config(ValueTrainConfig, args.config, args.overrides)


def _write_demo_data(config_path: str | None, overrides: list[str], num_puzzles: int) -> None:
    """Fill the first of data_files with demo rows unless it exists. Every rank writes the same rows
    through a temporary file and a rename, so concurrent ranks cannot leave a partial file."""
    data = yaml.safe_load(Path(config_path).read_text()) if config_path else {}
    files = merge(data or {}, parse_overrides(overrides)).get("data_files") or []
    if not files:
        raise ConfigError("--demo-data needs data_files (the file to write) in the config or overrides")
    if not Path(files[0]).is_file():
        write_jsonl(game24_contrast_trajectories(num_puzzles, seed=0), files[0])


if __name__ == "__main__":
    sys.exit(main())
