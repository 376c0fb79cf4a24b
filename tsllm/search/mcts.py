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

Roots advance in lockstep (the RAP walks of search/simulation.py's driver): a round walks every
unfinished root's current simulation as far as it can without the model -- completing, and backing
up, as many simulations as need none -- then makes one `pv.expand` call for all nodes met that need
expanding and one `pv.evaluate` call for their children and for any root that ends its own walk
(terminal, or given no children) and has no critic value yet (a terminal root under
`use_terminal_reward=True` needs none). A root stops after `num_simulations` completed simulations or when its
budget is exhausted (checked before each expansion; an interrupted simulation is dropped, not
backed up). best_path follows the most-visited child (ties: higher mean value, then earlier child);
candidates are all terminals reached, scored by their backed-up value, count = visits;
`root_value` is the root's mean backed-up value.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from functools import partial

from tsllm.search.simulation import RootSearch, simulate
from tsllm.search.tree import Node, iter_nodes, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput


def puct_child(node: Node, c_puct: float) -> Node:
    sqrt_n = math.sqrt(node.visits)
    return max(node.children, key=lambda c: c.estimate + c_puct * c.prior * sqrt_n / (1 + c.visits))


def uct_child(node: Node, c_puct: float) -> Node:
    unvisited = [c for c in node.children if c.visits == 0]
    if unvisited:
        return max(unvisited, key=lambda c: c.estimate)
    log_n = math.log(node.visits)
    return max(node.children, key=lambda c: c.q + c_puct * math.sqrt(log_n / c.visits))


def _until_simulations(search: RootSearch, rng: object, *, num_simulations: int) -> int:
    """One more simulation while fewer than `num_simulations` have completed (each completed one
    has visited the root once)."""
    return int(search.tree.visits < num_simulations)


def _most_visited_path(root: Node) -> list[Node]:
    path = [root]
    while any(c.visits for c in path[-1].children):
        path.append(max(path[-1].children, key=lambda c: (c.visits, c.q)))
    return path


def _output(env: Env, root: Node, budget: Budget) -> SearchOutput:
    path = _most_visited_path(root)
    reached = [n for n in iter_nodes(root) if n.terminal and n.visits]
    return SearchOutput(
        root=root.state,
        best_path=[n.state for n in path],
        answer=env.answer(path[-1].state) if path[-1].terminal else None,
        root_value=root.q if root.visits else None,
        candidates=[Candidate(n.path(), env.answer(n.state), n.q, count=n.visits) for n in reached],
        tree=snapshot(root),
        stats={**tree_stats(root), "simulations": root.visits},
        budget=budget,
    )


def mcts(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, num_simulations: int = 16,
         width: int = 8, c_puct: float = 1.0, selection: str = "puct", use_terminal_reward: bool = False,
         budget: Budget | None = None) -> list[SearchOutput]:
    """MCTS from every root (deterministic)."""
    if selection not in ("puct", "uct"):
        raise ValueError(f"selection must be 'puct' or 'uct', got {selection!r}")
    choose = partial(puct_child if selection == "puct" else uct_child, c_puct=c_puct)
    searches = simulate(env, pv, roots, plan_fn=partial(_until_simulations, num_simulations=num_simulations),
                        interior_action_selection_fn=choose, walk_to_end=True, width=width,
                        use_terminal_reward=use_terminal_reward, budget=budget)
    return [_output(env, s.tree, s.budget) for s in searches]
