"""Tasks: one module per task, each a `Task` (tsllm/tasks/base.py), found by name in one registry.

    from tsllm.tasks import get_task, names
    task = get_task("game24")(TaskSettings(seed=0), device="cpu")
    train, test = task.problems()

A new task is one module: subclass `Task` (or `TextTask`), set `name`, decorate the class with
`@register`, and import the module before the config is loaded (the built-in ones are imported
here). Its name is then a valid `task` in every config and `tsllm eval --task` choice.
"""

from __future__ import annotations

from tsllm.tasks.base import Render, Task, TaskSettings

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make `cls` the task named `cls.name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"task class {cls.__name__} needs a `name`")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"task {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; choose one of {names()}")
    return _REGISTRY[name]


# Prompt formats the trainers render trajectories with: every task's, and "text" for rows written
# for a plain TextEnv (template "{question}\n", one line per step).
TEXT_FORMAT = "text"


def prompt_formats() -> list[str]:
    return names() + [TEXT_FORMAT]


def check_prompt_format(name: str, key: str = "task") -> None:
    """A trainer config's prompt format, checked at load (the trainers import no task)."""
    from tsllm.config import bad

    if name not in prompt_formats():
        raise bad(key, f"unknown task {name!r}; use one of {prompt_formats()}")


def render(name: str, template: str | None = None) -> Render:
    """`render(question, steps) -> str`: the text models see for a trajectory of task `name`."""
    if name == TEXT_FORMAT:
        from tsllm.training.data import PLAIN_TEXT

        return PLAIN_TEXT.render(name, template)
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; use one of {prompt_formats()}")
    return _REGISTRY[name].render(template)


def joins_steps(name: str | None) -> bool:
    """Whether rows of task `name` hold pieces of one response (any text) rather than lines."""
    return name in _REGISTRY and _REGISTRY[name].joined_steps


from tsllm.tasks import game24, game24_moves, gsm8k, prontoqa, prontoqa_moves, reach, rlhf, toy  # noqa: E402,F401  (they register themselves)

__all__ = ["Render", "Task", "TaskSettings", "check_prompt_format", "get_task", "names", "prompt_formats",
           "register", "render",
           "joins_steps", "unregister"]
