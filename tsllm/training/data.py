"""Value/ORM training data from trajectories. Pure Python: no torch, so it is cheap to test.

A trajectories file (jsonl) holds one sampled or searched trajectory per row:

    {"question": str, "steps": [str, ...], "reward": float,
     "gold": ..., "task": str, "source": "sample"|"search"|"warmstart",   (optional)
     "values": [float, ...]}                                               (optional, for TD(lambda))

One trajectory becomes ONE `ValueExample`: the text of the full trajectory plus, for every prefix
(the question alone, then each step added), the character index where that prefix's text ends and
its regression target. Training reads the model's head at the token holding each of those
characters, so one forward pass labels every prefix. `render(question, steps) -> str` gives the
exact text the models see (for text envs `lambda q, s: env.prompt(TextState(q, tuple(s)))`, which
ends every prefix with the "\\n" that closes its last step), so this module knows no task.

Targets (TS-LLM, gamma = 1, rewards only at the end):
- Monte-Carlo (default): every prefix gets the final reward R.
- TD(lambda), when `td_lambda` is set and each row holds `values` = the value estimates of its
  len(steps)+1 prefixes (what a critic said during sampling/search): with prefixes t = 0..T,
      G_T = R                                   (the final prefix's outcome is known)
      G_t = (1 - lambda) * V_{t+1} + lambda * G_{t+1}      for t < T
  so lambda = 1 is Monte-Carlo and lambda = 0 is one-step TD (G_t = V_{t+1}, and G_{T-1} = R).
  `values[T]` is ignored: the final prefix is scored by its reward.
- ORM (`build_orm_examples`): one label, the full text -> R.

Identical (text, targets) examples are kept once; the same prefix reached by different
trajectories keeps one label per trajectory, so the MSE fit is their mean (the MC estimate).
`split_by_question` holds whole questions out, so evaluation measures unseen questions.

Trainers take rows; tasks make them. This package imports no task: how a row of task `name`
reads as text comes from a `Formats` object the caller passes (`tsllm.tasks` is one, so the loop
and the recipes pass that module); without one, only the plain "text" format is known.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tsllm.atomic import write_jsonl  # noqa: F401  (re-exported: trajectories files are written with it)
from tsllm.envs.base import DataError, TextEnv, TextState, iter_jsonl

Render = Callable[[str, Sequence[str]], str]


@dataclass(frozen=True)
class Trajectory:
    question: str
    steps: tuple[str, ...]
    reward: float
    values: tuple[float, ...] | None = None  # one per prefix (len(steps) + 1), for TD(lambda)
    task: str | None = None  # the row's task, when it names one (picks the prompt format)
    where: str = ""  # "file:line", for error messages


@dataclass(frozen=True)
class ValueExample:
    question: str
    text: str
    label_chars: tuple[int, ...]  # index of the last character of each labelled prefix in `text`
    targets: tuple[float, ...]


# --------------------------------------------------------------------------------- reading


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_trajectory(row: dict[str, Any], where: str, formats: Formats | None = None) -> Trajectory:
    """One validated row; DataError("<where>: ...") says which field is wrong and how."""
    joins_steps = (formats or PLAIN_TEXT).joins_steps
    question, steps, reward = row["question"], row["steps"], row["reward"]
    if not isinstance(question, str):
        raise DataError(f"{where}: 'question' must be a string, got {type(question).__name__}")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: 'steps' must be a list of strings, got {steps!r:.80}")
    if not _number(reward):
        raise DataError(f"{where}: 'reward' must be a finite number, got {reward!r}")
    task = row.get("task")
    if task is not None and not isinstance(task, str):
        raise DataError(f"{where}: 'task' must be a string, got {task!r}")
    if joins_steps(task):  # steps are pieces of one response: any text, but not empty
        if not all(steps):
            raise DataError(f"{where}: a step is empty; drop empty steps")
    elif any("\n" in s or not s.strip() for s in steps):
        raise DataError(f"{where}: a step is empty or holds a newline; write one line per step")
    values = row.get("values")
    if values is not None:
        if not isinstance(values, list) or not all(_number(v) for v in values):
            raise DataError(f"{where}: 'values' must be a list of finite numbers, got {values!r:.80}")
        if len(values) != len(steps) + 1:
            raise DataError(
                f"{where}: 'values' needs one estimate per prefix, len(steps)+1 = {len(steps) + 1}, "
                f"got {len(values)}"
            )
        values = tuple(float(v) for v in values)
    return Trajectory(question, tuple(steps), float(reward), values, task, where)


def read_trajectories(paths: str | os.PathLike | Iterable[str | os.PathLike],
                      formats: Formats | None = None) -> list[Trajectory]:
    """Every trajectory of one or more jsonl files, validated. A missing or empty file is an
    error naming it (an empty training set is never what was meant)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Trajectory] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"trajectories file {path} does not exist; write it with the loop's "
                                    "collect stage or point the config at an existing jsonl file")
        before = len(out)
        for lineno, row in iter_jsonl(path, required=("question", "steps", "reward")):
            out.append(parse_trajectory(row, f"{path}:{lineno}", formats))
        if len(out) == before:
            raise DataError(f"{path}: no trajectories in the file (it is empty); one JSON object per "
                            "line with 'question', 'steps' and 'reward' is expected")
    return out


# --------------------------------------------------------------------------------- targets


def monte_carlo_targets(reward: float, num_prefixes: int) -> list[float]:
    return [float(reward)] * num_prefixes


def td_lambda_targets(values: Sequence[float], reward: float, lam: float) -> list[float]:
    """Lambda-returns for prefixes 0..T from their value estimates (see the module docstring)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"td_lambda must be in [0, 1], got {lam}")
    estimates = [float(v) for v in values[:-1]] + [float(reward)]  # the final prefix's value is its outcome
    targets = list(estimates)
    for t in range(len(values) - 2, -1, -1):
        targets[t] = (1.0 - lam) * estimates[t + 1] + lam * targets[t + 1]
    return targets


# --------------------------------------------------------------------------------- examples


def prefix_ends(render: Render, question: str, steps: Sequence[str], where: str = "") -> tuple[str, list[int]]:
    """(full text, index of the last character of each prefix 0..len(steps)). Every prefix's text
    must start the next one's, else the labels would point at text the model never saw there."""
    full = render(question, list(steps))
    ends = []
    for k in range(len(steps) + 1):
        prefix = full if k == len(steps) else render(question, list(steps[:k]))
        if not prefix or not full.startswith(prefix):
            raise DataError(f"{where}: the rendered prefix with {k} step(s) is empty or does not start "
                            "the full trajectory text; render(question, steps) must extend prefixes")
        if ends and len(prefix) - 1 <= ends[-1]:
            raise DataError(f"{where}: step {k} adds no text (an empty step?); drop empty steps")
        ends.append(len(prefix) - 1)
    return full, ends


def build_value_examples(trajectories: Iterable[Trajectory], render: Render,
                         td_lambda: float | None = None) -> list[ValueExample]:
    """One example per trajectory labelling every prefix; MC targets, or TD(lambda) when asked."""
    examples = []
    for traj in trajectories:
        text, ends = prefix_ends(render, traj.question, traj.steps, traj.where)
        if td_lambda is None:
            targets = monte_carlo_targets(traj.reward, len(ends))
        elif traj.values is None:
            raise DataError(f"{traj.where}: td_lambda={td_lambda} needs per-prefix 'values' in every "
                            "row; add them or unset td_lambda to use Monte-Carlo returns")
        else:
            targets = td_lambda_targets(traj.values, traj.reward, td_lambda)
        examples.append(ValueExample(traj.question, text, tuple(ends), tuple(targets)))
    return deduplicate(examples)


def build_orm_examples(trajectories: Iterable[Trajectory], render: Render) -> list[ValueExample]:
    """Outcome examples: the final text, labelled at its last character with the reward."""
    examples = []
    for traj in trajectories:
        text = render(traj.question, list(traj.steps))
        if not text:
            raise DataError(f"{traj.where}: the rendered trajectory is empty")
        examples.append(ValueExample(traj.question, text, (len(text) - 1,), (traj.reward,)))
    return deduplicate(examples)


def deduplicate(examples: Iterable[ValueExample]) -> list[ValueExample]:
    """Keep the first of identical (text, labels, targets); order is otherwise preserved."""
    seen: set[tuple] = set()
    out = []
    for ex in examples:
        key = (ex.text, ex.label_chars, ex.targets)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def split_by_question(examples: Sequence[ValueExample], eval_fraction: float,
                      seed: int) -> tuple[list[ValueExample], list[ValueExample]]:
    """(train, eval): round(eval_fraction * questions) whole questions (at least one when the
    fraction is positive and there are two or more), chosen by a seeded shuffle of the sorted
    question set, so the split is the same on every machine and rank."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    questions = sorted({ex.question for ex in examples})
    random.Random(seed).shuffle(questions)
    n_eval = round(eval_fraction * len(questions))
    if eval_fraction > 0 and len(questions) >= 2:
        n_eval = min(max(n_eval, 1), len(questions) - 1)
    held_out = set(questions[:n_eval])
    train = [ex for ex in examples if ex.question not in held_out]
    evaluation = [ex for ex in examples if ex.question in held_out]
    return train, evaluation


# --------------------------------------------------------------------------------- rendering


class Formats(Protocol):
    """What the trainers ask about the rows a task made. The `tsllm.tasks` module is one."""

    def render(self, name: str, template: str | None = None) -> Render:
        """`render(question, steps)`: the text models see for a row of prompt format `name`."""
        ...

    def joins_steps(self, name: str | None) -> bool:
        """Whether rows of `name` hold pieces of one response (any text) rather than lines."""
        ...


TEXT_FORMAT = "text"  # rows written for a plain TextEnv: template "{question}\n", one line per step


class PlainText:
    """The formats known without any task: "text" only."""

    def render(self, name: str, template: str | None = None) -> Render:
        if name != TEXT_FORMAT:
            raise ValueError(f"unknown prompt format {name!r}: the trainer was given no task formats "
                             f"(pass formats=tsllm.tasks), so it knows {TEXT_FORMAT!r} only")
        env = TextEnv(template=template)
        return lambda question, steps: env.prompt(TextState(question, tuple(steps)))

    def joins_steps(self, name: str | None) -> bool:
        return False


PLAIN_TEXT = PlainText()


def render_for_task(task: str, template: str | None = None, formats: Formats | None = None) -> Render:
    """`render(question, steps)` in prompt format `task` of `formats` (default: "text" only),
    optionally with another template."""
    return (formats or PLAIN_TEXT).render(task, template)
