"""The interfaces every layer shares: states, expansions, budgets, search outputs, and the
Protocols `Env` (with its kinds `TextEnv` and `GameEnv`), `PolicyValueFn` and `Generator`.

Pure Python. Nothing here may import torch (search and envs depend on this module).

Vocabulary:
- a *state* is whatever the env uses to name a prefix (question + steps so far); it must be
  hashable so searches can key nodes on it. Toy states are node ids.
- an *action* is one step: a sentence (sentence level), a token id (token level), or a child
  id (toy trees). `env.step(state, action)` gives the child state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

State = Hashable
Action = Hashable


@dataclass
class Expansion:
    """The children the policy proposes for one state.

    `priors` are renormalised over the returned (unique) children. `token_counts[i]` is the number
    of policy tokens generated to produce child i. `step_scores[i]`, when present, is a local
    verifier score of the step into child i (best_first uses it; others ignore it).
    """

    actions: list[Action]
    priors: list[float]
    token_counts: list[int]
    step_scores: list[float] | None = None
    prompt_tokens: int = 0  # prompt tokens the backend processed (computed + served from cache)
    cached_tokens: int = 0  # of those, served from a prefix cache
    dropped_tokens: int = 0  # generated for candidates dropped as empty or duplicate (still paid)

    def __post_init__(self) -> None:
        n = len(self.actions)
        if len(self.priors) != n or len(self.token_counts) != n:
            raise ValueError("Expansion: actions, priors and token_counts must have equal length")
        if self.step_scores is not None and len(self.step_scores) != n:
            raise ValueError("Expansion: step_scores must match actions in length")


@dataclass
class Rollout:
    """One sampled continuation from a state to the end (or to a depth cap)."""

    actions: list[Action]
    token_count: int
    logprob: float = 0.0
    prompt_tokens: int = 0  # prompt tokens the backend went through for it (computed + cached)
    cached_tokens: int = 0  # of those, served from a prefix cache


@dataclass
class Budget:
    """Limits and spending for one root's search. A limit of None means unlimited.

    Two costs: `tokens`, the policy tokens of the steps (generated, or scored when an expansion
    scores an env's legal moves), and `compute`, every token the policy processed: those plus
    the prompt tokens not served from a cache (`prompt_tokens - cached_tokens`). `max_compute`
    limits the second.

    Every algorithm takes one as `budget=` (None: unlimited) and uses it as a template: each root
    gets a `fresh()` copy, so the limits apply to each root separately. The algorithm charges what
    it spends there and stops once `exhausted()`; the spent counters are reported in
    `SearchOutput.budget`. Wall time is measured from construction. A negative limit is an error.
    """

    LIMITS: ClassVar[tuple[str, ...]] = ("max_tokens", "max_compute", "max_expansions", "max_value_calls",
                                         "max_seconds")

    max_tokens: int | None = None
    max_compute: int | None = None
    max_expansions: int | None = None
    max_value_calls: int | None = None
    max_seconds: float | None = None
    tokens: int = 0  # generated policy tokens
    expansions: int = 0  # states expanded (one policy call each, batched across roots)
    value_calls: int = 0  # states scored by the value model
    value_tokens: int = 0
    prompt_tokens: int = 0  # prompt tokens processed (computed = prompt_tokens - cached_tokens)
    cached_tokens: int = 0  # prompt tokens served from a prefix cache
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in self.LIMITS:
            limit = getattr(self, name)
            if limit is not None and not limit >= 0:  # `not >=` also rejects NaN
                raise ValueError(f"Budget: {name} must be >= 0 or None, got {limit}")

    def fresh(self) -> Budget:
        """A new budget with the same limits and nothing spent (one per root)."""
        return Budget(**{name: getattr(self, name) for name in self.LIMITS})

    @property
    def compute(self) -> int:
        """Policy tokens processed: step tokens plus prompt tokens not served from a cache."""
        return self.tokens + self.prompt_tokens - self.cached_tokens

    def fits(self, tokens: int, prompt_tokens: int = 0, cached_tokens: int = 0) -> bool:
        """Whether spending this much more stays within the token and compute limits."""
        return ((self.max_tokens is None or self.tokens + tokens <= self.max_tokens)
                and (self.max_compute is None
                     or self.compute + tokens + prompt_tokens - cached_tokens <= self.max_compute))

    def charge_rollout(self, rollout: Rollout) -> None:
        self.tokens += rollout.token_count
        self.prompt_tokens += rollout.prompt_tokens
        self.cached_tokens += rollout.cached_tokens

    def exhausted(self) -> bool:
        self.seconds = time.perf_counter() - self.started
        return (
            (self.max_tokens is not None and self.tokens >= self.max_tokens)
            or (self.max_compute is not None and self.compute >= self.max_compute)
            or (self.max_expansions is not None and self.expansions >= self.max_expansions)
            or (self.max_value_calls is not None and self.value_calls >= self.max_value_calls)
            or (self.max_seconds is not None and self.seconds >= self.max_seconds)
        )

    def charge_expansion(self, expansion: Expansion) -> None:
        self.expansions += 1
        self.tokens += sum(expansion.token_counts) + expansion.dropped_tokens
        self.prompt_tokens += expansion.prompt_tokens
        self.cached_tokens += expansion.cached_tokens

    def spent(self) -> dict[str, float]:
        self.seconds = time.perf_counter() - self.started
        return {
            "tokens": self.tokens,
            "compute": self.compute,
            "expansions": self.expansions,
            "value_calls": self.value_calls,
            "value_tokens": self.value_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "seconds": self.seconds,
        }


@dataclass
class Candidate:
    """A complete (or depth-capped) path found by a search, with its answer and score."""

    path: list[State]
    answer: Any
    score: float  # value / ORM score / vote weight used to rank it
    terminal: bool = True
    count: int = 1  # how many times the search reached it (votes)


@dataclass
class SearchOutput:
    """What every algorithm returns, one per root.

    `best_path` is the recommended path of states from the root; `answer` the final
    (aggregated) answer or None; `root_value` the backed-up value of the root where the algorithm
    defines one; `tree` a JSON-serialisable snapshot of the search tree (see search.tree) for
    golden tests and inspection; `stats` tree statistics (nodes, depth, ...).
    """

    root: State
    best_path: list[State]
    answer: Any = None
    root_value: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    tree: dict[str, Any] | None = None
    stats: dict[str, float] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)


@runtime_checkable
class Env(Protocol):
    """An MDP over text. `reward` is the hidden outcome (exact checker or reward model); searches
    only read it when explicitly told to use terminal rewards."""

    def initial_state(self, question: Any) -> State: ...

    def step(self, state: State, action: Action) -> State: ...

    def is_terminal(self, state: State) -> bool: ...

    def reward(self, state: State) -> float: ...

    def answer(self, state: State) -> Any: ...


@runtime_checkable
class TextEnv(Env, Protocol):
    """A sentence-level env, a step one line of text (every tsllm.envs.base.TextEnv): what the
    policy/value bridge needs to have a language model write the steps.

    `prompt(state)` is the text the policy continues; its generation of one step stops at any of
    `step_stops` (the `step_separator`, and where the policy's part ends in an env that writes its
    steps); `split_steps(text)` cuts a longer generation into steps. `legal_step(state, step)`:
    whether a proposed step follows the task's rules, judged without the gold answer (the
    legal-move mask).

    `writes_steps`: the env writes part of each step itself, as a game engine does (a
    tsllm.envs.base.GameEnv: the policy names the move, `step` writes the line with its result).
    A rollout then goes step by step, so the policy always reads the env's lines, never its own."""

    step_separator: str
    step_stops: tuple[str, ...]
    writes_steps: bool

    def prompt(self, state: State) -> str: ...

    def split_steps(self, text: str) -> list[str]: ...

    def legal_step(self, state: State, step: str) -> bool: ...


@runtime_checkable
class GameEnv(Env, Protocol):
    """An env that can list its legal moves, as a game engine does (the games on
    tsllm.envs.base.GameEnv: reach, Game24 moves; toy trees). A policy/value bridge then scores
    every legal move of a state in one pass instead of sampling children (AlphaZero's expansion):
    no duplicate is generated, none is illegal."""

    def legal_moves(self, state: State) -> list[Action]:
        """The actions allowed in `state` (empty for a terminal state)."""
        ...


@runtime_checkable
class PolicyValueFn(Protocol):
    """Batched policy + value. One call serves every frontier state of every tree in flight."""

    def expand(self, states: Sequence[State], width: int | Sequence[int]) -> list[Expansion]:
        """Up to `width` unique children per state: one int for all states, or one per state
        (parallel search gives each candidate its own rollout allocation)."""
        ...

    def evaluate(self, states: Sequence[State]) -> list[float]: ...

    def rollout(self, states: Sequence[State], n: int) -> list[list[Rollout]]: ...


@dataclass
class Completion:
    """One generated continuation of one prompt."""

    text: str
    token_ids: list[int]
    logprob: float  # cumulative log-prob of the generated tokens
    num_tokens: int  # generated tokens
    prompt_tokens: int = 0  # prompt length in tokens
    cached_tokens: int = 0  # of those, served from a prefix cache
    finish_reason: str = ""


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


# completions that just finished, each with the index of its prompt
FinishedCallback = Callable[[list[tuple[int, Completion]]], None]


@runtime_checkable
class Generator(Protocol):
    """Batched sampling. The built-in backends also take `generate(..., on_finished=callback)`:
    the callback gets completions as soon as they finish, before `generate` returns, so the caller
    can work on them while the rest still decode (`LLMPolicyValue(overlap_value=True)` scores
    children that way)."""

    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]: ...

    def update_weights(self, path: str) -> None: ...


@runtime_checkable
class Scorer(Protocol):
    """A generator that can also score given continuations (the built-in backends can):
    `score(prompts, continuations)` gives, for each prompt, one Completion per continuation of
    it, whose `logprob` is the policy's log-probability of that text after the prompt and whose
    token counts are what scoring it cost (prompt tokens computed, and those served from a cache).
    A scorer may also take `cutoff` (the HF backend does: stop on unlikely prefixes, those
    continuations' log-probs -inf); the policy/value bridge passes it only when `move_cutoff` > 0."""

    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]]) -> list[list[Completion]]: ...
