"""TS-LLM's AlphaZero-style searches: MCTS-α (search, commit a step, keep the subtree, repeat) and
MCTS-Rollout (simulate from the root until enough complete paths are reached), both rules over the
simulation driver of search/simulation.py (AlphaZero simulations), plus the move search (commit,
paths, outputs) that gumbel.py reuses with its own selection rules.

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

Rounds and batching (the driver's, see search/simulation.py): roots advance in lockstep. In each
round every unfinished root selects up to `parallel_simulations` leaves (default 1) by repeated
descents from its move root, a *virtual loss* (`virtual_loss`, default 1.0) laid on each path
before the next descent of the same round; then ONE `pv.expand` call serves all leaves of all roots
that can be expanded and ONE `pv.evaluate` call all new nodes, and every selected leaf backs up its
real value. A round never selects more simulations than the move has left, so a move still runs
exactly `num_simulations` (its last round may select fewer); with `parallel_simulations=1` no
descent ever sees a virtual loss and the search is the plain one-simulation-per-round search. A
root's budget is checked once per round, before its selections; the round completes, so spending
can pass a limit by at most `parallel_simulations` expansions per root (and their children's value
calls).

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
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import numpy as np

from tsllm.search.aggregate import AGGREGATORS, aggregate
from tsllm.search.simulation import (
    InteriorSelectionFn,
    RootSearch,
    RootSelectionFn,
    check_parallel,
    is_path_end,
    leaf_value,
    most_visited,
    needs_value,
    simulate,
    start_tree,
)
from tsllm.search.tree import Node, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput

C_BASE = 19652.0
C_INIT = 1.25
DIRICHLET_ALPHA = 0.3
NOISE_WEIGHT = 0.25

CommitFn = Callable[[RootSearch, np.random.Generator], Node]


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


def puct_child(node: Node, c_init: float = C_INIT, c_base: float = C_BASE) -> Node:
    """The child with the best PUCT score under the stored priors (ties: the earlier child)."""
    return node.children[argmax_first(puct_scores(node, [c.prior for c in node.children], c_init, c_base))]


# ----------------------------------------------------------------------------------------------
# Candidates from the ends of simulations or paths


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


def most_visited_end(node: Node) -> Node:
    """Where following the most-visited children from `node` leads (no new spending)."""
    while node.children:
        node = most_visited(node)
    return node


# ----------------------------------------------------------------------------------------------
# Move-based searches (MCTS-α here, Gumbel in gumbel.py): the plan that commits moves and ends
# paths between the driver's rounds


def _finish_path(env: Env, search: RootSearch, end: Node, *, num_paths: int, tree_mode: str) -> None:
    search.ends.append(end)
    search.end_trees.append(search.tree)
    if len(search.ends) >= num_paths or search.exhausted or search.budget.exhausted():
        search.done = True
    elif tree_mode == "inter":
        start_tree(env, search)
    else:
        search.move_root, search.move_sims, search.move_data = search.tree, 0, None


def plan_moves(search: RootSearch, rng: np.random.Generator, *, env: Env, commit_fn: CommitFn,
               num_simulations: int, num_paths: int, tree_mode: str, max_depth: int | None,
               use_terminal_reward: bool, parallel_simulations: int) -> int:
    """The driver's plan for a move search: do the free book-keeping (end paths, commit moves,
    start paths) until the move root needs work, then say how many simulations it runs this
    round -- up to `parallel_simulations`, never more than the move has left; an unexpanded move
    root is a round of its own, not one of `num_simulations`. 0 when the root is done."""
    while not search.done:
        root = search.move_root
        if is_path_end(root, max_depth) and not needs_value(root, use_terminal_reward):
            _finish_path(env, search, root, num_paths=num_paths, tree_mode=tree_mode)
            continue
        if root.children and search.move_sims >= num_simulations:
            search.move_root, search.move_sims, search.move_data = commit_fn(search, rng), 0, None
            continue
        if search.budget.exhausted():
            search.exhausted = True
            _finish_path(env, search, most_visited_end(root), num_paths=num_paths, tree_mode=tree_mode)
            continue
        if not root.children:
            return 1
        count = min(parallel_simulations, num_simulations - search.move_sims)
        search.move_sims += count
        search.simulations += count
        return count
    return 0


def run_move_search(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *,
                    root_action_selection_fn: RootSelectionFn,
                    interior_action_selection_fn: InteriorSelectionFn, commit_fn: CommitFn,
                    num_simulations: int, width: int, num_paths: int, tree_mode: str,
                    max_depth: int | None, use_terminal_reward: bool, aggregation: str,
                    budget: Budget | None, rng: np.random.Generator, parallel_simulations: int = 1,
                    virtual_loss: float = 1.0) -> list[SearchOutput]:
    """Search every root with the given rules (simulate, commit, repeat per path) and package
    the outputs."""
    if tree_mode not in ("intra", "inter"):
        raise ValueError(f"tree_mode must be 'intra' or 'inter', got {tree_mode!r}")
    if num_paths < 1:
        raise ValueError(f"num_paths must be >= 1, got {num_paths}")
    if num_simulations < 0:
        raise ValueError(f"num_simulations must be >= 0, got {num_simulations}")
    if aggregation not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {sorted(AGGREGATORS)}")
    check_parallel(parallel_simulations, virtual_loss)
    plan = partial(plan_moves, env=env, commit_fn=commit_fn, num_simulations=num_simulations,
                   num_paths=num_paths, tree_mode=tree_mode, max_depth=max_depth,
                   use_terminal_reward=use_terminal_reward, parallel_simulations=parallel_simulations)
    searches = simulate(env, pv, roots, plan_fn=plan, root_action_selection_fn=root_action_selection_fn,
                        interior_action_selection_fn=interior_action_selection_fn, width=width,
                        max_depth=max_depth, use_terminal_reward=use_terminal_reward,
                        virtual_loss=virtual_loss, budget=budget, rng=rng)
    return [_move_output(env, s, aggregation, use_terminal_reward) for s in searches]


def _move_output(env: Env, search: RootSearch, aggregation: str, use_terminal_reward: bool) -> SearchOutput:
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


class AlphaRule:
    """MCTS-α's rules: PUCT everywhere, optional Dirichlet noise at the move root, commit by
    visit counts."""

    def __init__(self, c_init: float, c_base: float, add_noise: bool, dirichlet_alpha: float,
                 noise_weight: float, temperature: float):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
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
        return puct_child(node, self.c_init, self.c_base)

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
    rule = AlphaRule(c_init, c_base, add_noise, dirichlet_alpha, noise_weight, temperature)
    return run_move_search(env, pv, roots, root_action_selection_fn=rule.root_child,
                           interior_action_selection_fn=rule.interior_child, commit_fn=rule.commit,
                           num_simulations=num_simulations, width=width, num_paths=num_paths,
                           tree_mode=tree_mode, max_depth=max_depth, use_terminal_reward=use_terminal_reward,
                           aggregation=aggregation, budget=budget,
                           rng=rng if rng is not None else np.random.default_rng(0),
                           parallel_simulations=parallel_simulations, virtual_loss=virtual_loss)


# ----------------------------------------------------------------------------------------------
# MCTS-Rollout


def plan_rollout(search: RootSearch, rng: Any, *, num_paths: int, max_simulations: int,
                 max_depth: int | None, parallel_simulations: int) -> int:
    """The driver's plan for MCTS-Rollout: stop once `num_paths` simulations ended at terminals,
    after `max_simulations`, at a root that cannot go anywhere, or on the budget (checked once per
    round); else as many simulations as neither limit is overshot by."""
    root = search.tree
    stuck = root.value is not None and is_path_end(root, max_depth) and not root.terminal
    if len(search.reached) >= num_paths or search.simulations >= max_simulations or stuck:
        return 0
    if search.budget.exhausted():
        search.exhausted = True
        return 0
    count = 1 if not root.children else min(
        parallel_simulations, num_paths - len(search.reached), max_simulations - search.simulations)
    search.simulations += count
    return count


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
    plan = partial(plan_rollout, num_paths=num_paths, max_simulations=max_simulations, max_depth=max_depth,
                   parallel_simulations=parallel_simulations)
    searches = simulate(env, pv, roots, plan_fn=plan,
                        interior_action_selection_fn=partial(puct_child, c_init=c_init, c_base=c_base),
                        width=width, max_depth=max_depth, use_terminal_reward=use_terminal_reward,
                        virtual_loss=virtual_loss, budget=budget)
    return [_rollout_output(env, s, aggregation, use_terminal_reward) for s in searches]


def _rollout_output(env: Env, search: RootSearch, aggregation: str, use_terminal_reward: bool) -> SearchOutput:
    root = search.tree
    ends = search.reached or [most_visited_end(root)]  # nothing complete: the most-visited path so far
    candidates = merge_paths(env, ends, use_terminal_reward)
    answer = aggregate(candidates, aggregation)
    return SearchOutput(
        root=root.state, best_path=candidates[choose_best(candidates, answer)].path, answer=answer,
        root_value=root.q if root.visits else None, candidates=candidates, tree=snapshot(root),
        stats={**tree_stats(root), "simulations": search.simulations, "paths": len(search.reached),
               "budget_exhausted": float(search.exhausted)},
        budget=search.budget)
