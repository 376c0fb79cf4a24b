"""The `Task` protocol: everything the loop, `tsllm eval`, the warm start and the trainers' data
do differently per task, in one class per task (tsllm/tasks/<name>.py), so none of them names a task.

A task class declares what it is (class attributes) and builds, from `TaskSettings`, its env,
its problems and its policy/value bridge:

- `check(settings, training)`   config errors before any work, naming the key (classmethod)
- `env`                          the MDP (tsllm/envs/*), wrapped, never changed
- `train_problems()` / `test_problems()`  the training problems and the held-out problems
- `pool(round)`                  the problems loop round `round` samples and improves on
- `warmstart_rows()`             trajectories the tiny policy is warm-started on
- `policy_value(...)`            the PolicyValueFn search and sampling use
- `row(state, source, tokens)`   one trajectories.jsonl row of a finished path
- `policy_rows(rows)`            which trajectories the policy learns from
- `method_metrics(result)`       what the task reports beyond accuracy
- `unusual_problems(problems)`   a warning for loaded problems outside the task's rules
- `render(template)`             the prompt text the trainers see for (question, steps)

Seeds: a task's training problems come from `train_seed(seed)`, its held-out ones from
`held_out_seed(seed)`, the warm start's own problems from `warmstart_seed(seed)`, so the three
never share a generator stream.

Fresh problems per round: the loop asks `pool(k)` for round k's training pool (train_questions
problems). The default is the same pool every round (the first train_questions of
`train_problems()`). A task with a generator overrides it to draw a new pool per round, e.g. from
a stream seeded by `(train_seed(seed), k)`, never overlapping `test_problems()`:

    def pool(self, round: int) -> list[dict]:
        rng = random.Random(f"{train_seed(self.settings.seed)}-{round}")
        return draw_problems(rng, self.settings.train_questions, exclude=self.held_out_keys())

The held-out set never changes with the round. A pool's problems are plain values the task's
env takes (`env.initial_state(problem)`); the loop identifies a problem by its row's question text.

A game's warm start (`random_play_rows`) is random legal play with no win in it: it teaches the
rules of a `tsllm.envs.base.GameEnv`, never a solution.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tsllm.config import bad

Render = Callable[[str, Sequence[str]], str]
PLACEHOLDER = "/path/to/"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the hub spells dataset and model ids


def train_seed(seed: int) -> int:
    return seed + 1


def held_out_seed(seed: int) -> int:
    return seed + 10_000


def warmstart_seed(seed: int) -> int:
    return seed + 20_000


# ------------------------------------------------------------------------------- config checks

def _check_placeholder(key: str, value: str, what: str) -> None:
    if PLACEHOLDER in value:
        raise bad(key, f"{value} is a placeholder; set it to {what}")


def check_path(key: str, value: str | None, what: str) -> None:
    """A model folder the user must provide: set, not a placeholder, existing."""
    if value is None:
        raise bad(key, f"not set; set it to {what}")
    _check_placeholder(key, value, what)
    if not Path(value).expanduser().exists():
        raise bad(key, f"{value} does not exist; set it to {what}")


def check_data(key: str, value: str | None, what: str) -> None:
    """A data source: a local file, or a hub dataset id (org/name) loaded when the run starts."""
    if value is None:
        return
    _check_placeholder(key, value, what)
    local = Path(value).expanduser()
    if not local.exists() and (not _HUB_ID.match(value) or local.suffix in (".json", ".jsonl", ".csv", ".txt")):
        raise bad(key, f"{value} does not exist (and is not a hub dataset id such as openai/gsm8k); "
                       f"set it to {what}")


def refuse(settings: TaskSettings, name: str, keys: Sequence[str], why: str) -> None:
    """A ConfigError for the first of `keys` that is set: this task has no use for it."""
    for key in keys:
        if getattr(settings, key) is not None:
            raise bad(key, f"task {name} {why} and needs no {key}; remove it")


# ------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class TaskSettings:
    """The run settings a task reads: the same names as LoopConfig's fields (`of(config)` picks
    them), so `tsllm eval` can build one from its flags without a whole LoopConfig."""

    seed: int = 0
    strict: bool = True  # a solution must follow every step rule too, not only end on the right answer
    train_questions: int = 128
    test_questions: int = 128
    train_data: str | None = None  # a local file or a hub dataset id
    test_data: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    prompt_field: str = "prompt"
    reward_model: str | None = None
    max_response_tokens: int = 64
    max_step_tokens: int = 48
    base_model: str | None = None
    backend: str = "hf"
    prompt_format: str = "plain"  # chat: the question goes through the policy tokenizer's chat template
    system_prompt: str | None = None  # chat: the system turn before the question
    # `tsllm eval --ranks`: the ranks kept of a ranked problems file (lo, hi inclusive). Not a loop
    # key: a loop run reads no test file for the one task that has ranks (Game24 generates its own)
    test_ranks: tuple[int, int] | None = None

    @classmethod
    def of(cls, config: Any) -> TaskSettings:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.name not in EVAL_ONLY})


EVAL_ONLY = ("test_ranks",)  # TaskSettings fields `tsllm eval` sets and LoopConfig has not


# ------------------------------------------------------------------------------- the protocol

class Task:
    """Base of every task; subclasses set `name` and override what differs (see the module doc)."""

    name: ClassVar[str]
    # the baseline the search is compared with at its token budget, the knob that sets its vote
    # count, and its other knobs
    baseline: ClassVar[str] = "cot_sc"
    votes_knob: ClassVar[str] = "k"
    baseline_knobs: ClassVar[dict[str, Any]] = {}
    score: ClassVar[str] = "accuracy"  # the metric the run's summary table shows per method
    joined_steps: ClassVar[bool] = False  # steps are pieces of one response (any text), not lines
    needs_model: ClassVar[bool] = True  # False: the policy/value bridge needs no checkpoint
    data_help: ClassVar[str] = "a jsonl file"  # what `tsllm eval --data` reads for this task
    ranked_data: ClassVar[bool] = False  # its --data can be a ranked file, cut by --ranks (test_ranks)

    def __init__(self, settings: TaskSettings, device: str = "cpu"):
        self.settings, self.device = settings, device

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        """Raise ConfigError (naming the key) for settings this task cannot run with; `training`:
        for a loop run, else for `tsllm eval` (which reads test problems only)."""
        if settings.prompt_format not in ("plain", "chat"):
            raise bad("prompt_format", f"must be plain or chat, got {settings.prompt_format!r}")
        if settings.system_prompt is not None and settings.prompt_format != "chat":
            raise bad("system_prompt", "only prompt_format chat has a system turn; set prompt_format=chat or "
                                       "remove it")
        if settings.prompt_format == "chat" and not issubclass(cls, TextTask):
            raise bad("prompt_format", f"task {cls.name} takes its prompts as they are; chat is for line-by-line "
                                       "text tasks")
        if settings.system_prompt is not None and "{question}" in settings.system_prompt:
            raise bad("system_prompt", "must not hold '{question}' (the user turn holds the question)")
        if settings.prompt_format == "chat" and settings.base_model is not None and Path(settings.base_model).is_dir():
            prompt_template(settings)  # the policy's tokenizer has a chat template
        if settings.test_ranks is not None and not cls.ranked_data:
            raise bad("test_ranks", f"task {cls.name} has no ranked problems file (ranks cut game24's "
                                    "Tree-of-Thoughts CSV); remove it")
        if settings.base_model is not None:
            check_path("base_model", settings.base_model, "a causal-LM folder, or leave base_model unset "
                                                            "to warm-start the tiny model")
        elif training and cls.warmstart_rows is Task.warmstart_rows:  # else it would fail after the start
            raise bad("base_model", f"not set, and task {cls.name} has no warm start; set it to a causal-LM folder")

    env: Any

    def train_problems(self) -> list[Any]:
        """Every training problem (the warm start may use more than a round does)."""
        raise NotImplementedError

    def test_problems(self) -> list[Any]:
        raise NotImplementedError

    def problems(self) -> tuple[list[Any], list[Any]]:
        """(train, test): round 0's training pool, and the held-out problems."""
        return self.pool(0), self.test_problems()

    def pool(self, round: int) -> list[Any]:
        """The training problems of loop round `round` (see the module doc); default: the first
        train_questions of `train_problems()`, the same every round."""
        return self.train_problems()[: self.settings.train_questions]

    def warmstart_rows(self) -> list[dict]:
        """Trajectories to warm-start the tiny policy on when base_model is unset; a task without
        them needs base_model (its check says so)."""
        raise NotImplementedError(f"task {self.name} has no warm start; set base_model")

    def policy_value(self, policy: str, generator: Callable[[str], Any], value_fn: Any, temperature: float,
                     legal_steps_only: bool) -> Any:
        """The PolicyValueFn for checkpoint `policy`; `generator(policy)` gives the run's generator."""
        raise NotImplementedError

    def row(self, state: Any, source: str, tokens: int) -> dict:
        raise NotImplementedError

    def unusual_problems(self, problems: list[Any]) -> str | None:
        """A warning for problems outside the task's rules (say how many), or None. Evaluation
        goes on: a user may mean to score them."""
        return None

    @classmethod
    def policy_rows(cls, rows: list[dict]) -> list[dict]:
        """The trajectories the policy is fine-tuned on: the correct ones."""
        return [r for r in rows if r["steps"] and r["reward"] > 0]

    @classmethod
    def method_metrics(cls, result: dict[str, Any]) -> dict[str, Any]:
        """Metrics of one evaluated method beyond accuracy and tokens (result: evaluate.summarize's)."""
        return {}

    @classmethod
    def render(cls, template: str | None = None) -> Render:
        raise NotImplementedError


def prompt_template(settings: TaskSettings) -> str | None:
    """The env's prompt template for `settings.prompt_format`: None (the task's own) for plain; for
    chat, the policy tokenizer's chat template around the question (the fresh tiny model's ChatML
    one without base_model), so every prompt opens the assistant's turn and the steps follow."""
    if settings.prompt_format != "chat":
        return None
    from tsllm.models.tiny import CHATML_TEMPLATE, chat_prompt_template

    if settings.base_model is None:
        return chat_prompt_template(CHATML_TEMPLATE, settings.system_prompt)
    from transformers import AutoTokenizer

    try:
        return chat_prompt_template(AutoTokenizer.from_pretrained(settings.base_model), settings.system_prompt)
    except ValueError as error:  # no chat template
        raise bad("prompt_format", f"chat, but {settings.base_model}: {error}") from None


class TextTask(Task):
    """A sentence-level task: a step is one line, the reward is the exact checker's +1/-1, the
    policy is served by the run's generator (HF or vLLM) through LLMPolicyValue."""

    @classmethod
    def make_env(cls, settings: TaskSettings, template: str | None = None) -> Any:
        raise NotImplementedError

    def __init__(self, settings: TaskSettings, device: str = "cpu"):
        super().__init__(settings, device)
        self.env = self.make_env(settings, prompt_template(settings))

    @classmethod
    def render(cls, template: str | None = None) -> Render:
        from tsllm.envs.base import TextState

        env = cls.make_env(TaskSettings(), template)
        return lambda question, steps: env.prompt(TextState(question, tuple(steps)))

    def policy_value(self, policy: str, generator: Callable[[str], Any], value_fn: Any, temperature: float,
                     legal_steps_only: bool) -> Any:
        from tsllm.policy_value import LLMPolicyValue

        s = self.settings
        return LLMPolicyValue(self.env, generator(policy), value_fn, temperature=temperature,
                              max_step_tokens=s.max_step_tokens,
                              rollout_tokens=s.max_step_tokens * (self.env.max_steps + 1), seed=s.seed,
                              legal_steps_only=legal_steps_only, scored_moves=legal_steps_only)

    def row(self, state: Any, source: str, tokens: int) -> dict:
        reward = self.env.reward(state) if self.env.is_terminal(state) else -1.0  # no answer: wrong
        return {"question": state.question, "gold": state.gold, "steps": list(state.steps), "reward": reward,
                "task": self.name, "source": source, "tokens": tokens}


class GeneratedTextTask(TextTask):
    """A text task that generates its own training problems and is scored by its exact checker:
    a loop run takes no data files and no reward model; `tsllm eval` may read held-out problems
    from `--data`."""

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        super().check(settings, training)
        if training:
            refuse(settings, cls.name, ("train_data", "test_data", "reward_model"), "generates its own problems")
        else:
            refuse(settings, cls.name, ("reward_model",), "is scored by its exact checker")
            check_data("test_data", settings.test_data, cls.data_help)


def random_play_rows(env: Any, problems: Iterable[Any], plays: int, rng: random.Random, task: str,
                     solves: Callable[[list[Any]], bool] | None = None) -> list[dict]:
    """Warm-start rows of a GameEnv's game: `plays` random plays of each problem (`random_play`),
    dropping every play that wins and every play `solves(states)` says shows the solution of a
    problem the loop learns from or is judged on (the states from the opening to the end)."""
    from tsllm.envs.base import random_play

    def listed(value: Any) -> Any:  # the gold key as JSON writes it
        return [listed(v) for v in value] if isinstance(value, tuple) else value

    rows = []
    for problem in problems:
        for _ in range(plays):
            path = random_play(env, problem, rng)
            end = path[-1]
            if env.reward(end) > 0 or (solves is not None and solves(path)):
                continue
            rows.append({"question": end.question, "gold": listed(end.gold), "steps": list(end.steps),
                         "reward": env.reward(end), "task": task, "source": "warmstart"})
    return rows
