"""TS-LLM's AlphaZero-style searches: MCTS-α (search, commit a step, keep the subtree, repeat) and
MCTS-Rollout (simulate from the root until enough complete paths are reached), plus the lockstep
simulation engine that gumbel.py reuses.

One simulation (both algorithms): from the move root, pick children by PUCT
    Q(c) + P(c) * (log((N + c_base + 1) / c_base) + c_init) * sqrt(N) / (1 + n(c))
(N = parent visits, n(c) = child visits, Q(c) = mean backed-up value, or the critic value of a
child not yet visited: children are initialised by the critic) down to a leaf: a node not yet
expanded, a terminal, a node at `max_depth`, or a node the policy gave no children. A leaf that can
be expanded is expanded lazily (only now that a simulation reached it) and its new children are
scored by the critic. The leaf's value -- its critic value (no rollout), or env.reward for a
terminal when `use_terminal_reward=True` -- is added to every node from the leaf up to the move
root (visits += 1, value_sum += v); nodes above the move root are left alone (AlphaZero: the
committed subtree is the new search tree).

Rounds and batching: roots advance in lockstep. In each round every unfinished root selects up to
`parallel_simulations` leaves (default 1) by repeated descents from its move root. After each
descent a *virtual loss* is laid on the path: every node from the leaf up to the move root counts
one extra visit worth `-virtual_loss` (default 1.0), so the next descent of the same round is
steered away from it. Then all leaves of all roots that can be expanded go into ONE `pv.expand`
call (a leaf selected twice is expanded once) and all new nodes into ONE `pv.evaluate` call; the
virtual losses are undone (each touched node gets its saved visits and value sum back exactly) and
every selected leaf backs up its real value, a duplicate once per selection. A round never selects
more simulations than the move has left, so a move still runs exactly `num_simulations` (its last
round may select fewer); with `parallel_simulations=1` no descent ever sees a virtual loss and the
search is the plain one-simulation-per-round search. A root's budget is checked once per round,
before its selections; the round completes, so spending can pass a limit by at most
`parallel_simulations` expansions per root (and their children's value calls).

MCTS-α moves: a move root that is not yet expanded is first expanded (this does not count as one of
the `num_simulations`); then `num_simulations` simulations run from it and a child is committed:
the most visited (ties: higher prior, then the earlier child in expansion order), or one sampled
with probability ∝ visits^(1/temperature) when `temperature > 0`. With `add_noise=True` the move
root's priors are mixed with Dirichlet(0.3) noise, weight 0.25, redrawn at each move, used only
by PUCT at that root (stored priors and snapshots stay clean). A path ends at a terminal, at
`max_depth` (steps from the root), or at a node with no children. When a root's budget runs out mid-path, the path is
completed along the most-visited children of the tree already built (no new spending) and no
further paths start.

Repeated searches (`num_paths`): `tree_mode="intra"` restarts from the root of the same tree, so
statistics accumulate across paths; `tree_mode="inter"` starts a fresh tree each time (recomputing
everything). Without noise or temperature the search is deterministic, so inter-tree paths repeat
exactly. Identical paths merge into one Candidate with `count` = how many times they were found;
the answer comes from `aggregation` (see search.aggregate) and `best_path` is the candidate with
that answer found most often (ties: higher score, then found first).

MCTS-Rollout (TS-LLM's offline variant): no commit step. Simulations run from the root until
`num_paths` simulations have ended at terminals, the budget is spent, or `max_simulations` is
reached (a safety stop for trees whose leaves are depth-capped). Each terminal reached is a
candidate; reaching the same terminal again adds a vote (`count`) rather than a new candidate. The
seed paper does not fix the vote, so `aggregation` defaults to "majority"; TS-LLM also reports
ORM-vote and ORM-max, available as "orm_vote" and "orm_max". With `parallel_simulations` > 1 a
round selects no more leaves than terminals are still wanted and simulations are left, so neither
`num_paths` nor `max_simulations` is overshot; an unexpanded root is a round (and one simulation)
of its own.

Candidate scores: a terminal scores env.reward when `use_terminal_reward=True`, otherwise its critic
value; a non-terminal end scores its critic value (0.0 if it was never scored) and has answer None.
`root_value` is the mean backed-up value of the root of the tree that produced `best_path`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from tsllm.search.aggregate import AGGREGATORS, aggregate
from tsllm.search.tree import Node, evaluate_nodes, expand_nodes, make_budget, new_root, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput

C_BASE = 19652.0
C_INIT = 1.25
DIRICHLET_ALPHA = 0.3
NOISE_WEIGHT = 0.25


# ----------------------------------------------------------------------------------------------
# Scores shared with gumbel.py


def puct_scores(node: Node, priors: Sequence[float], c_init: float = C_INIT,
                c_base: float = C_BASE) -> list[float]:
    """AlphaZero's PUCT for each child of `node` (priors passed in so root noise can replace them)."""
    n = node.visits
    explore = (math.log((n + c_base + 1.0) / c_base) + c_init) * math.sqrt(n)
    return [c.estimate + p * explore / (1 + c.visits) for c, p in zip(node.children, priors)]


def argmax_first(scores: Sequence[float]) -> int:
    """Index of the largest score; ties go to the earliest."""
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


def most_visited(node: Node) -> Node:
    """The child with most visits; ties: higher prior, then the earlier child."""
    best = node.children[0]
    for c in node.children[1:]:
        if (c.visits, c.prior) > (best.visits, best.prior):
            best = c
    return best


# ----------------------------------------------------------------------------------------------
# The lockstep engine: per round up to `parallel_simulations` simulations per unfinished root,
# one expand + one evaluate call for all of them


def can_expand(node: Node, max_depth: int | None) -> bool:
    return not node.terminal and not node.expanded and (max_depth is None or node.depth < max_depth)


def is_path_end(node: Node, max_depth: int | None) -> bool:
    """A committed node that ends the path: terminal, at the depth cap, or a policy dead end."""
    return node.terminal or (max_depth is not None and node.depth >= max_depth) or (
        node.expanded and not node.children)


def leaf_value(env: Env, node: Node, use_terminal_reward: bool) -> float:
    if use_terminal_reward and node.terminal:
        return env.reward(node.state)
    return node.value if node.value is not None else 0.0


def needs_value(node: Node, use_terminal_reward: bool) -> bool:
    return node.value is None and not (use_terminal_reward and node.terminal)


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


def descend(node: Node, choose, max_depth: int | None) -> Node:
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


def select_leaves(top: Node, count: int, descend_once, losses: VirtualLosses) -> list[Node]:
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


def simulate_round(env: Env, pv: PolicyValueFn, walks: Sequence[tuple[Node, Node]], *, width: int,
                   max_depth: int | None, use_terminal_reward: bool) -> None:
    """Finish one simulation per `(move_root, leaf)` pair: expand the leaves that can be expanded
    (one batched call; a leaf listed twice is expanded once), score new children and unscored
    leaves (one batched call), back up every pair. Virtual losses must be undone already."""
    grow = list(dict.fromkeys(leaf for _, leaf in walks if can_expand(leaf, max_depth)))
    expand_nodes(env, pv, grow, width)
    score = [leaf for _, leaf in walks if needs_value(leaf, use_terminal_reward)]
    evaluate_nodes(pv, score + [c for leaf in grow for c in leaf.children])
    for top, leaf in walks:
        backup(leaf, leaf_value(env, leaf, use_terminal_reward), top)


def end_answer(env: Env, node: Node) -> Any:
    return env.answer(node.state) if node.terminal else None


def merge_paths(env: Env, ends: Sequence[Node], use_terminal_reward: bool) -> list[Candidate]:
    """One Candidate per distinct path, in order of first appearance, count = times found."""
    merged: dict[tuple, Candidate] = {}
    for end in ends:
        path = end.path()
        key = tuple(path)
        if key in merged:
            merged[key].count += 1
        else:
            merged[key] = Candidate(path, end_answer(env, end), leaf_value(env, end, use_terminal_reward),
                                    terminal=end.terminal)
    return list(merged.values())


def choose_best(candidates: Sequence[Candidate], answer: Any) -> int:
    """Index of the candidate carrying `answer` found most often (ties: higher score, then first);
    the first candidate when no answer won."""
    best = 0
    found = False
    for i, c in enumerate(candidates):
        if c.answer != answer:
            continue
        if not found or (c.count, c.score) > (candidates[best].count, candidates[best].score):
            best, found = i, True
    return best


# ----------------------------------------------------------------------------------------------
# Move-based searches (MCTS-α here, Gumbel in gumbel.py): per-root state + a selection rule


@dataclass
class RootSearch:
    """Everything one root's search carries between rounds."""

    state: Hashable
    budget: Budget
    tree: Node | None = None  # the tree in use (a fresh one per path in inter-tree mode)
    trees: list[Node] = field(default_factory=list)
    move_root: Node | None = None
    move_sims: int = 0  # simulations run from the current move root
    move_data: Any = None  # per-move state of the selection rule (root noise, halving schedule)
    simulations: int = 0
    ends: list[Node] = field(default_factory=list)  # last node of each finished path
    end_trees: list[Node] = field(default_factory=list)
    exhausted: bool = False
    done: bool = False


class SelectionRule:
    """The variable parts of a move-based search."""

    num_simulations: int

    def root_child(self, search: RootSearch, node: Node, rng: np.random.Generator) -> Node:
        raise NotImplementedError

    def interior_child(self, node: Node) -> Node:
        raise NotImplementedError

    def commit(self, search: RootSearch, rng: np.random.Generator) -> Node:
        raise NotImplementedError


def _fresh_tree(env: Env, search: RootSearch) -> None:
    search.tree = new_root(env, search.state, search.budget, fresh=False)
    search.trees.append(search.tree)
    search.move_root, search.move_sims, search.move_data = search.tree, 0, None


def _finish_path(env: Env, search: RootSearch, end: Node, *, num_paths: int, tree_mode: str) -> None:
    search.ends.append(end)
    search.end_trees.append(search.tree)
    if len(search.ends) >= num_paths or search.exhausted or search.budget.exhausted():
        search.done = True
    elif tree_mode == "inter":
        _fresh_tree(env, search)
    else:
        search.move_root, search.move_sims, search.move_data = search.tree, 0, None


def _advance(env: Env, search: RootSearch, rule: SelectionRule, rng: np.random.Generator, *,
             num_paths: int, tree_mode: str, max_depth: int | None, use_terminal_reward: bool) -> bool:
    """Do the free book-keeping (end paths, commit moves, start paths) until the move root needs
    work: True when it does (expansion, or simulations left), False when the root is done."""
    while not search.done:
        root = search.move_root
        if is_path_end(root, max_depth) and not needs_value(root, use_terminal_reward):
            _finish_path(env, search, root, num_paths=num_paths, tree_mode=tree_mode)
            continue
        if root.children and search.move_sims >= rule.num_simulations:
            search.move_root, search.move_sims, search.move_data = rule.commit(search, rng), 0, None
            continue
        if search.budget.exhausted():
            search.exhausted = True
            node = root
            while node.children:
                node = most_visited(node)
            _finish_path(env, search, node, num_paths=num_paths, tree_mode=tree_mode)
            continue
        return True
    return False


def _round_leaves(search: RootSearch, rule: SelectionRule, rng: np.random.Generator,
                  losses: VirtualLosses, *, parallel_simulations: int, max_depth: int | None) -> list[Node]:
    """This round's leaves for a root that needs work: its move root alone when that is not
    expanded yet (not one of num_simulations), else up to `parallel_simulations` simulations,
    never more than the move has left."""
    root = search.move_root
    if not root.children:
        return [root]
    count = min(parallel_simulations, rule.num_simulations - search.move_sims)
    search.move_sims += count
    search.simulations += count
    return select_leaves(root, count, lambda: descend(rule.root_child(search, root, rng),
                                                      rule.interior_child, max_depth), losses)


def run_move_search(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], rule: SelectionRule, *,
                    width: int, num_paths: int, tree_mode: str, max_depth: int | None,
                    use_terminal_reward: bool, aggregation: str, template: Budget,
                    rng: np.random.Generator, parallel_simulations: int = 1,
                    virtual_loss: float = 1.0) -> list[SearchOutput]:
    """Search every root with `rule` in lockstep rounds and package the outputs."""
    if tree_mode not in ("intra", "inter"):
        raise ValueError(f"tree_mode must be 'intra' or 'inter', got {tree_mode!r}")
    if num_paths < 1:
        raise ValueError(f"num_paths must be >= 1, got {num_paths}")
    if rule.num_simulations < 0:
        raise ValueError(f"num_simulations must be >= 0, got {rule.num_simulations}")
    if aggregation not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {sorted(AGGREGATORS)}")
    check_parallel(parallel_simulations, virtual_loss)
    searches = []
    for state in roots:
        search = RootSearch(state, template.fresh())
        _fresh_tree(env, search)
        searches.append(search)
    while True:
        walks = []
        losses = VirtualLosses(virtual_loss)
        for search in searches:
            if _advance(env, search, rule, rng, num_paths=num_paths, tree_mode=tree_mode,
                        max_depth=max_depth, use_terminal_reward=use_terminal_reward):
                leaves = _round_leaves(search, rule, rng, losses, parallel_simulations=parallel_simulations,
                                       max_depth=max_depth)
                walks.extend((search.move_root, leaf) for leaf in leaves)
        if not walks:
            break
        losses.undo()
        simulate_round(env, pv, walks, width=width, max_depth=max_depth,
                       use_terminal_reward=use_terminal_reward)
    return [_output(env, s, aggregation, use_terminal_reward) for s in searches]


def _output(env: Env, search: RootSearch, aggregation: str, use_terminal_reward: bool) -> SearchOutput:
    candidates = merge_paths(env, search.ends, use_terminal_reward)
    answer = aggregate(candidates, aggregation)
    best = candidates[choose_best(candidates, answer)]
    tree = search.end_trees[[tuple(e.path()) for e in search.ends].index(tuple(best.path))]
    per_tree = [tree_stats(t) for t in search.trees]
    stats = {
        "nodes": sum(s["nodes"] for s in per_tree),
        "max_depth": max(s["max_depth"] for s in per_tree),
        "trees": len(search.trees),
        "paths": len(search.ends),
        "simulations": search.simulations,
        "budget_exhausted": float(search.exhausted),
    }
    return SearchOutput(
        root=search.state, best_path=best.path, answer=answer,
        root_value=tree.q if tree.visits else None, candidates=candidates, tree=snapshot(tree),
        stats=stats, budget=search.budget)


# ----------------------------------------------------------------------------------------------
# MCTS-α


class AlphaRule(SelectionRule):
    """PUCT everywhere, optional Dirichlet noise at the move root, commit by visit counts."""

    def __init__(self, num_simulations: int, c_init: float, c_base: float, add_noise: bool,
                 dirichlet_alpha: float, noise_weight: float, temperature: float):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.num_simulations = num_simulations
        self.c_init, self.c_base = c_init, c_base
        self.add_noise, self.alpha, self.eps = add_noise, dirichlet_alpha, noise_weight
        self.temperature = temperature

    def root_child(self, search: RootSearch, node: Node, rng: np.random.Generator) -> Node:
        priors = [c.prior for c in node.children]
        if self.add_noise:
            if search.move_data is None:  # one draw per move, kept for all its simulations
                noise = rng.dirichlet([self.alpha] * len(priors))
                search.move_data = [(1 - self.eps) * p + self.eps * float(x) for p, x in zip(priors, noise)]
            priors = search.move_data
        return node.children[argmax_first(puct_scores(node, priors, self.c_init, self.c_base))]

    def interior_child(self, node: Node) -> Node:
        priors = [c.prior for c in node.children]
        return node.children[argmax_first(puct_scores(node, priors, self.c_init, self.c_base))]

    def commit(self, search: RootSearch, rng: np.random.Generator) -> Node:
        node = search.move_root
        visits = np.array([c.visits for c in node.children], dtype=float)
        if self.temperature == 0 or visits.sum() == 0:
            return most_visited(node)
        logs = np.where(visits > 0, np.log(np.maximum(visits, 1e-300)), -np.inf) / self.temperature
        weights = np.exp(logs - logs.max())
        return node.children[int(rng.choice(len(weights), p=weights / weights.sum()))]


def mcts_alpha(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, num_simulations: int = 10,
               width: int = 6, c_init: float = C_INIT, c_base: float = C_BASE, add_noise: bool = False,
               dirichlet_alpha: float = DIRICHLET_ALPHA, noise_weight: float = NOISE_WEIGHT,
               temperature: float = 0.0, num_paths: int = 1, tree_mode: str = "intra",
               aggregation: str = "majority", max_depth: int | None = None,
               use_terminal_reward: bool = False, parallel_simulations: int = 1,
               virtual_loss: float = 1.0, budget: Budget | None = None,
               rng: np.random.Generator | None = None) -> list[SearchOutput]:
    """TS-LLM MCTS-α from every root (see the module docstring; `parallel_simulations` and
    `virtual_loss` under "Rounds and batching"). `rng` drives root noise and temperature sampling
    only; with neither the search is deterministic."""
    template = make_budget(budget)
    rule = AlphaRule(num_simulations, c_init, c_base, add_noise, dirichlet_alpha, noise_weight, temperature)
    return run_move_search(env, pv, roots, rule, width=width, num_paths=num_paths, tree_mode=tree_mode,
                           max_depth=max_depth, use_terminal_reward=use_terminal_reward,
                           aggregation=aggregation, template=template,
                           rng=rng if rng is not None else np.random.default_rng(0),
                           parallel_simulations=parallel_simulations, virtual_loss=virtual_loss)


# ----------------------------------------------------------------------------------------------
# MCTS-Rollout


def mcts_rollout(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, num_paths: int = 8,
                 width: int = 6, c_init: float = C_INIT, c_base: float = C_BASE,
                 aggregation: str = "majority", max_simulations: int = 1000,
                 max_depth: int | None = None, use_terminal_reward: bool = False,
                 parallel_simulations: int = 1, virtual_loss: float = 1.0,
                 budget: Budget | None = None) -> list[SearchOutput]:
    """TS-LLM MCTS-Rollout from every root (see the module docstring; deterministic)."""
    if num_paths < 1:
        raise ValueError(f"num_paths must be >= 1, got {num_paths}")
    if aggregation not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {sorted(AGGREGATORS)}")
    check_parallel(parallel_simulations, virtual_loss)
    template = make_budget(budget)
    trees = [new_root(env, s, template) for s in roots]
    reached: list[list[Node]] = [[] for _ in trees]
    sims = [0] * len(trees)
    exhausted = [False] * len(trees)

    def choose(node: Node) -> Node:
        priors = [c.prior for c in node.children]
        return node.children[argmax_first(puct_scores(node, priors, c_init, c_base))]

    while True:
        walks, owners = [], []
        losses = VirtualLosses(virtual_loss)
        for i, root in enumerate(trees):
            stuck = root.value is not None and is_path_end(root, max_depth) and not root.terminal
            if len(reached[i]) >= num_paths or sims[i] >= max_simulations or stuck or exhausted[i]:
                continue
            if root.budget.exhausted():
                exhausted[i] = True
                continue
            count = 1 if not root.children else min(
                parallel_simulations, num_paths - len(reached[i]), max_simulations - sims[i])
            sims[i] += count
            for leaf in select_leaves(root, count, partial(descend, root, choose, max_depth), losses):
                walks.append((root, leaf))
                owners.append(i)
        if not walks:
            break
        losses.undo()
        simulate_round(env, pv, walks, width=width, max_depth=max_depth,
                       use_terminal_reward=use_terminal_reward)
        for i, (_, leaf) in zip(owners, walks):
            if leaf.terminal:
                reached[i].append(leaf)

    outputs = []
    for root, found, n, out_of_budget in zip(trees, reached, sims, exhausted):
        ends = found
        if not ends:  # nothing complete: report the most-visited path so far
            node = root
            while node.children:
                node = most_visited(node)
            ends = [node]
        candidates = merge_paths(env, ends, use_terminal_reward)
        answer = aggregate(candidates, aggregation)
        outputs.append(SearchOutput(
            root=root.state, best_path=candidates[choose_best(candidates, answer)].path, answer=answer,
            root_value=root.q if root.visits else None, candidates=candidates, tree=snapshot(root),
            stats={**tree_stats(root), "simulations": n, "paths": len(found),
                   "budget_exhausted": float(out_of_budget)},
            budget=root.budget))
    return outputs
