"""Warm-start demonstrations for the embedded default: Game24 solver traces and PrOntoQA gold
proofs, mixed with a seeded share of imperfect ones, written as trajectories jsonl.

    python -m tsllm.tasks.warmstart --out out/warmstart.jsonl [imperfect_fraction=0.2 prontoqa_problems=0]
    python -m tsllm.tasks.warmstart --out out/warmstart.jsonl --task prontoqa --seed 0   # what the loop uses

Why imperfect traces: a policy fine-tuned only on perfect solver traces of every training puzzle
would leave search and iteration little to find; the point of round 0 is a policy that is good but
wrong often enough that value-guided search can beat it. Each chosen problem's trace is *replaced*
by one flawed variant, so the imperfect share of rows equals `imperfect_fraction` exactly:

- Game24 `slip`: one step states a wrong result (off by 1 or 2); later steps redo the same
  operations on the slipped number, and the answer line keeps the right expression.
- Game24 `wrong_answer`: every step is right but one operator of the final expression is changed.
- Game24 `wrong_branch`: the first step leads to numbers that cannot make 24; the trace goes on
  with valid arithmetic and ends claiming an expression that is not 24.
- PrOntoQA `skipped_step`: one derived fact is left out, so the next one does not follow.
- PrOntoQA `wrong_answer`: the proof is right, the final true/false is flipped.
- PrOntoQA `wrong_branch`: the last rule applied is the tempting distractor (the queried concept
  with the opposite polarity), so the proof concludes the wrong answer.

Rewards come from the envs' strict checkers (`Game24Env(strict=True)`, `ProntoQAEnv(strict=True)`):
every perfect row is +1, every imperfect one -1 (asserted). Set the policy trainer's
`min_reward: null` to train on both. Game24 uses only the TRAIN side of `game24.split`; PrOntoQA
has no fixed split, so its problems come from `prontoqa_seed`: evaluate on another seed.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tsllm.atomic import write_jsonl  # temporary sibling, then rename
from tsllm.config import bad, load_config
from tsllm.envs import game24, prontoqa
from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, apply_op, can_reach_24, format_number
from tsllm.envs.prontoqa import ProntoQAEnv
from tsllm.tasks import TaskSettings, get_task, names

SOURCE = "warmstart"


@dataclass
class WarmStartConfig:
    game24_puzzles: int | None = None  # train-split puzzles to use (None: all 1262 of them)
    game24_split_seed: int = 0  # game24.split(seed, test_size): must match the evaluation's split
    game24_test_size: int = 100
    prontoqa_problems: int = 1000
    prontoqa_seed: int = 1  # evaluation sets should be generated from a different seed
    prontoqa_max_depth: int = 5
    imperfect_fraction: float = 0.2  # share of rows replaced by one flawed variant each
    # > 1: up to this many different valid Game24 traces per puzzle (the solver's, then others that
    # open with a different first step), so a small policy sees several routes, not one per puzzle
    game24_traces_per_puzzle: int = 1
    seed: int = 0  # which rows are flawed, and how

    def validate(self) -> None:
        if not 0 <= self.imperfect_fraction <= 1:
            raise bad("imperfect_fraction", f"must be in [0, 1], got {self.imperfect_fraction}")
        if self.game24_puzzles is not None and self.game24_puzzles < 0:
            raise bad("game24_puzzles", f"must be >= 0 or null (all), got {self.game24_puzzles}")
        if self.game24_traces_per_puzzle < 1:
            raise bad("game24_traces_per_puzzle", f"must be >= 1, got {self.game24_traces_per_puzzle}")
        if self.prontoqa_problems < 0:
            raise bad("prontoqa_problems", f"must be >= 0, got {self.prontoqa_problems}")
        if not 1 <= self.prontoqa_max_depth <= 5:
            raise bad("prontoqa_max_depth", f"must be in 1..5, got {self.prontoqa_max_depth}")

    def __post_init__(self) -> None:
        self.validate()


# ---------------------------------------------------------------------------------- Game24


def _step_line(a: Fraction, op: str, b: Fraction, result: Fraction, left: Sequence[Fraction]) -> str:
    """A step in the solver's format: `a op b = c (left: ascending numbers)`."""
    left_text = " ".join(format_number(x) for x in sorted(left))
    return f"{format_number(a)} {op} {format_number(b)} = {format_number(result)} (left: {left_text})"


def _parse_step(line: str) -> tuple[Fraction, str, Fraction, Fraction]:
    a, op, b, _, c = line.split(" ")[:5]  # solver lines only: "a op b = c (left: ...)"
    return Fraction(a), op, Fraction(b), Fraction(c)




def game24_slip(numbers: Sequence[int], trace: list[str], rng: random.Random) -> list[str] | None:
    """One step's stated result is off by 1 or 2; later steps redo their operations on it."""
    steps = trace[:-1]
    at = rng.randrange(len(steps))
    for delta in rng.sample([-2, -1, 1, 2], 4):
        pool = [(Fraction(n), Fraction(n)) for n in numbers]  # (value in the solver trace, value here)
        lines = []
        try:
            for index, line in enumerate(steps):
                a, op, b, c = _parse_step(line)
                operands = []
                for wanted in (a, b):
                    k = next(k for k, (gold, _) in enumerate(pool) if gold == wanted)
                    operands.append(pool.pop(k)[1])
                result = apply_op(operands[0], op, operands[1]) + (delta if index == at else 0)
                pool.append((c, result))
                lines.append(_step_line(operands[0], op, operands[1], result, [v for _, v in pool]))
        except ZeroDivisionError:
            continue
        return lines + [trace[-1]]
    return None


def game24_wrong_answer(numbers: Sequence[int], trace: list[str], rng: random.Random) -> list[str] | None:
    """The steps stay right; one operator of the final expression changes so it is not 24."""
    expr = game24.extract_expression(trace[-1])
    positions = [i for i, ch in enumerate(expr) if ch in "+-*/"]
    for i in rng.sample(positions, len(positions)):
        for op in rng.sample([o for o in "+-*/" if o != expr[i]], 3):
            wrong = expr[:i] + op + expr[i + 1:]
            if game24.evaluate_expression(numbers, wrong) != game24.TARGET:
                return trace[:-1] + [f"Answer: {wrong} = {game24.TARGET}"]
    return None


def _moves(x: tuple[Fraction, str], y: tuple[Fraction, str]) -> list[tuple[Fraction, str, Fraction, str, Fraction]]:
    """Steps a weak solver might write for a pair: (a, op, b, expression, result) with a
    non-negative integer result, larger operand first as in the solver's traces."""
    (a, ta), (b, tb) = sorted((x, y), key=lambda item: item[0], reverse=True)
    def wrap(t):
        return t if t.isdigit() else f"({t})"
    out = []
    for op in "+*-/":
        if op == "/" and b == 0:
            continue
        r = apply_op(a, op, b)
        if r >= 0 and r.denominator == 1:
            out.append((a, op, b, f"{wrap(ta)}{op}{wrap(tb)}", r))
    return out


def game24_wrong_branch(numbers: Sequence[int], trace: list[str], rng: random.Random) -> list[str] | None:
    """A first step after which 24 is out of reach, then valid steps, then a false answer."""
    items = [(Fraction(n), str(n)) for n in numbers]
    dead_ends = []
    for i, j in itertools.combinations(range(4), 2):
        rest = [items[k] for k in range(4) if k not in (i, j)]
        for move in _moves(items[i], items[j]):
            if not can_reach_24([v for v, _ in rest] + [move[4]]):
                dead_ends.append((rest, move))
    if not dead_ends:
        return None
    rest, move = rng.choice(dead_ends)
    lines = []
    while True:
        a, op, b, text, r = move
        items = rest + [(r, text)]
        lines.append(_step_line(a, op, b, r, [v for v, _ in items]))
        if len(items) == 1:
            break
        pairs = list(itertools.combinations(range(len(items)), 2))
        options = [(i, j, m) for i, j in pairs for m in _moves(items[i], items[j])]
        if not options:
            return None
        i, j, move = rng.choice(options)
        rest = [items[k] for k in range(len(items)) if k not in (i, j)]
    return lines + [f"Answer: {items[0][1]} = {game24.TARGET}"]


def game24_traces(numbers: Sequence[int], limit: int, rng: random.Random) -> list[list[str]]:
    """The solver's trace, then up to `limit - 1` other valid traces, each opening with a different
    first step (chosen by `rng`) and finished by the solver, in the solver's own line format."""
    solver_trace = game24.solve(numbers)
    assert solver_trace is not None, f"warm-start bug: unsolvable training puzzle {numbers}"
    if limit == 1:
        return [solver_trace]
    G = game24  # the solver's own helpers keep the lines exactly in its format and tie order
    items = sorted((G._Item(Fraction(n), str(int(n)), 3) for n in numbers), key=lambda it: it.value)
    allow = next(a for a in G._ALLOW if G._reaches(tuple(it.value for it in items), a))
    others: dict[str, list[str]] = {}
    for i, j in itertools.combinations(range(4), 2):
        rest = items[:i] + items[i + 1:j] + items[j + 1:]
        for swap, op in G._moves(items[i].value, items[j].value):
            first, second = (items[j], items[i]) if swap else (items[i], items[j])
            r = G.apply_op(first.value, op, second.value)
            if not G._allowed(r, allow) or not G._reaches(tuple(sorted([it.value for it in rest] + [r])), allow):
                continue
            left = sorted(rest + [G._join(first, op, second, r)], key=lambda it: it.value)
            lines = [_step_line(first.value, op, second.value, r, [it.value for it in left])]
            while len(left) > 1:
                left, line = G._one_step(left, allow)
                lines.append(line)
            lines.append(f"Answer: {left[0].text} = {game24.TARGET}")
            if lines[0] != solver_trace[0]:
                others.setdefault(lines[0], lines)  # equal numbers give the same first step twice
    picked = rng.sample(list(others.values()), min(limit - 1, len(others)))
    return [solver_trace] + picked


GAME24_FLAWS: dict[str, Callable[..., list[str] | None]] = {
    "slip": game24_slip, "wrong_answer": game24_wrong_answer, "wrong_branch": game24_wrong_branch,
}


# ---------------------------------------------------------------------------------- PrOntoQA


def _flip(answer_line: str) -> str:
    return "The answer is false." if "true" in answer_line.lower() else "The answer is true."


def prontoqa_wrong_answer(problem: dict[str, Any], proof: list[str], rng: random.Random) -> list[str] | None:
    return proof[:-1] + [_flip(proof[-1])]


def prontoqa_skipped_step(problem: dict[str, Any], proof: list[str], rng: random.Random) -> list[str] | None:
    """Leave out one derived fact (positions 2, 4, ...: after each rule), so what follows it, or
    the answer, no longer rests on established facts."""
    derived = list(range(2, len(proof) - 1, 2))
    drop = rng.choice(derived)
    return proof[:drop] + proof[drop + 1:]


def prontoqa_wrong_branch(problem: dict[str, Any], proof: list[str], rng: random.Random) -> list[str] | None:
    """Apply the distractor rule about the queried concept (opposite polarity) as the last rule."""
    last_rule = prontoqa.parse_sentence(proof[-3])
    fact = prontoqa.parse_sentence(proof[-2])
    context, _ = prontoqa.split_question(problem["question"])
    traps = [r for r in map(prontoqa.parse_sentence, context) if isinstance(r, prontoqa.Rule)
             and r.concept == last_rule.concept and r.positive != last_rule.positive]
    if not traps:
        return None
    trap = rng.choice(traps)
    wrong_fact = prontoqa.Fact(fact.entity, trap.concept, trap.positive)
    return proof[:-3] + [prontoqa.rule_text(trap), prontoqa.fact_text(wrong_fact), _flip(proof[-1])]


PRONTOQA_FLAWS: dict[str, Callable[..., list[str] | None]] = {
    "skipped_step": prontoqa_skipped_step, "wrong_answer": prontoqa_wrong_answer,
    "wrong_branch": prontoqa_wrong_branch,
}


# ---------------------------------------------------------------------------------- assembly


def _with_flaws(demos: list[tuple[Any, list[str]]], flaws: dict[str, Callable], fraction: float,
                rng: random.Random) -> list[tuple[Any, list[str], bool]]:
    """(problem, steps, flawed) for each demo; round(fraction * n) of them, chosen by `rng`, get one
    flaw (a kind that cannot apply to a problem falls through to the next kind)."""
    flawed = set(rng.sample(range(len(demos)), round(fraction * len(demos))))
    out = []
    for index, (problem, steps) in enumerate(demos):
        if index in flawed:
            kinds = rng.sample(list(flaws), len(flaws))
            variant = next(v for k in kinds if (v := flaws[k](problem, steps, rng)) is not None)
            out.append((problem, variant, True))
        else:
            out.append((problem, steps, False))
    return out


def _row(env: Any, task: str, problem: Any, steps: list[str], flawed: bool) -> dict[str, Any]:
    state = env.initial_state(problem)
    reward = env.reward(TextState(state.question, tuple(steps), state.gold))
    assert reward == (-1.0 if flawed else 1.0), f"warm-start bug: {task} {state.question!r} {steps} -> {reward}"
    gold = list(state.gold) if isinstance(state.gold, tuple) else state.gold
    return {"question": state.question, "gold": gold, "steps": steps, "reward": reward,
            "task": task, "source": SOURCE}


def game24_rows(config: WarmStartConfig) -> list[dict[str, Any]]:
    train, _ = game24.split(config.game24_split_seed, config.game24_test_size)
    if config.game24_puzzles is not None:
        train = train[: config.game24_puzzles]
    rng = random.Random(f"game24-{config.seed}")
    if config.game24_traces_per_puzzle == 1:  # the solver's trace only (and the rng stays untouched)
        demos = [(p["numbers"], p["solution"].split("\n")) for p in train]
    else:
        traces_rng = random.Random(f"game24-traces-{config.seed}")
        demos = [(p["numbers"], trace) for p in train
                 for trace in game24_traces(p["numbers"], config.game24_traces_per_puzzle, traces_rng)]
    env = Game24Env(strict=True)  # strict: a slipped step makes the row wrong even if the answer checks
    return [_row(env, "game24", {"numbers": numbers}, steps, flawed)
            for numbers, steps, flawed in _with_flaws(demos, GAME24_FLAWS, config.imperfect_fraction, rng)]


def prontoqa_rows(config: WarmStartConfig) -> list[dict[str, Any]]:
    problems = prontoqa.generate(config.prontoqa_problems, seed=config.prontoqa_seed,
                                 max_depth=config.prontoqa_max_depth)
    demos = [(p, p["solution"].split("\n")) for p in problems]
    rng = random.Random(f"prontoqa-{config.seed}")
    env = ProntoQAEnv(strict=True)
    return [_row(env, "prontoqa", problem, steps, flawed)
            for problem, steps, flawed in _with_flaws(demos, PRONTOQA_FLAWS, config.imperfect_fraction, rng)]


def gsm8k_rows(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GSM8k problems' own solutions (calculator notes removed) as +1 trajectories, for a warm
    start from scratch (the tiny model; real runs start from an SFT checkpoint instead). A
    solution the checker does not accept is left out rather than taught."""
    from tsllm.envs.gsm8k import GSM8kEnv, solution_steps

    env = GSM8kEnv()
    rows = []
    for problem in problems:
        state = env.initial_state(problem)
        steps = solution_steps(problem["solution"])
        if env.reward(TextState(state.question, tuple(steps), state.gold)) > 0:
            rows.append({"question": state.question, "gold": state.gold, "steps": steps, "reward": 1.0,
                         "task": "gsm8k", "source": SOURCE})
    return rows


def build_warmstart(config: WarmStartConfig) -> list[dict[str, Any]]:
    """Game24 rows, then PrOntoQA rows (trajectories format, source "warmstart")."""
    return game24_rows(config) + prontoqa_rows(config)


# --------------------------------------------------------------------------------- demo value data


def game24_contrast_trajectories(num_puzzles: int, seed: int = 0) -> list[dict[str, Any]]:
    """Demo/test value data without a policy: per puzzle, the solver's trace (reward +1) and a
    losing trace (reward -1) whose first step is valid but leaves an unsolvable position, followed
    by random valid steps and a wrong answer line. Steps in both combine two numbers into a
    non-negative integer where possible, as the solver's do, so the value model has to judge the
    numbers left, not the look of the step."""
    from tsllm.envs.game24 import all_puzzles, solve

    rng = random.Random(seed)
    puzzles = list(all_puzzles())
    rng.shuffle(puzzles)
    rows = []
    for numbers in puzzles:
        if len(rows) >= 2 * num_puzzles:
            break
        losing = _losing_trace(numbers, rng)
        if losing is None:  # every integer first step keeps 24 reachable
            continue
        question = " ".join(map(str, numbers))
        rows.append({"question": question, "steps": solve(numbers), "reward": 1.0, "task": "game24"})
        rows.append({"question": question, "steps": losing, "reward": -1.0, "task": "game24"})
    return rows


def _integer_moves(left: list) -> list[tuple[str, list]]:
    """(step line, numbers left) for every pair and op with a non-negative integer result."""
    from fractions import Fraction

    from tsllm.envs.game24 import format_number

    out = []
    for i, a in enumerate(left):
        for j, b in enumerate(left):
            if i == j:
                continue
            rest = [x for k, x in enumerate(left) if k not in (i, j)]
            results = [("+", a + b), ("*", a * b), ("-", a - b)] + ([("/", Fraction(a) / b)] if b else [])
            for op, r in results:
                if r >= 0 and Fraction(r).denominator == 1:
                    new = sorted(rest + [Fraction(r)])
                    line = (f"{format_number(Fraction(a))} {op} {format_number(Fraction(b))} = "
                            f"{format_number(Fraction(r))} (left: {' '.join(format_number(x) for x in new)})")
                    out.append((line, new))
    return out


def _losing_trace(numbers: Sequence[int], rng: random.Random) -> list[str] | None:
    from fractions import Fraction

    from tsllm.envs.game24 import is_solvable

    left = [Fraction(n) for n in numbers]
    first = [(line, new) for line, new in _integer_moves(left) if not is_solvable(new)]
    if not first:
        return None
    line, left = rng.choice(sorted(first))
    steps = [line]
    while len(left) > 1:
        options = _integer_moves(left)
        if not options:
            break
        line, left = rng.choice(sorted(options))
        steps.append(line)
    return steps + ["Answer: no solution"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write warm-start trajectories jsonl.")
    parser.add_argument("--out", required=True, help="jsonl file to write")
    parser.add_argument("--config", help="YAML file of WarmStartConfig keys")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. prontoqa_problems=0")
    parser.add_argument("--task", choices=names(), help="write exactly the rows the loop's warm start uses for "
                                                        "this task (with --seed) instead of the config's mix")
    parser.add_argument("--seed", type=int, default=0, help="the loop's seed (with --task)")
    args = parser.parse_args(argv)
    if args.task:
        if args.config or args.overrides:
            parser.error("--task writes the task's own rows; drop --config and the key=value overrides")
        rows = get_task(args.task)(TaskSettings(seed=args.seed)).warmstart_rows()
    else:
        rows = build_warmstart(load_config(WarmStartConfig, args.config, args.overrides))
    write_jsonl(rows, args.out)
    flawed = sum(row["reward"] < 0 for row in rows)
    print(f"wrote {len(rows)} trajectories ({flawed} imperfect) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
