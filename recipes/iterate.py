"""The iteration loop: sample -> train value -> evaluate -> search -> train policy, round after round.

    python recipes/iterate.py --config configs/game24/tiny.yaml [--output-dir DIR] [key=value ...]

The same as `tsllm run ...` (tsllm/cli.py holds the code): parse the config, refuse an output dir
that holds a different run unless --resume/--overwrite, track to W&B (offline without a login)
and <output_dir>/rounds.jsonl, run tsllm.loop, write the plots and print a summary. A killed run
resumes where it stopped when started again with the same command.
"""

import sys

from tsllm.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
