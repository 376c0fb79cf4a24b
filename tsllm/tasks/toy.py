"""The toy task: random reasoning trees whose value estimates are informative but noisy (what a
learned critic gives a search), read by `FixedTreePolicyValue` (tsllm/envs/toy.py). It needs no
model: `tsllm demo` compares every search algorithm on it, and `tsllm eval --task toy` runs any
method on it without a checkpoint. It has no text for a language model to learn, so the loop
refuses it.

A problem is a tree's root id; right answers are 0 (reward +1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tsllm.config import bad
from tsllm.tasks import register
from tsllm.tasks.base import Task, TaskSettings, refuse


def build_forest(roots: int, depth: int, branching: int, value_noise: float, seed: int) -> tuple[Any, list[str]]:
    """(one FixedTreeEnv holding `roots` random trees, their root ids)."""
    from tsllm.envs.toy import FixedTreeEnv, random_tree

    nodes: dict = {}
    for i in range(roots):
        nodes.update(random_tree(depth, branching, seed=seed + i, prefix=f"q{i}/",
                                 value_noise=value_noise, good_fraction=0.1))
    ids = [f"q{i}/root" for i in range(roots)]
    return FixedTreeEnv(nodes, root=ids[0]), ids


@register
class ToyTask(Task):
    name = "toy"
    needs_model = False
    data_help = ""  # it builds its own trees
    depth, branching, value_noise = 6, 3, 0.5  # the demo's defaults

    @classmethod
    def check(cls, settings: TaskSettings, training: bool) -> None:
        if training:
            raise bad("task", "toy trees have no text for a language model to learn; "
                              "use `tsllm demo` or `tsllm eval --task toy`")
        refuse(settings, cls.name, ("test_data", "reward_model"), "builds its own trees")

    def __init__(self, settings: TaskSettings, device: str = "cpu"):
        super().__init__(settings, device)
        self.env, self.roots = build_forest(settings.test_questions, self.depth, self.branching,
                                            self.value_noise, settings.seed)

    def train_problems(self) -> list[str]:
        return []

    def test_problems(self) -> list[str]:
        return list(self.roots)

    def policy_value(self, policy: str | None, generator: Callable[[str], Any], value_fn: Any, temperature: float,
                     legal_steps_only: bool) -> Any:
        """The tree's own priors and values: no policy, value model or generator is read."""
        from tsllm.envs.toy import FixedTreePolicyValue

        return FixedTreePolicyValue(self.env, seed=self.settings.seed)

    def row(self, state: Any, source: str, tokens: int) -> dict:
        root = str(state).split("/")[0] + "/root"
        return {"question": root, "steps": [str(state)], "reward": self.env.reward(state), "task": self.name,
                "source": source, "tokens": tokens}
