"""TS-LLM DFS-V: value-ordered depth-first search with pruning.

Each expanded node's children are scored by the critic and visited best value first (ties: the
earlier child in expansion order). Pruning, applied to each expanded node's children:
- `prune_threshold`: drop a child whose value < prune_threshold;
- `prune_ratio` r (0..1): drop a child whose value < best - (1 - r) * |best|, with best the highest
  sibling value; for best >= 0 that is "below r * best", and the best child itself is never dropped
  by this rule (only by the absolute threshold).
Terminal children are candidates (score = critic value) once the walk reaches them; the search
stops after `max_answers` of them, when the stack is empty, or when the root's budget is exhausted
(checked before each expansion; terminals already scored are still collected on the way, they cost
nothing). Nodes at `max_depth` are not expanded.

Roots advance together: each round pops, per unfinished root, the next node to expand; one
`pv.expand` call serves them all and one `pv.evaluate` call scores all their children.
`prior_weight` w > 0 ranks a non-terminal child by value + w·log(prior) instead (the policy's
prior as well as the critic, as PUCT mixes them; pruning reads the same score); 0 is TS-LLM's
value alone.

With `use_terminal_reward=True` (TS-LLM's DFS with a checker, as the loop's search sees game
outcomes) a terminal is ranked and scored by env.reward instead of the critic (terminal children
are not sent to the value model): a win is visited before its siblings, and a checked failure
(reward <= 0) is dropped when the walk reaches it, so the search backtracks to the next best
prefix instead of stopping there (counted in `stats["failures"]`).

answer: the best-valued candidate (with max_answers=1, the first found), or `aggregation`;
best_path: its path (the root alone when nothing was found). root_value is not defined (None).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from tsllm.search.aggregate import choose_candidate
from tsllm.search.tree import Node, evaluate_nodes, expand_nodes, make_budget, new_root, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput


def _keep(children: list[Node], threshold: float | None, ratio: float | None,
          worth=lambda c: c.value) -> list[Node]:
    """The children worth visiting, best first (`worth`: the critic value, or a terminal's reward)."""
    ranked = sorted(children, key=lambda c: -worth(c))  # stable: ties keep expansion order
    if not ranked:
        return []
    best = worth(ranked[0])
    if ratio is not None:
        ranked = [c for c in ranked if worth(c) >= best - (1.0 - ratio) * abs(best)]
    if threshold is not None:
        ranked = [c for c in ranked if worth(c) >= threshold]
    return ranked


def dfs(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, width: int = 8, max_answers: int = 1,
        prune_threshold: float | None = None, prune_ratio: float | None = None, max_depth: int | None = None,
        aggregation: str | None = None, use_terminal_reward: bool = False, prior_weight: float = 0.0,
        budget: Budget | None = None) -> list[SearchOutput]:
    """DFS-V from every root (deterministic)."""
    if prune_ratio is not None and not 0.0 <= prune_ratio <= 1.0:
        raise ValueError(f"prune_ratio must be in [0, 1], got {prune_ratio}")
    template = make_budget(budget)
    trees = [new_root(env, state, template) for state in roots]
    def score(node: Node) -> float:
        """A terminal's checked reward, else the critic's value (what candidates are scored by)."""
        return env.reward(node.state) if use_terminal_reward and node.terminal else node.value

    def worth(node: Node) -> float:
        """Where a child ranks among its siblings: its score, plus the prior's share for a non-terminal."""
        if prior_weight == 0 or (use_terminal_reward and node.terminal):
            return score(node)
        return node.value + prior_weight * math.log(max(node.prior, 1e-12))

    if not use_terminal_reward:
        evaluate_nodes(pv, [r for r in trees if r.terminal])  # a terminal root is its own answer
    stacks = [[r] for r in trees]  # top of stack = last element
    found: list[list[Candidate]] = [[] for _ in trees]
    pruned = [0] * len(trees)
    failures = [0] * len(trees)

    def next_to_expand(i: int) -> Node | None:
        stack, cands, root = stacks[i], found[i], trees[i]
        while stack and len(cands) < max_answers:
            node = stack[-1]
            if node.terminal:
                stack.pop()
                if use_terminal_reward and score(node) <= 0:
                    failures[i] += 1
                    continue
                cands.append(Candidate(node.path(), env.answer(node.state), score(node)))
            elif max_depth is not None and node.depth >= max_depth:
                stack.pop()
            elif root.budget.exhausted():
                return None
            else:
                return stack.pop()
        return None

    while True:
        picked = [(i, node) for i in range(len(trees)) if (node := next_to_expand(i)) is not None]
        if not picked:
            break
        expand_nodes(env, pv, [node for _, node in picked], width)
        evaluate_nodes(pv, [c for _, node in picked for c in node.children if not (use_terminal_reward and c.terminal)])
        for i, node in picked:
            kept = _keep(node.children, prune_threshold, prune_ratio, worth)
            pruned[i] += len(node.children) - len(kept)
            stacks[i].extend(reversed(kept))

    outputs = []
    for root, cands, n_pruned, n_failed in zip(trees, found, pruned, failures):
        answer, chosen = choose_candidate(cands, aggregation or "orm_max")
        outputs.append(SearchOutput(
            root=root.state, best_path=chosen.path if chosen is not None else [root.state], answer=answer,
            candidates=cands, tree=snapshot(root),
            stats={**tree_stats(root), "answers": len(cands), "pruned": n_pruned, "failures": n_failed},
            budget=root.budget,
        ))
    return outputs
