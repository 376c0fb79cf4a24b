"""RAP-style MCTS: every simulation walks from the root to a terminal, expanding on the way.

One simulation: from the root, pick a child by PUCT (or UCT) at each expanded node; an unexpanded
node is expanded (its children scored by the critic in the same round) and the walk continues
from it, until a terminal. The terminal's value (critic value, or env.reward when
`use_terminal_reward=True`) is added to every node on the path (visits += 1, value_sum += v).
A non-terminal node the policy gave no children ends the walk like a terminal, with its critic value.

Selection (Q(c) = mean backed-up value, or the critic value of a child not yet visited):
- "puct": Q(c) + c_puct * P(c) * sqrt(N(parent)) / (1 + N(c));
- "uct":  unvisited children first (highest critic value first), then Q(c) + c_puct * sqrt(ln N(parent) / N(c)).
Ties go to the earlier child in expansion order.

Roots advance in lockstep: a round walks every unfinished root's current simulation as far as
it can without the model, then makes one `pv.expand` call for all nodes met that need expanding
and one `pv.evaluate` call for their children. A root stops after `num_simulations` completed
simulations or when its budget is exhausted (checked before each expansion; an interrupted
simulation is dropped, not backed up). best_path follows the most-visited child (ties: higher
mean value, then earlier child); candidates are all terminals reached, scored by their backed-up
value, count = visits; `root_value` is the root's mean backed-up value.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from tsllm.search.tree import (
    Node,
    evaluate_nodes,
    expand_nodes,
    iter_nodes,
    make_budget,
    new_root,
    snapshot,
    tree_stats,
)
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput


def _select(node: Node, c_puct: float, selection: str) -> Node:
    children = node.children
    if selection == "uct":
        unvisited = [c for c in children if c.visits == 0]
        if unvisited:
            return max(unvisited, key=lambda c: c.estimate)
        log_n = math.log(node.visits)
        return max(children, key=lambda c: c.q + c_puct * math.sqrt(log_n / c.visits))
    sqrt_n = math.sqrt(node.visits)
    return max(children, key=lambda c: c.estimate + c_puct * c.prior * sqrt_n / (1 + c.visits))


def _backup(leaf: Node, value: float) -> None:
    node: Node | None = leaf
    while node is not None:
        node.visits += 1
        node.value_sum += value
        node = node.parent


def _most_visited_path(root: Node) -> list[Node]:
    path = [root]
    while any(c.visits for c in path[-1].children):
        path.append(max(path[-1].children, key=lambda c: (c.visits, c.q)))
    return path


def mcts(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, num_simulations: int = 16,
         width: int = 8, c_puct: float = 1.0, selection: str = "puct", use_terminal_reward: bool = False,
         budget: Budget | None = None) -> list[SearchOutput]:
    """MCTS from every root (deterministic)."""
    if selection not in ("puct", "uct"):
        raise ValueError(f"selection must be 'puct' or 'uct', got {selection!r}")
    template = make_budget(budget)
    trees = [new_root(env, state, template) for state in roots]
    evaluate_nodes(pv, [r for r in trees if r.terminal])  # a terminal root is its own leaf

    def leaf_value(node: Node) -> float:
        if use_terminal_reward and node.terminal:
            return env.reward(node.state)
        return node.value if node.value is not None else 0.0

    cursor = list(trees)  # where each root's in-flight simulation stands
    done = [0] * len(trees)
    active = [num_simulations > 0] * len(trees)
    while any(active):
        need: list[Node] = []
        for i, root in enumerate(trees):
            node = cursor[i]
            while active[i]:
                if node.terminal or (node.expanded and not node.children):
                    _backup(node, leaf_value(node))
                    done[i] += 1
                    active[i] = done[i] < num_simulations
                    node = root
                elif not node.expanded:
                    if root.budget.exhausted():
                        active[i] = False
                    else:
                        need.append(node)
                    break
                else:
                    node = _select(node, c_puct, selection)
            cursor[i] = node
        expand_nodes(env, pv, need, width)
        evaluate_nodes(pv, [c for n in need for c in n.children])

    outputs = []
    for root, sims in zip(trees, done):
        path = _most_visited_path(root)
        reached = [n for n in iter_nodes(root) if n.terminal and n.visits]
        outputs.append(SearchOutput(
            root=root.state,
            best_path=[n.state for n in path],
            answer=env.answer(path[-1].state) if path[-1].terminal else None,
            root_value=root.q if root.visits else None,
            candidates=[Candidate(n.path(), env.answer(n.state), n.q, count=n.visits) for n in reached],
            tree=snapshot(root),
            stats={**tree_stats(root), "simulations": sims},
            budget=root.budget,
        ))
    return outputs


