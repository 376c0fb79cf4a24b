"""Explicit trees for tests, docs and benchmarks: every search algorithm runs on them, so all
search logic is testable without a model.

`nodes[id]` holds:
  children  list of child ids (default [])
  score     local verifier score of the step into this node (default 0.0)
  value     heuristic / value estimate of this prefix (default 0.0)
  prior     policy prior of the step into this node; uniform over siblings if absent
  terminal  whether the prefix is complete (default: it has no children)
  reward    hidden outcome, read only by evaluation (default 0.0)
  answer    final answer at a terminal (default: the node id)
  tokens    policy tokens to generate the step into this node (default 1)
States are node ids; actions are child ids.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from tsllm.types import Expansion, Rollout

_FIELDS = {"children", "score", "value", "prior", "terminal", "reward", "answer", "tokens"}


class FixedTreeEnv:
    def __init__(self, nodes: Mapping[Hashable, Mapping[str, Any]], root: Hashable = "root"):
        if root not in nodes:
            raise ValueError(f"FixedTreeEnv: root {root!r} is not in nodes")
        for node_id, node in nodes.items():
            unknown = set(node) - _FIELDS
            if unknown:
                raise ValueError(f"FixedTreeEnv: node {node_id!r} has unknown fields {sorted(unknown)}")
            for child in node.get("children", []):
                if child not in nodes:
                    raise ValueError(f"FixedTreeEnv: node {node_id!r} names missing child {child!r}")
        self.nodes = nodes
        self.root = root

    def node(self, state: Hashable) -> Mapping[str, Any]:
        return self.nodes[state]

    def children(self, state: Hashable) -> list[Hashable]:
        return list(self.nodes[state].get("children", []))

    def initial_state(self, question: Any = None) -> Hashable:
        return question if question in self.nodes else self.root

    def step(self, state: Hashable, action: Hashable) -> Hashable:
        if action not in self.nodes[state].get("children", []):
            raise ValueError(f"FixedTreeEnv: {action!r} is not a child of {state!r}")
        return action

    def is_terminal(self, state: Hashable) -> bool:
        node = self.nodes[state]
        return bool(node.get("terminal", not node.get("children")))

    def reward(self, state: Hashable) -> float:
        return float(self.nodes[state].get("reward", 0.0))

    def answer(self, state: Hashable) -> Any:
        return self.nodes[state].get("answer", state)

    def legal_moves(self, state: Hashable) -> list[Hashable]:
        """A node's children are its legal moves (none at a terminal)."""
        return [] if self.is_terminal(state) else self.children(state)


class FixedTreePolicyValue:
    """The toy `PolicyValueFn`: reads priors, step scores and values off the tree.

    `expand(states, width)` returns up to `width` children in listed order (`width` is one int or
    one per state), keeping the `width` highest priors when there are more (ties: earlier listed
    child wins); priors are renormalised
    over the returned children. `rollout` samples children proportionally to their priors with a
    seeded generator, so runs are reproducible. Call counters let tests check batching.
    """

    def __init__(self, env: FixedTreeEnv, seed: int = 0):
        self.env = env
        self.rng = np.random.default_rng(seed)
        self.expand_calls = 0  # batched calls
        self.evaluate_calls = 0
        self.rollout_calls = 0
        self.states_expanded = 0
        self.states_evaluated = 0
        self.expand_batches: list[list[Hashable]] = []  # the states of each batched expand call

    def _priors(self, state: Hashable) -> tuple[list[Hashable], list[float]]:
        children = self.env.children(state)
        raw = [float(self.env.node(c).get("prior", 1.0)) for c in children]
        total = sum(raw)
        if total <= 0:
            return children, [1.0 / len(children)] * len(children) if children else []
        return children, [p / total for p in raw]

    def expand(self, states: Sequence[Hashable], width: int | Sequence[int]) -> list[Expansion]:
        widths = [width] * len(states) if isinstance(width, int) else list(width)
        if len(widths) != len(states):
            raise ValueError(f"expand: {len(widths)} widths for {len(states)} states")
        self.expand_calls += 1
        self.states_expanded += len(states)
        self.expand_batches.append(list(states))
        out = []
        for state, width in zip(states, widths):
            children, priors = self._priors(state)
            if width < len(children):
                keep = sorted(range(len(children)), key=lambda i: (-priors[i], i))[:width]
                keep.sort()
                children = [children[i] for i in keep]
                priors = [priors[i] for i in keep]
                total = sum(priors)
                priors = [p / total for p in priors] if total > 0 else [1.0 / len(priors)] * len(priors)
            out.append(
                Expansion(
                    actions=children,
                    priors=priors,
                    token_counts=[int(self.env.node(c).get("tokens", 1)) for c in children],
                    step_scores=[float(self.env.node(c).get("score", 0.0)) for c in children],
                )
            )
        return out

    def evaluate(self, states: Sequence[Hashable]) -> list[float]:
        self.evaluate_calls += 1
        self.states_evaluated += len(states)
        return [float(self.env.node(s).get("value", 0.0)) for s in states]

    def rollout(self, states: Sequence[Hashable], n: int) -> list[list[Rollout]]:
        self.rollout_calls += 1
        result = []
        for state in states:
            paths = []
            for _ in range(n):
                actions, tokens, logprob, cur = [], 0, 0.0, state
                while not self.env.is_terminal(cur):
                    children, priors = self._priors(cur)
                    i = int(self.rng.choice(len(children), p=priors))
                    cur = children[i]
                    actions.append(cur)
                    tokens += int(self.env.node(cur).get("tokens", 1))
                    logprob += float(np.log(max(priors[i], 1e-12)))
                paths.append(Rollout(actions=actions, token_count=tokens, logprob=logprob))
            result.append(paths)
        return result


def random_tree(depth: int, branching: int, seed: int = 0, prefix: str = "",
                value_noise: float | None = None, good_fraction: float = 0.25) -> dict[str, dict]:
    """A complete random tree for benchmarks, demos and property tests: `branching` children per
    node to `depth`; terminal leaves carry an answer (0 is right, reward +1; 1..3 are wrong,
    reward -1) so votes have something to agree on.

    With `value_noise=None` priors, scores and values are uniform noise (speed benchmarks). With a
    number, the tree is *informative*: each node's value is its true worth (2 x the fraction of
    right leaves below it, minus 1) plus Gaussian noise of that scale, step scores are the value
    change, and priors lean towards good children, so search can beat greedy decoding the way a
    learned critic lets it."""
    rng = np.random.default_rng(seed)
    root = prefix + "root"
    nodes: dict[str, dict] = {}

    truth: dict[str, float] = {}

    def build(node_id: str, d: int) -> None:
        if d == depth:
            answer = 0 if rng.random() < good_fraction else int(rng.integers(1, 4))
            nodes[node_id] = {"terminal": True, "answer": answer, "reward": 1.0 if answer == 0 else -1.0}
            truth[node_id] = nodes[node_id]["reward"]
            return
        children = [f"{node_id}.{i}" for i in range(branching)]
        for child in children:
            build(child, d + 1)
        nodes[node_id] = {"children": children}
        truth[node_id] = float(np.mean([truth[c] for c in children]))

    build(root, 0)
    for node_id, node in nodes.items():
        if value_noise is None:
            node.update(score=float(rng.uniform(-1, 1)), value=float(rng.uniform(-1, 1)),
                        prior=float(rng.uniform(0.05, 1.0)))
            continue
        parent = node_id.rsplit(".", 1)[0] if node_id != root else None
        value = float(np.clip(truth[node_id] + rng.normal(0, value_noise), -1, 1))
        node.update(value=value, score=value - (truth[parent] if parent else 0.0),
                    prior=float(np.exp(0.3 * truth[node_id] + rng.normal(0, 0.7))))
    return nodes
