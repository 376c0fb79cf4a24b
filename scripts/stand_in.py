"""Model folders for a check run where no real model is at hand, or no value model for one.

    python scripts/stand_in.py --family qwen2.5 --out DIR          # DIR/policy, DIR/value, DIR/gsm8k.jsonl
    python scripts/stand_in.py --value-for MODEL_DIR --out DIR     # DIR/value: a fresh head on MODEL_DIR

The first writes a random-weight stand-in of an instruct family (tsllm.models.tiny.build_stand_in:
the family's architecture and tokenizer layout), a value model on it, and seeded synthetic GSM8k
rows in the dataset's layout (question, answer "...#### N"), which the BPE tokenizer is trained on.
The second puts a seeded value head on a real causal LM, so that `tsllm eval` can run a
value-guided search with it before any value training. scripts/gpu_check.sh uses both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tsllm.envs.gsm8k import synthetic
from tsllm.models.tiny import STAND_IN_FAMILIES, build_stand_in, save_model
from tsllm.models.value import build_value_model, save_value_model


def gsm8k_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Synthetic problems as GSM8k's own rows: the solution's lines, then "#### answer"."""
    return [{"question": p["question"], "answer": p["solution"]} for p in synthetic(n, seed=seed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--family", choices=sorted(STAND_IN_FAMILIES), help="write a stand-in of this family")
    what.add_argument("--value-for", metavar="MODEL_DIR", help="write a value model on this causal LM")
    parser.add_argument("--out", required=True, help="folder to write into")
    parser.add_argument("--rows", type=int, default=64, help="synthetic GSM8k rows written (--family)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.value_for:
        save_value_model(*build_value_model(backbone=args.value_for), out / "value")
        return
    rows = gsm8k_rows(args.rows)
    (out / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_model(*build_stand_in(args.family, [f"{r['question']}\n{r['answer']}" for r in rows]), out / "policy")
    save_value_model(*build_value_model(backbone=out / "policy"), out / "value")


if __name__ == "__main__":
    main()
