"""The iteration loop: sample -> train value -> evaluate -> search -> train policy, round after round.

    python recipes/iterate.py --config configs/reach/tiny.yaml [--output-dir DIR] [key=value ...]
    torchrun --nproc_per_node 2 recipes/iterate.py --config configs/reach/tiny.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/iterate.py --config configs/reach/tiny.yaml
    torchrun --nproc_per_node 8 recipes/iterate.py --config configs/gsm8k/llama2_7b.yaml   (GPUs)

The same as `tsllm run ...` (tsllm/cli.py holds the code): parse the config, refuse an output dir
that holds a different run unless --resume/--overwrite, track to W&B (offline without a login)
and <output_dir>/rounds.jsonl, run tsllm.loop, write the plots and print a summary. A killed run
resumes where it stopped when started again with the same command. Under a launcher, every process
runs this script: problems are sharded by rank for sampling, search and evaluation, training runs
on all ranks, and rank 0 alone merges, tracks and prints (tsllm/loop.py).
"""

import sys

from tsllm.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
