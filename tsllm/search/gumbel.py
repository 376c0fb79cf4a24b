"""Gumbel MCTS (Danihelka et al. 2022, "Policy improvement by planning with Gumbel"; the design of
mctx's `gumbel_muzero_policy`, re-derived here for batched LM trees).

Each move, at the move root:
1. Gumbel top-k: draw g(a) ~ gumbel_scale * Gumbel(0, 1) per child, logits(a) = log prior(a); the
   k = min(max_num_considered_actions, #children) children with the largest g + logits are
   considered (ties: the earlier child).
2. Sequential Halving: ceil(log2 k) phases (at least one). A phase with m survivors gives each of
   them max(1, num_simulations // (phases * m)) simulations, round-robin, best-ranked first (so a
   budget smaller than k visits the most promising); survivors are ranked by g + logits + σ(q̂)
   (ties: the earlier child) and after each phase the better half is kept (ceil(m/2), but never
   fewer than two while two remain: once down to two they keep sharing what is left of the
   budget). The move stops after `num_simulations` simulations, mid-phase if need be.
3. Commit the survivor with the largest g + logits + σ(q̂) (ties: the earlier child); keep its
   subtree and repeat until a terminal, `max_depth` or a node with no children.

q̂ is the completed Q: a visited child's mean backed-up value, an unvisited child's critic value
(children are critic-initialised, so this replaces the paper's mixed-value completion), min-max
normalised over the node's children to [0, 1] (all equal: all 0). σ(q̂) = (c_visit + max_visits) *
c_scale * q̂ with max_visits the largest child visit count at that node.

Below the move root, children are chosen by the paper's deterministic improved-policy rule (not
PUCT): π' = softmax(logits + σ(q̂)), pick argmax π'(a) - n(a) / (1 + Σ n) (ties: the earlier child).

Everything else -- lazy expansion, critic leaf values, the lockstep rounds with one batched expand
and one batched evaluate per round (the simulation driver, search/simulation.py), budgets, repeated
paths (`num_paths`, `tree_mode`), candidates and outputs -- is the move search of mcts_alpha.py.
`rng` draws the Gumbel noise only (once per move), so a fixed rng, or `gumbel_scale=0`, makes the
search deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from tsllm.search.mcts_alpha import argmax_first, run_move_search
from tsllm.search.simulation import RootSearch
from tsllm.search.tree import Node
from tsllm.types import Budget, Env, PolicyValueFn, SearchOutput


def sigma_q(node: Node, c_visit: float, c_scale: float) -> np.ndarray:
    """σ(q̂) for each child of `node`: completed Q, min-max normalised, scaled by visit count."""
    q = np.array([c.estimate for c in node.children], dtype=float)
    spread = q.max() - q.min()
    normalised = (q - q.min()) / spread if spread > 1e-12 else np.zeros_like(q)
    max_visits = max(c.visits for c in node.children)
    return (c_visit + max_visits) * c_scale * normalised


def prior_logits(node: Node) -> np.ndarray:
    return np.log(np.maximum([c.prior for c in node.children], 1e-30))


@dataclass
class Halving:
    """Sequential Halving state for one move root."""

    base: np.ndarray  # g(a) + logits(a) per child
    survivors: list[int]  # child indices still considered, best-ranked first
    queue: list[int]  # forced root children left in the current phase
    num_phases: int
    phases_started: int = 0


class GumbelRule:
    """Gumbel MCTS's rules: Gumbel top-k + Sequential Halving at the move root, the improved
    policy below it, commit the best survivor (see the module docstring)."""

    def __init__(self, num_simulations: int, max_num_considered_actions: int, gumbel_scale: float,
                 c_visit: float, c_scale: float):
        if max_num_considered_actions < 1:
            raise ValueError(f"max_num_considered_actions must be >= 1, got {max_num_considered_actions}")
        self.num_simulations = num_simulations
        self.k = max_num_considered_actions
        self.gumbel_scale, self.c_visit, self.c_scale = gumbel_scale, c_visit, c_scale

    def _halving(self, search: RootSearch, rng: np.random.Generator) -> Halving:
        if search.move_data is None:
            node = search.move_root
            n = len(node.children)
            base = self.gumbel_scale * rng.gumbel(size=n) + prior_logits(node)
            k = min(self.k, n)
            top = sorted(range(n), key=lambda i: (-base[i], i))[:k]
            search.move_data = Halving(base, top, [], max(1, math.ceil(math.log2(k))))
        return search.move_data

    def _scores(self, node: Node, halving: Halving) -> np.ndarray:
        return halving.base + sigma_q(node, self.c_visit, self.c_scale)

    def root_child(self, search: RootSearch, node: Node, rng: np.random.Generator) -> Node:
        halving = self._halving(search, rng)
        if not halving.queue:  # a phase starts: rank the survivors, halve after the first phase
            scores = self._scores(node, halving)
            ranked = sorted(halving.survivors, key=lambda i: (-scores[i], i))
            if halving.phases_started:
                m = len(ranked)
                ranked = ranked[:m if m <= 2 else max(2, math.ceil(m / 2))]
            halving.survivors = ranked
            per = max(1, self.num_simulations // (halving.num_phases * len(ranked)))
            halving.queue = ranked * per
            halving.phases_started += 1
        return node.children[halving.queue.pop(0)]

    def interior_child(self, node: Node) -> Node:
        logits = prior_logits(node) + sigma_q(node, self.c_visit, self.c_scale)
        policy = np.exp(logits - logits.max())
        policy /= policy.sum()
        visits = np.array([c.visits for c in node.children], dtype=float)
        return node.children[argmax_first(list(policy - visits / (1.0 + visits.sum())))]

    def commit(self, search: RootSearch, rng: np.random.Generator) -> Node:
        halving = self._halving(search, rng)
        scores = self._scores(search.move_root, halving)
        return search.move_root.children[max(halving.survivors, key=lambda i: (scores[i], -i))]


def gumbel_mcts(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, num_simulations: int = 16,
                width: int = 6, max_num_considered_actions: int = 16, gumbel_scale: float = 1.0,
                c_visit: float = 50.0, c_scale: float = 0.1, num_paths: int = 1,
                tree_mode: str = "intra", aggregation: str = "majority", max_depth: int | None = None,
                use_terminal_reward: bool = False, budget: Budget | None = None,
                rng: np.random.Generator | None = None) -> list[SearchOutput]:
    """Gumbel MCTS from every root (see the module docstring)."""
    rule = GumbelRule(num_simulations, max_num_considered_actions, gumbel_scale, c_visit, c_scale)
    return run_move_search(env, pv, roots, root_action_selection_fn=rule.root_child,
                           interior_action_selection_fn=rule.interior_child, commit_fn=rule.commit,
                           num_simulations=num_simulations, width=width, num_paths=num_paths,
                           tree_mode=tree_mode, max_depth=max_depth, use_terminal_reward=use_terminal_reward,
                           aggregation=aggregation, budget=budget,
                           rng=rng if rng is not None else np.random.default_rng(0))
