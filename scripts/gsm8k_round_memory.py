"""Peak memory of one GSM8k loop round on the Qwen2.5 stand-in (a random-weight Qwen2 with a
byte-level BPE tokenizer and ChatML, tsllm.models.tiny.build_stand_in), chat format on:

    python scripts/gsm8k_round_memory.py [--backend hf|vllm] [--train 16] [--test 8] [--workdir DIR] [key=value ...]

It writes the stand-in and GSM8k rows in the dataset's layout (question, answer "...#### N": the
4 rows of tests/envs/fixtures/gsm8k_sample.jsonl, then seeded synthetic ones, as
scripts/stand_in.py writes; the BPE tokenizer is trained on them), `--train` rows for training
and `--test` others held out, then runs the round as a user would, in a child process:

    tsllm run task=gsm8k base_model=STAND_IN train_data=TRAIN test_data=TEST rounds=1
              train_questions=16 test_questions=8 prompt_format=chat backend=BACKEND [key=value ...]

and prints its wall time and peak memory: the peak of the summed resident memory of the child and
every process it starts (vLLM's engine runs in others), sampled every 0.2 s, and the largest single
process's peak (getrusage over the children, exact but per process). Why: an untrained subword
model ends greedy at once, and the baseline's sample count used to follow from that (13 GB held
in the eval stage); the round's memory must stay bounded whatever the model does.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROWS = REPO / "tests" / "envs" / "fixtures" / "gsm8k_sample.jsonl"
sys.path.insert(0, str(REPO / "scripts"))
from stand_in import gsm8k_rows  # noqa: E402


def rows(n: int) -> list[dict[str, str]]:
    """`n` GSM8k rows: the shipped sample rows first, then synthetic ones."""
    shipped = [json.loads(line) for line in SAMPLE_ROWS.read_text().splitlines() if line.strip()]
    return (shipped + gsm8k_rows(max(0, n - len(shipped)), seed=1))[:n]


def write_inputs(workdir: Path, train: int, test: int) -> dict[str, Path]:
    from tsllm.models.tiny import build_stand_in, save_model

    data = rows(train + test)
    paths = {"train_data": workdir / "train.jsonl", "test_data": workdir / "test.jsonl",
             "base_model": workdir / "policy"}
    paths["train_data"].write_text("".join(json.dumps(r) + "\n" for r in data[:train]))
    paths["test_data"].write_text("".join(json.dumps(r) + "\n" for r in data[train:]))
    save_model(*build_stand_in("qwen2.5", [f"{r['question']}\n{r['answer']}" for r in data]), paths["base_model"])
    return paths


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of `process` and all its descendants (those alive at this instant)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between the listing and the reading
            pass
    return total


def run_measured(argv: list[str]) -> dict[str, float]:
    """Run `argv`; its exit code, wall seconds and peak memory (see the module docstring)."""
    peak = [0]
    start = time.perf_counter()
    child = subprocess.Popen(argv)
    watched = psutil.Process(child.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            try:
                peak[0] = max(peak[0], tree_rss(watched))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    done.set()
    sampler.join()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"exit_code": code, "wall_seconds": time.perf_counter() - start,
            "peak_tree_rss_gib": peak[0] / 2**30, "peak_process_rss_gib": largest / 2**30}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--train", type=int, default=16, help="training questions")
    parser.add_argument("--test", type=int, default=8, help="held-out questions")
    parser.add_argument("--workdir", help="keep the stand-in, rows and run here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more `tsllm run` overrides")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gsm8k_round_"))
    workdir.mkdir(parents=True, exist_ok=True)
    paths = write_inputs(workdir, args.train, args.test)
    overrides = [*(f"{k}={v}" for k, v in paths.items()), "task=gsm8k", "rounds=1",
                 f"train_questions={args.train}", f"test_questions={args.test}", "prompt_format=chat",
                 f"backend={args.backend}", "tracking.report_to=none", *args.overrides]
    argv = [sys.executable, "-m", "tsllm.cli", "run", "--output-dir", str(workdir / "run"), "--overwrite",
            "--no-progress", *overrides]
    print("tsllm run " + " ".join(overrides[3:]), flush=True)
    result = run_measured(argv)
    print(f"exit {result['exit_code']}, {result['wall_seconds']:.0f} s; peak RSS: all processes "
          f"{result['peak_tree_rss_gib']:.2f} GiB, largest process {result['peak_process_rss_gib']:.2f} GiB")
    (workdir / "memory.json").write_text(json.dumps({**result, "overrides": overrides[3:]}, indent=1) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
