"""The search-tree node every tree algorithm shares, plus batched expand/evaluate helpers that
charge each root's budget, and the JSON snapshot used by golden-tree tests.

One batched call rule: `expand_nodes` and `evaluate_nodes` take every node of every tree that
needs work this round and make exactly one `PolicyValueFn` call for them all.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from tsllm.types import Budget, Env, PolicyValueFn


class Node:
    __slots__ = (
        "state", "parent", "action", "prior", "step_score", "token_count", "children",
        "expanded", "terminal", "visits", "value_sum", "value", "depth", "budget",
    )

    def __init__(self, state: Hashable, budget: Budget, parent: Node | None = None, action=None,
                 prior: float = 1.0, step_score: float = 0.0, token_count: int = 0,
                 terminal: bool = False):
        self.state = state
        self.parent = parent
        self.action = action
        self.prior = prior
        self.step_score = step_score
        self.token_count = token_count
        self.children: list[Node] = []
        self.expanded = False
        self.terminal = terminal
        self.visits = 0
        self.value_sum = 0.0
        self.value: float | None = None  # critic estimate of this prefix, set once
        self.depth = 0 if parent is None else parent.depth + 1
        self.budget = budget  # the root's budget: every node of one tree shares it

    @property
    def q(self) -> float:
        """Mean backed-up value; 0 before any visit."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def estimate(self) -> float:
        """Q once visited; before that the critic's value (0 if unscored). Critic-initialised
        searches (MCTS-α, Gumbel, RAP-like MCTS) rank unvisited children by it."""
        if self.visits:
            return self.q
        return self.value if self.value is not None else 0.0

    def path(self) -> list[Hashable]:
        """States from the root to this node."""
        states, node = [], self
        while node is not None:
            states.append(node.state)
            node = node.parent
        return states[::-1]

    def __repr__(self) -> str:
        return f"Node({self.state!r}, visits={self.visits}, q={self.q:.3f})"


def new_root(env: Env, state: Hashable, budget: Budget, fresh: bool = True) -> Node:
    """A root node. With `fresh` (the default) it gets its own copy of the budget template;
    without, it spends `budget` itself (a new tree for a root already being searched)."""
    return Node(state, budget.fresh() if fresh else budget, terminal=env.is_terminal(state))


def expand_nodes(env: Env, pv: PolicyValueFn, nodes: Sequence[Node], width: int | Sequence[int]) -> None:
    """Expand every node in one batched policy call (`width`: one for all, or one per node);
    children get priors, step scores and token counts, and are marked terminal by the env.
    Already expanded or terminal nodes are skipped."""
    widths = [width] * len(nodes) if isinstance(width, int) else list(width)
    todo = [(n, w) for n, w in zip(nodes, widths, strict=True) if not n.expanded and not n.terminal]
    if not todo:
        return
    todo_nodes = [n for n, _ in todo]
    request = width if isinstance(width, int) else [w for _, w in todo]  # keep the int form when given
    for node, exp in zip(todo_nodes, pv.expand([n.state for n in todo_nodes], request)):
        node.budget.charge_expansion(exp)
        scores = exp.step_scores or [0.0] * len(exp.actions)
        for action, prior, tokens, score in zip(exp.actions, exp.priors, exp.token_counts, scores):
            child_state = env.step(node.state, action)
            node.children.append(Node(child_state, node.budget, node, action, prior, score, tokens,
                                      terminal=env.is_terminal(child_state)))
        node.expanded = True


def evaluate_nodes(pv: PolicyValueFn, nodes: Sequence[Node]) -> None:
    """Score every node that has no value yet in one batched value call (a node is scored once)."""
    seen: set[int] = set()
    todo = []
    for n in nodes:
        if n.value is None and id(n) not in seen:
            seen.add(id(n))
            todo.append(n)
    if not todo:
        return
    for node, value in zip(todo, pv.evaluate([n.state for n in todo])):
        node.value = float(value)
        node.budget.value_calls += 1


def _key(state: Hashable) -> str:
    return state if isinstance(state, str) else repr(state)


def _action(action: Any) -> Any:
    """A step as JSON holds it: text, a token id or a toy child id as is, anything else as its repr."""
    return action if action is None or isinstance(action, (str, int, float)) else repr(action)


def snapshot(root: Node, digits: int = 6) -> dict[str, Any]:
    """A JSON-serialisable picture of the tree: per node its state, the action (step) into it
    (None at the root; with it the tree can be replayed from the root state, as tree inspection
    does), visits, mean value, critic value and prior, children in creation order. Floats are
    rounded so golden files are stable."""

    def one(node: Node) -> dict[str, Any]:
        return {
            "state": _key(node.state),
            "action": _action(node.action),
            "visits": node.visits,
            "q": round(node.q, digits),
            "value": None if node.value is None else round(node.value, digits),
            "prior": round(node.prior, digits),
            "terminal": node.terminal,
            "children": [one(c) for c in node.children],
        }

    return one(root)


def iter_nodes(root: Node):
    """Every node of the tree, depth-first, children in creation order."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def tree_stats(root: Node) -> dict[str, float]:
    nodes = list(iter_nodes(root))
    return {"nodes": len(nodes), "max_depth": max(n.depth for n in nodes)}


def make_budget(budget: Budget | None) -> Budget:
    """The per-root budget template every algorithm takes: `budget`, or an unlimited one for None."""
    return budget if budget is not None else Budget()
