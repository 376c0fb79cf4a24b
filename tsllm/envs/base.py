"""Shared machinery of the sentence-level text environments (game24, gsm8k, prontoqa).

A state is a frozen, hashable `TextState(question, steps, gold)`: the question text, the steps
(lines) taken so far, and the gold key the exact checker needs (hidden from `repr`, so tree
snapshots show only what the policy sees). An action is one step: a line of text.

Prompt rendering: `template` with `{question}` replaced, then every step followed by the step
separator "\\n". So a prompt always ends with "\\n" and a child's prompt extends its parent's
prompt exactly (what prefix caching wants); the policy's next line is the next step.

Subclasses say when a state is terminal (`is_final_step`), how to read the answer, and how to
check it; the depth cap (`max_steps`) is common: a state with that many steps is terminal.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_SEPARATOR = "\n"


@dataclass(frozen=True)
class TextState:
    question: str
    steps: tuple[str, ...] = ()
    gold: Hashable = field(default=None, repr=False)  # checker key; not shown in snapshots

    @property
    def depth(self) -> int:
        return len(self.steps)

    def text(self) -> str:
        """The steps so far, one per line (what the checker reads)."""
        return STEP_SEPARATOR.join(self.steps)


class DataError(ValueError):
    """A malformed data row; the message names the file and line."""


def iter_jsonl(path: str | Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each row of a jsonl file; blank lines are skipped. Each row must
    be a JSON object holding the `required` keys, else DataError("<file>:<line>: ...")."""
    path = Path(path)
    required = tuple(required)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}")
            yield lineno, row


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """All rows of a jsonl file, validated as in `iter_jsonl`."""
    return [row for _, row in iter_jsonl(path, required)]


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) for each non-blank line of a UTF-8 text file;
    a line that is not UTF-8 is DataError("<file>:<line>: ...")."""
    path = Path(path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start} of the line)") from None
            if line.strip():
                yield lineno, line


def load_hub_dataset(source: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset(source, ...)` for a hub dataset id, with the reasons it cannot be
    loaded (no network, offline mode, no such dataset or split) as one DataError line naming it."""
    import datasets  # lazy: heavy, and only loaders need it

    try:
        return datasets.load_dataset(source, *args, **kwargs)
    except (OSError, ValueError) as e:  # ConnectionError, DatasetNotFoundError, an unknown split
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{source}: the hub dataset cannot be loaded ({reason}); give a local file instead, "
                        "or fetch the dataset once with network access (it is cached after)") from None


def split_steps(text: str) -> list[str]:
    """Lines of `text`, stripped, empty ones dropped: how generated text becomes steps."""
    return [line.strip() for line in text.split(STEP_SEPARATOR) if line.strip()]


class TextEnv:
    """Base sentence-level env. Subclasses set `template` and implement `is_final_step`,
    `extract_answer`, `check` and `gold_of` (the gold key stored in the state)."""

    step_separator = STEP_SEPARATOR
    # where the policy's generation of one step stops; an env that writes each step's text itself
    # (reach: the policy names a move, the env writes the result) also stops where the policy's part ends
    step_stops: tuple[str, ...] = (STEP_SEPARATOR,)
    template = "{question}\n"

    def __init__(self, max_steps: int = 10, template: str | None = None):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        if template is not None:
            if "{question}" not in template:
                raise ValueError("template must contain '{question}'")
            self.template = template

    # --- to override -------------------------------------------------------------------
    def question_text(self, problem: Any) -> str:
        return problem["question"] if isinstance(problem, Mapping) else str(problem)

    def gold_of(self, problem: Any) -> Hashable:
        return None

    def is_final_step(self, step: str) -> bool:
        raise NotImplementedError

    def extract_answer(self, text: str) -> Any:
        raise NotImplementedError

    def check(self, problem: Any, text: str) -> bool:
        raise NotImplementedError

    def legal_step(self, state: TextState, step: str) -> bool:
        """Whether `step` obeys the task's rules after `state`: AlphaZero's legal-move mask, which
        searches apply to the policy's proposals. Only rules that need no gold answer belong here
        (the outcome stays hidden); by default a task has none."""
        return True

    # --- the Env protocol --------------------------------------------------------------
    def initial_state(self, question: Any) -> TextState:
        """`question` is a problem dict (from the loaders) or the bare question text (then
        the gold is unknown and `reward` raises)."""
        if isinstance(question, TextState):
            return question
        return TextState(self.question_text(question), (), self.gold_of(question))

    def step(self, state: TextState, action: str) -> TextState:
        """Append one step. Surrounding whitespace (and the separator the policy stopped on)
        is stripped; callers split multi-line generations with `split_steps` first."""
        return TextState(state.question, state.steps + (str(action).strip(),), state.gold)

    def is_terminal(self, state: TextState) -> bool:
        return len(state.steps) >= self.max_steps or (
            bool(state.steps) and self.is_final_step(state.steps[-1])
        )

    def answer(self, state: TextState) -> Any:
        """The answer read from the steps, or None when there is none (yet)."""
        return self.extract_answer(state.text()) if state.steps else None

    def reward(self, state: TextState) -> float:
        """+1 if the terminal state's answer checks, -1 if not, 0 before the end."""
        if not self.is_terminal(state):
            return 0.0
        if state.gold is None:
            raise ValueError("reward: this state has no gold answer (built from a bare question)")
        return 1.0 if self.check(self.problem_of(state), state.text()) else -1.0

    def problem_of(self, state: TextState) -> dict[str, Any]:
        """The minimal problem dict `check` needs, rebuilt from a state."""
        return {"question": state.question, "answer": state.gold}

    @property
    def writes_steps(self) -> bool:
        """Whether the env writes part of each step (its generation stops early): rollouts then
        go step by step, so the policy always reads the env's lines, never its own version."""
        return tuple(self.step_stops) != (self.step_separator,)

    # --- text helpers ------------------------------------------------------------------
    def prompt(self, state: TextState) -> str:
        head = self.template.replace("{question}", state.question)
        return head + "".join(s + self.step_separator for s in state.steps)

    def split_steps(self, text: str) -> list[str]:
        return split_steps(text)
