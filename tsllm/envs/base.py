"""Shared machinery of the sentence-level text environments (game24, gsm8k, prontoqa) and of the
games written on `GameEnv` (reach, game24_moves, prontoqa_moves).

A state is a frozen, hashable `TextState(question, steps, gold, board)`: the question text, the
steps (lines) taken so far, the gold key the exact checker needs (hidden from `repr`, so tree
snapshots show only what the policy sees), and for a game the board after those steps (a cache of
what the steps say: neither compared nor hashed nor shown). An action is one step: a line of text.

Prompt rendering: `template` with `{question}` replaced, then every step followed by the step
separator "\\n". So a prompt always ends with "\\n" and a child's prompt extends its parent's
prompt exactly (what prefix caching wants); the policy's next line is the next step.

Subclasses of `TextEnv` say when a state is terminal (`is_final_step`), how to read the answer,
and how to check it; the depth cap (`max_steps`) is common: a state with that many steps is
terminal. A `GameEnv` says instead what its board is and how a move changes it (see its doc).
"""

from __future__ import annotations

import json
import random
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

STEP_SEPARATOR = "\n"


@dataclass(frozen=True)
class TextState:
    question: str
    steps: tuple[str, ...] = ()
    gold: Hashable = field(default=None, repr=False)  # checker key; not shown in snapshots
    board: Any = field(default=None, compare=False, repr=False)  # a game's board after the steps (GameEnv)

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
    # where the policy's generation of one step stops (tsllm.types.TextEnv)
    step_stops: tuple[str, ...] = (STEP_SEPARATOR,)
    writes_steps = False  # the policy writes each step whole (a GameEnv writes part of it)
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

    # --- text helpers ------------------------------------------------------------------
    def prompt(self, state: TextState) -> str:
        head = self.template.replace("{question}", state.question)
        return head + "".join(s + self.step_separator for s in state.steps)

    def split_steps(self, text: str) -> list[str]:
        return split_steps(text)


MOVE_END = " ="  # a move's line is `<move> = <what the env writes>`: the policy stops here


class GameEnv(TextEnv):
    """A game as an MDP over lines, the env its engine (AlphaZero: the rules are given, the strategy
    is not). The policy names a move by the start of a line (`14 + 3`; its generation stops at
    " =", or at the game's own `step_stops`); the env applies it to the board and writes the whole
    line (`14 + 3 = 17, 29 to go`), so the policy's context always holds the true board. A line
    that names no legal move is kept as written and ends the game at -1 (a broken rule); so does
    reaching `max_steps` moves undecided.

    A game is a subclass that sets `template` and `max_steps` and says what its board is:
    - `start(gold)`: the board a problem opens on (`gold` as `gold_of` makes it);
    - `moves(board)`: the policy's part of every legal move, as it would write it;
    - `apply(board, line)`: (the env's line, the board after it) for the move `line` names by its
      start, whatever follows; None when it names no legal move;
    - `outcome(board)`: the reward once the game is decided (+1 won, -1 lost), None while it is on;
    - `answer_of(board)`: the answer a board shows;
    with `question_text` and `gold_of` as every TextEnv, and `random_move` where random play should
    not draw uniformly from `moves`. The rest (step, terminal test, reward, the legal-move mask and
    list) is here, the same for every game.
    """

    max_steps: int
    step_stops = (STEP_SEPARATOR, MOVE_END)
    writes_steps = True

    def __init__(self, max_steps: int | None = None, template: str | None = None):
        super().__init__(max_steps=self.max_steps if max_steps is None else max_steps, template=template)

    # --- the game ----------------------------------------------------------------------
    def start(self, gold: Hashable) -> Any:
        raise NotImplementedError

    def moves(self, board: Any) -> list[str]:
        raise NotImplementedError

    def apply(self, board: Any, line: str) -> tuple[str, Any] | None:
        raise NotImplementedError

    def outcome(self, board: Any) -> float | None:
        raise NotImplementedError

    def answer_of(self, board: Any) -> Any:
        raise NotImplementedError

    def random_move(self, board: Any, rng: random.Random) -> str:
        return rng.choice(self.moves(board))

    # --- the env, written once ---------------------------------------------------------
    def over(self, board: Any, moves: int) -> bool:
        """Whether the game has ended on `board` after `moves` moves: decided, or at the move cap. A
        game is decided by a move, never on its opening board (a loaded problem may start on its target)."""
        return moves >= self.max_steps or (moves > 0 and self.outcome(board) is not None)

    def board(self, state: TextState) -> Any:
        """The board after the state's steps, or None after a line that named no legal move (any
        line after the end of the game does). Replayed from the steps for a state built outside
        the env (from a trajectory row)."""
        if state.board is not None:
            return state.board
        board = self.start(state.gold)
        for moves, line in enumerate(state.steps):
            applied = None if self.over(board, moves) else self.apply(board, line)
            if applied is None:
                return None
            board = applied[1]
        return board

    def initial_state(self, question: Any) -> TextState:
        state = super().initial_state(question)
        return state if state.board is not None or state.gold is None else replace(state, board=self.board(state))

    def step(self, state: TextState, action: str) -> TextState:
        """Apply the move the line names and write the env's line; a line that names no legal move
        is kept as written (it ends the game as a loss)."""
        child = super().step(state, action)
        board = None if self.is_terminal(state) else self.board(state)
        applied = None if board is None else self.apply(board, child.steps[-1])
        if applied is None:
            return child
        line, after = applied
        return TextState(state.question, state.steps + (line,), state.gold, after)

    def is_terminal(self, state: TextState) -> bool:
        board = self.board(state)
        return board is None or self.over(board, len(state.steps))

    def reward(self, state: TextState) -> float:
        """The game's outcome at the end (-1 after a broken rule or at the move cap), 0 before it."""
        if not self.is_terminal(state):
            return 0.0
        board = self.board(state)
        outcome = None if board is None else self.outcome(board)
        return -1.0 if outcome is None else float(outcome)

    def answer(self, state: TextState) -> Any:
        """The board's answer (None before the first move or after a broken rule)."""
        board = self.board(state) if state.steps else None
        return None if board is None else self.answer_of(board)

    def check(self, problem: Any, text: str) -> bool:
        """Whether the lines, played from the problem's opening board, win."""
        if not isinstance(text, str):
            return False
        state = self.initial_state(problem)
        state = TextState(state.question, tuple(split_steps(text)), state.gold)
        return self.is_terminal(state) and self.reward(state) > 0

    def legal_moves(self, state: TextState) -> list[str]:
        """The policy's part of every legal move (tsllm.types.GameEnv); none once the game is over."""
        return [] if self.is_terminal(state) else self.moves(self.board(state))

    def legal_step(self, state: TextState, step: str) -> bool:
        """The rules, judged without the outcome: the line names a legal move (none is once the game
        is over). After a broken rule (a sampled path, never a searched one) nothing is ruled out."""
        board = self.board(state)
        return board is None or (not self.over(board, len(state.steps)) and self.apply(board, step) is not None)


def random_play(env: GameEnv, problem: Any, rng: random.Random) -> list[TextState]:
    """The states of one random play of `problem`, from its opening to the end of the game: random
    legal moves (`env.random_move`), written as the env writes them. The rules, whatever the
    outcome; the play never stops by itself before the end, so a policy it teaches always names a
    move while the game is on."""
    path = [env.initial_state(problem)]
    while not env.is_terminal(path[-1]):
        path.append(env.step(path[-1], env.random_move(env.board(path[-1]), rng)))
    return path
