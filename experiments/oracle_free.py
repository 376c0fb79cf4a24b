"""Oracle-free warm-start data: the rules of a task played at random, never its solutions.

AlphaZero is given the rules and not the strategy. These generators write trajectories (the
jsonl rows of tsllm.training.data) that teach a fresh policy the format and the legal moves of a
task, so that whatever it later solves, the loop's search found:

- Game24 `game24_random_play`: from four numbers, random legal steps (two of the numbers left, an
  operation with an exact, non-negative result, the numbers then left listed correctly) and an
  answer line composing the expression, whatever value it ends on. A play that happens to end on
  24 is dropped: it would be a solution of a puzzle the loop learns from.
- PrOntoQA `prontoqa_random_chaining`: from the context's fact, random legal modus ponens (a rule of
  the context whose subject the entity is known to be, then the fact it gives), stopping at random,
  then "The answer is true/false." drawn at random, so the answer line carries no information
  about the question (a row that is right by chance teaches no more than one that is wrong).

`ProntoQARulesEnv` adds PrOntoQA's rules as `legal_step` (the legal-move mask searches apply): the
same move generator as the random play, so the warm start and the mask agree on what a move is.
Everything here is pure Python over the envs; the outcome (gold) is never consulted to make a move.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from tsllm.envs import game24, prontoqa
from tsllm.envs.base import TextState
from tsllm.envs.game24 import Game24Env, apply_op, format_number
from tsllm.envs.prontoqa import Fact, ProntoQAEnv, Rule

SOURCE = "oracle_free"
ANSWER_LINES = ("The answer is true.", "The answer is false.")


# ---------------------------------------------------------------------------------- Game24


def all_multisets(low: int = 1, high: int = 13) -> list[tuple[int, ...]]:
    """Every four-number multiset over low..high (1,820 for 1..13), solvable or not: the rules
    are the same for all of them."""
    return list(itertools.combinations_with_replacement(range(low, high + 1), 4))


def _wrap(text: str) -> str:
    return text if text.isdigit() else f"({text})"


def game24_play(numbers: Sequence[int], rng: random.Random) -> tuple[list[str], Fraction]:
    """One random legal play: (steps with the answer line last, the value the expression makes)."""
    items = [(Fraction(n), str(n)) for n in numbers]
    lines = []
    while len(items) > 1:
        i, j = sorted(rng.sample(range(len(items)), 2))
        (a, ta), (b, tb) = items[i], items[j]
        rest = items[:i] + items[i + 1:j] + items[j + 1:]
        if a < b:  # larger operand first: subtraction stays non-negative, as in the solver's traces
            (a, ta), (b, tb) = (b, tb), (a, ta)
        op = rng.choice("+-*/" if b != 0 else "+-*")
        result = apply_op(a, op, b)
        items = rest + [(result, f"{_wrap(ta)}{op}{_wrap(tb)}")]
        left = " ".join(format_number(v) for v in sorted(v for v, _ in items))
        lines.append(f"{format_number(a)} {op} {format_number(b)} = {format_number(result)} (left: {left})")
    value, text = items[0]
    return lines + [f"Answer: {text} = {game24.TARGET}"], value


def game24_random_play(plays_per_multiset: int, exclude: Iterable[Sequence[int]] = (), seed: int = 0,
                       multisets: Sequence[Sequence[int]] | None = None) -> list[dict[str, Any]]:
    """`plays_per_multiset` random legal plays (duplicates dropped) of every multiset not in
    `exclude` (the held-out puzzles), as reward -1 trajectories; plays ending on 24 are dropped."""
    rng = random.Random(f"game24-random-play-{seed}")
    excluded = {tuple(sorted(n)) for n in exclude}
    env = Game24Env(strict=True)
    rows = []
    for numbers in multisets if multisets is not None else all_multisets():
        if tuple(sorted(numbers)) in excluded:
            continue
        state, seen = env.initial_state({"numbers": list(numbers)}), set()
        for _ in range(plays_per_multiset):
            steps, value = game24_play(numbers, rng)
            if value == game24.TARGET or tuple(steps) in seen:
                continue
            seen.add(tuple(steps))
            rows.append(_row(env, state, steps, "game24"))
    return rows


# ---------------------------------------------------------------------------------- PrOntoQA


def _context(question: str) -> tuple[list[str], dict[Rule, str], list[tuple[Fact, str]]]:
    """(context sentences, rule -> its sentence, [(fact, its sentence)]) of a question text."""
    context, _ = prontoqa.split_question(question)
    rules, facts = {}, []
    for sentence in context:
        parsed = prontoqa.parse_sentence(sentence)
        if isinstance(parsed, Rule):
            rules[parsed] = sentence
        elif isinstance(parsed, Fact):
            facts.append((parsed, sentence))
    return context, rules, facts


def prontoqa_moves(question: str, steps: Sequence[str]) -> list[str] | None:
    """The legal next steps other than an answer line, or None when `steps` already broke the
    rules. A proof opens with a fact of the context; after a fact comes a context rule whose
    subject the entity is known to be and whose conclusion is not known yet; after a rule comes the
    fact it gives. Only the context is read: nothing here knows the answer."""
    _, rules, facts = _context(question)
    known: dict[tuple[str, str], bool] = {}
    last: Rule | Fact | None = None
    for step in steps:
        legal = _next(rules, facts, known, last)
        if step not in legal:
            return None
        last = prontoqa.parse_sentence(step)
        if isinstance(last, Fact):
            known[(last.entity, last.concept)] = last.positive
    return list(_next(rules, facts, known, last))


def _next(rules: dict[Rule, str], facts: list[tuple[Fact, str]], known: dict[tuple[str, str], bool],
          last: Rule | Fact | None) -> dict[str, Rule | Fact]:
    if last is None:
        return {sentence: fact for fact, sentence in facts}
    if isinstance(last, Rule):  # the entity whose membership fired the rule gets its conclusion
        entity = next(e for (e, c), positive in known.items() if c == last.subject and positive)
        fact = Fact(entity, last.concept, last.positive)
        return {prontoqa.fact_text(fact): fact}
    return {sentence: rule for rule, sentence in rules.items()
            if any(c == rule.subject and positive for (_, c), positive in known.items())
            and not any(c == rule.concept for (_, c) in known)}


class ProntoQARulesEnv(ProntoQAEnv):
    """ProntoQAEnv with its rules as the legal-move mask (`legal_step`)."""

    def legal_step(self, state: TextState, step: str) -> bool:
        moves = prontoqa_moves(state.question, state.steps)
        if moves is None:  # after an illegal history (a sampled path) nothing more is ruled out
            return True
        if self.is_final_step(step):
            return bool(state.steps) and step in ANSWER_LINES
        return step in moves


def prontoqa_play(question: str, rng: random.Random, stop_probability: float,
                  max_steps: int = 16) -> list[str]:
    """One random legal chaining: the opening fact, then (rule, fact) pairs until no rule applies,
    a stop is drawn (probability `stop_probability` after each fact) or another pair would leave no
    room for the answer line within `max_steps` (the env's depth cap), then a random answer line."""
    steps: list[str] = [rng.choice(prontoqa_moves(question, []))]
    while True:
        moves = prontoqa_moves(question, steps)
        if not moves or len(steps) + 3 > max_steps or rng.random() < stop_probability:
            break
        steps.append(rng.choice(moves))
        steps += prontoqa_moves(question, steps)  # the fact the rule gives: the only legal move
    return steps + [rng.choice(ANSWER_LINES)]


def prontoqa_random_chaining(problems: Sequence[dict[str, Any]], plays_per_problem: int = 1,
                             stop_probability: float = 0.2, exclude: Iterable[str] = (),
                             seed: int = 0) -> list[dict[str, Any]]:
    """Random legal chainings of every problem whose question text is not in `exclude` (the
    questions the loop trains and evaluates on), duplicates dropped, rewarded by the strict checker."""
    rng = random.Random(f"prontoqa-random-chaining-{seed}")
    excluded = set(exclude)
    env = ProntoQARulesEnv(strict=True)
    rows = []
    for problem in problems:
        state = env.initial_state(problem)
        if state.question in excluded:
            continue
        seen = set()
        for _ in range(plays_per_problem):
            steps = prontoqa_play(state.question, rng, stop_probability, env.max_steps)
            if tuple(steps) not in seen:
                seen.add(tuple(steps))
                rows.append(_row(env, state, steps, "prontoqa"))
    return rows


# ---------------------------------------------------------------------------------- rows


def _row(env: Any, state: TextState, steps: list[str], task: str) -> dict[str, Any]:
    end = TextState(state.question, tuple(steps), state.gold)
    gold = list(state.gold) if isinstance(state.gold, tuple) else state.gold
    return {"question": state.question, "gold": gold, "steps": steps, "reward": env.reward(end),
            "task": task, "source": SOURCE}
