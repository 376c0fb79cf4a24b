"""The one simulation driver behind `mcts`, `mcts_alpha`, `mcts_rollout` and `gumbel_mcts`.

As in mctx's `search`, the loop lives here and each algorithm passes in its rules as functions:
- `root_action_selection_fn(search, node, rng) -> child`: the first step of a simulation, at the
  move root (default: the interior rule);
- `interior_action_selection_fn(node) -> child`: every later step;
- `plan_fn(search, rng) -> int`: called for a root before each of its rounds (in RAP walks, before
  each of its simulations); it does the algorithm's free book-keeping (commit a move, end a path,
  check the budget, count simulations) and says how many simulations the root starts now, 0 when
  its search is over.

A simulation descends from the root's move root (`RootSearch.move_root`; the tree root unless the
algorithm commits moves) until a leaf: a node not yet expanded, or an *end* -- a terminal, a node
at `max_depth`, or a node the policy gave no children. A leaf that can be expanded is expanded
lazily (only now that a simulation reached it) and its new children are scored by the critic. A
simulation's value -- the critic value of the node it stops at, or env.reward for a terminal when
`use_terminal_reward=True` (0.0 for a node never scored) -- is added to every node from that node
up to the move root (visits += 1, value_sum += v); nodes above the move root are left alone.

Two kinds of simulation:
- AlphaZero (`walk_to_end=False`; mcts_alpha, mcts_rollout, gumbel_mcts): a simulation stops at its
  leaf and backs up the leaf's value in the same round (the leaf is scored first if it has none).
- RAP (`walk_to_end=True`; mcts): a simulation walks on through the leaf it expanded, in the next
  round, until an end, and backs up only the end's value (an end without a value is scored first).
  A walk that gets to an end without the model is backed up at once and the root's next
  simulation starts in the same round, so a root spends rounds only on model work. The budget is
  checked before each expansion: when it is exhausted the root's search is over and the walk in
  flight is dropped (not backed up). One walk per root is in flight.

Rounds and batching: roots advance in lockstep. In each round every unfinished root contributes
its simulations' leaves; then all leaves of all roots that can be expanded go into ONE `pv.expand`
call (a leaf selected twice is expanded once) and every node that needs a value into ONE
`pv.evaluate` call. AlphaZero roots may start several simulations a round (`parallel_simulations`
in the plan): after each descent a *virtual loss* is laid on the path -- every node from the leaf
up to the move root counts one extra visit worth `-virtual_loss` -- so the next descent of the
same round is steered away from it; the losses are undone before the model round (each touched
node gets its saved visits and value sum back exactly), and every selected leaf backs up its real
value, a duplicate once per selection. A move root that has no children yet is a round's only
leaf for its root, whatever the plan asked. Search is deterministic given the rules: any
randomness is theirs, drawn from the `rng` passed to them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsllm.search.tree import Node, evaluate_nodes, expand_nodes, make_budget, new_root
from tsllm.types import Budget, Env, PolicyValueFn


@dataclass
class RootSearch:
    """Everything one root's search carries between rounds."""

    state: Hashable
    budget: Budget
    tree: Node | None = None  # the tree in use (a fresh one per path in inter-tree mode)
    trees: list[Node] = field(default_factory=list)
    move_root: Node | None = None  # where simulations start and backups stop
    move_sims: int = 0  # simulations run from the current move root
    move_data: Any = None  # per-move state of the selection rule (root noise, halving schedule)
    simulations: int = 0  # as the plan counts them
    ends: list[Node] = field(default_factory=list)  # last node of each finished path (move searches)
    end_trees: list[Node] = field(default_factory=list)
    reached: list[Node] = field(default_factory=list)  # the terminal of each simulation that ended at one
    walk: Node | None = None  # RAP: where the simulation in flight stands
    exhausted: bool = False
    done: bool = False


PlanFn = Callable[[RootSearch, Any], int]
RootSelectionFn = Callable[[RootSearch, Node, Any], Node]
InteriorSelectionFn = Callable[[Node], Node]


def start_tree(env: Env, search: RootSearch) -> None:
    """Give `search` a new tree (spending its own budget) and start a move at its root."""
    search.tree = new_root(env, search.state, search.budget, fresh=False)
    search.trees.append(search.tree)
    search.move_root, search.move_sims, search.move_data = search.tree, 0, None


# ----------------------------------------------------------------------------------------------
# Nodes along a simulation


def can_expand(node: Node, max_depth: int | None) -> bool:
    return not node.terminal and not node.expanded and (max_depth is None or node.depth < max_depth)


def is_path_end(node: Node, max_depth: int | None) -> bool:
    """A node no simulation goes past: terminal, at the depth cap, or a policy dead end."""
    return node.terminal or (max_depth is not None and node.depth >= max_depth) or (
        node.expanded and not node.children)


def leaf_value(env: Env, node: Node, use_terminal_reward: bool) -> float:
    if use_terminal_reward and node.terminal:
        return env.reward(node.state)
    return node.value if node.value is not None else 0.0


def needs_value(node: Node, use_terminal_reward: bool) -> bool:
    return node.value is None and not (use_terminal_reward and node.terminal)


def most_visited(node: Node) -> Node:
    """The child with most visits; ties: higher prior, then the earlier child."""
    best = node.children[0]
    for c in node.children[1:]:
        if (c.visits, c.prior) > (best.visits, best.prior):
            best = c
    return best


def path_up(leaf: Node, top: Node):
    """The nodes from `leaf` up to and including `top` (the move root)."""
    node: Node | None = leaf
    while node is not None:
        yield node
        if node is top:
            break
        node = node.parent


def backup(leaf: Node, value: float, top: Node) -> None:
    """Add `value` to every node from `leaf` up to and including `top` (the move root)."""
    for node in path_up(leaf, top):
        node.visits += 1
        node.value_sum += value


def descend(node: Node, choose: InteriorSelectionFn, max_depth: int | None) -> Node:
    """Follow `choose(node) -> child` from `node` until a leaf."""
    while node.children and (max_depth is None or node.depth < max_depth):
        node = choose(node)
    return node


class VirtualLosses:
    """The virtual losses of one round: each `add` counts one visit worth `-loss` on every node
    from a selected leaf up to the move root, so later descents of the round look elsewhere.
    `undo` puts back the visits and value sums saved before the first loss touched each node, so
    no rounding is left behind."""

    def __init__(self, loss: float):
        self.loss = loss
        self.saved: dict[int, tuple[Node, int, float]] = {}

    def add(self, leaf: Node, top: Node) -> None:
        for node in path_up(leaf, top):
            self.saved.setdefault(id(node), (node, node.visits, node.value_sum))
            node.visits += 1
            node.value_sum -= self.loss

    def undo(self) -> None:
        for node, visits, value_sum in self.saved.values():
            node.visits, node.value_sum = visits, value_sum
        self.saved.clear()


def select_leaves(top: Node, count: int, descend_once: Callable[[], Node], losses: VirtualLosses) -> list[Node]:
    """`count` leaves from `descend_once()`, a virtual loss laid on each path before the next
    descent (the last path needs none: nothing descends after it this round)."""
    leaves: list[Node] = []
    for _ in range(count):
        if leaves:
            losses.add(leaves[-1], top)
        leaves.append(descend_once())
    return leaves


def check_parallel(parallel_simulations: int, virtual_loss: float) -> None:
    if parallel_simulations < 1:
        raise ValueError(f"parallel_simulations must be >= 1, got {parallel_simulations}")
    if virtual_loss < 0:
        raise ValueError(f"virtual_loss must be >= 0, got {virtual_loss}")


# ----------------------------------------------------------------------------------------------
# The driver


@dataclass(frozen=True)
class _Rules:
    plan: PlanFn
    root_child: RootSelectionFn
    interior_child: InteriorSelectionFn
    max_depth: int | None


def _alphazero_leaves(search: RootSearch, rules: _Rules, rng: Any, losses: VirtualLosses) -> list[Node]:
    """This round's leaves for one root: as many simulations as the plan starts."""
    count = rules.plan(search, rng)
    if count <= 0:
        search.done = True
        return []
    top = search.move_root
    if not top.children:
        return [top]
    return select_leaves(top, count, lambda: descend(rules.root_child(search, top, rng), rules.interior_child,
                                                     rules.max_depth), losses)


def _rap_leaves(env: Env, search: RootSearch, rules: _Rules, rng: Any, use_terminal_reward: bool) -> list[Node]:
    """Walk the root's simulations on, backing up those that end without the model, until one
    needs the model: [that node], or [] when the root's search is over."""
    top = search.move_root
    while True:
        node = search.walk
        if node is None:
            if rules.plan(search, rng) <= 0:
                search.done = True
                return []
            node = top
        if node is top and node.children:
            node = rules.root_child(search, node, rng)
        node = descend(node, rules.interior_child, rules.max_depth)
        if is_path_end(node, rules.max_depth) and not needs_value(node, use_terminal_reward):
            backup(node, leaf_value(env, node, use_terminal_reward), top)
            if node.terminal:
                search.reached.append(node)
            search.walk = None
            continue
        if can_expand(node, rules.max_depth) and search.budget.exhausted():
            search.walk, search.exhausted, search.done = None, True, True
            return []
        search.walk = node
        return [node]


def _model_round(env: Env, pv: PolicyValueFn, walks: Sequence[tuple[RootSearch, Node]], *, width: int,
                 max_depth: int | None, use_terminal_reward: bool, walk_to_end: bool) -> None:
    """One batched expand of the leaves that can be expanded (a leaf listed twice is expanded
    once), one batched evaluate of their new children and of the leaves whose own value is about
    to be backed up, then (AlphaZero) the backups. Virtual losses must be undone already."""
    grow = list(dict.fromkeys(leaf for _, leaf in walks if can_expand(leaf, max_depth)))
    growing = {id(leaf) for leaf in grow}
    score = [leaf for _, leaf in walks if needs_value(leaf, use_terminal_reward)
             and not (walk_to_end and id(leaf) in growing)]  # a RAP walk goes on past the leaf it expands
    expand_nodes(env, pv, grow, width)
    evaluate_nodes(pv, score + [c for leaf in grow for c in leaf.children])
    if walk_to_end:
        return
    for search, leaf in walks:
        backup(leaf, leaf_value(env, leaf, use_terminal_reward), search.move_root)
        if leaf.terminal:
            search.reached.append(leaf)


def simulate(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, plan_fn: PlanFn,
             interior_action_selection_fn: InteriorSelectionFn,
             root_action_selection_fn: RootSelectionFn | None = None, width: int,
             max_depth: int | None = None, use_terminal_reward: bool = False, walk_to_end: bool = False,
             virtual_loss: float = 1.0, budget: Budget | None = None, rng: Any = None) -> list[RootSearch]:
    """Run simulations from every root in lockstep rounds until every root's plan says stop.

    Args:
      env, pv, roots: the search problem; each root gets a fresh copy of `budget` (None: unlimited).
      plan_fn, root_action_selection_fn, interior_action_selection_fn: the rules (module docstring).
      width: children asked of the policy per expansion.
      max_depth: nodes at this depth are ends (None: no cap).
      use_terminal_reward: back up env.reward at terminals instead of the critic value.
      walk_to_end: RAP simulations instead of AlphaZero ones (module docstring).
      virtual_loss: the loss laid on each path between a round's descents of one root.
      rng: handed to the rules, which alone draw from it.

    Returns:
      One RootSearch per root, in order, with its trees and counters for the caller to package.
    """
    root_child = root_action_selection_fn or (lambda search, node, rng: interior_action_selection_fn(node))
    rules = _Rules(plan_fn, root_child, interior_action_selection_fn, max_depth)
    template = make_budget(budget)
    searches = []
    for state in roots:
        search = RootSearch(state, template.fresh())
        start_tree(env, search)
        searches.append(search)
    while True:
        losses = VirtualLosses(virtual_loss)
        walks = []
        for search in searches:
            if search.done:
                continue
            leaves = (_rap_leaves(env, search, rules, rng, use_terminal_reward) if walk_to_end
                      else _alphazero_leaves(search, rules, rng, losses))
            walks.extend((search, leaf) for leaf in leaves)
        if not walks:
            return searches
        losses.undo()
        _model_round(env, pv, walks, width=width, max_depth=max_depth, use_terminal_reward=use_terminal_reward,
                     walk_to_end=walk_to_end)
