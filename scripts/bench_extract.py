"""Milliseconds per call of every task's answer extractor and checker on hostile model text.

    python scripts/bench_extract.py                    # 100,000-character strings, best of 3
    python scripts/bench_extract.py --chars 1000000 --repeats 1 --out extract.json

Not a test: timings depend on the machine, so the suite asserts the cause instead (no regex in
tsllm/envs can backtrack through an unbounded repeat, tests/envs/test_linear_patterns.py). This
script shows the effect: each entry point gets every hostile string (runs of whitespace after
"answer is", repeated keywords, long digit and sign runs, deep parentheses, many lines, seeded
noise), and the table shows the worst string's time per call (the best of --repeats calls, so a
busy machine inflates it less). The target is under 50 ms at 100,000 characters.

RLHF has no text extractor: its answer is the tokenizer's decode of the generated ids and its
checker is the reward model, so it is listed without a time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from tsllm.envs import game24, gsm8k, prontoqa
from tsllm.envs.base import TextState

TARGET_MS = 50.0
QUESTION = "Every wumpus is a tumpus. Alex is a wumpus. True or false: Alex is a tumpus."


def hostile_strings(n: int, seed: int = 0) -> dict[str, str]:
    """Strings of about `n` characters aimed at the patterns' weak spots (name -> text)."""

    def fill(unit: str) -> str:
        return (unit * (n // len(unit) + 1))[:n]

    half = n // 2
    rng = random.Random(seed)
    noise = "".join(rng.choice(["answer", " is", " ", ":", "#", "$", "-", "1", ",", ".", "\n", "x", "(", "24"])
                    for _ in range(n // 2))[:n]
    return {
        "answer is + spaces + x": "The answer is" + " " * n + "x",
        "answer is + spaces + colon + spaces": "answer is" + " " * half + ":" + " " * half + "x",
        "answer is + mixed whitespace": "answer is" + fill(" \t\r\f\v") + "x",
        "answer + spaces (no is)": "answer" + " " * n + "x",
        "#### + spaces + x": "####" + " " * n + "x",
        "Answer + spaces (no colon)": "Answer" + " " * n + "x",
        "Answer: + spaces": "Answer:" + " " * n,
        "repeated 'answer is '": fill("answer is "),
        "repeated 'answer'": fill("answer"),
        "repeated '#'": fill("#"),
        "digits": fill("9"),
        "digit, comma": fill("1,"),
        "thousands groups": "1" + fill(",234"),
        "decimal chain": fill("1."),
        "signs": fill("-"),
        "sign, dollar": fill("-$"),
        "open parentheses": "Answer: " + fill("("),
        "calculator brackets": fill("<<"),
        "newlines": fill("\n"),
        "lines of 'Answer:'": fill("Answer:\n"),
        "sentence ends": fill(". "),
        "long rule-like sentence": "Every " + fill("wumpus ") + "is a tumpus.",
        "seeded noise": noise,
    }


def entry_points() -> dict[str, Callable[[str], object]]:
    """task.function -> a call on one text (env methods get the text as their whole output)."""
    gsm8k_env = gsm8k.GSM8kEnv(max_steps=1)  # one step is terminal, so reward always checks
    pronto_strict = prontoqa.ProntoQAEnv(strict=True)
    game_env, game_strict = game24.Game24Env(), game24.Game24Env(strict=True)
    game_state = TextState("4 6 1 1", (), (4, 6, 1, 1))
    return {
        "gsm8k.extract_answer": gsm8k.extract_answer,
        "gsm8k.GSM8kEnv.reward": lambda t: gsm8k_env.reward(TextState("q", (t,), Fraction(42))),
        "gsm8k.GSM8kEnv.is_final_step": gsm8k_env.is_final_step,
        "gsm8k.answers_equal": lambda t: gsm8k.answers_equal(t, "42"),
        "prontoqa.extract_answer": prontoqa.extract_answer,
        "prontoqa.check_proof": lambda t: prontoqa.check_proof(QUESTION, t.split("\n"), True),
        "prontoqa.ProntoQAEnv.check (strict)": lambda t: pronto_strict.check(
            {"question": QUESTION, "query": "", "answer": "True"}, t),
        "prontoqa.entailed": lambda t: prontoqa.entailed([t, "Alex is a wumpus."], t),
        "game24.extract_expression": game24.extract_expression,
        "game24.check_answer": lambda t: game24.check_answer([4, 6, 1, 1], t),
        "game24.Game24Env.check": lambda t: game_env.check({"numbers": [4, 6, 1, 1]}, t),
        "game24.Game24Env.check (strict)": lambda t: game_strict.check({"numbers": [4, 6, 1, 1]}, t),
        "game24.Game24Env.legal_step": lambda t: game_env.legal_step(game_state, t),
    }


def ms_per_call(fn: Callable[[str], object], text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=100_000, help="length of each hostile string")
    parser.add_argument("--repeats", type=int, default=3, help="calls per (entry point, string); the best counts")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    strings = hostile_strings(args.chars)
    results = []
    print(f"{len(strings)} hostile strings of {args.chars:,} characters, best of {args.repeats} calls")
    print(f"{'entry point':38s} {'max ms':>8s}  worst string")
    for name, fn in entry_points().items():
        times = {label: ms_per_call(fn, text, args.repeats) for label, text in strings.items()}
        worst = max(times, key=times.get)
        results.append({"entry_point": name, "max_ms": round(times[worst], 3), "worst": worst, "ms": times})
        print(f"{name:38s} {times[worst]:8.2f}  {worst}")
    print(f"{'rlhf (decode + reward model)':38s} {'-':>8s}  no text extractor to time")
    overall = max(r["max_ms"] for r in results)
    verdict = "under" if overall < TARGET_MS else "OVER"
    print(f"max {overall:.2f} ms per call: {verdict} the {TARGET_MS:.0f} ms target")
    if args.out:
        args.out.write_text(json.dumps({"chars": args.chars, "repeats": args.repeats, "results": results}, indent=1))


if __name__ == "__main__":
    main()
