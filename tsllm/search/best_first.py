"""Best-first prefix search with max backup (the prefix-search tutorial, docs/ARCHITECTURE.md section 4).

The visible tree grows one prefix at a time:
- frontier: visible, unexpanded, non-terminal prefixes;
- priority of a frontier prefix n: g(n) + h(n), where g is the sum of the step scores
  (`Expansion.step_scores`) along the path from the root and h the critic value of the prefix;
- backed-up value V: a terminal is 0 (no future score), an unexpanded prefix is h, an expanded one
  is the max over its visible children c of (step_score(c) + V(c)); an expanded prefix the policy
  gave no children keeps h (0 for the root, which is never scored: nothing ranks it);
- recommended path: from the root, follow the child with the best step_score + V down to a leaf of
  the visible tree; `answer` is env.answer of that leaf when it is terminal, else None;
- `root_value` = V(root) (None when the root was never expanded).

The search starts, as in the tutorial, from T_0 = the root and its children: the root's own expansion
reveals the first frontier and is not counted against `max_expansions` (its tokens and value calls
still count), so `Budget(max_expansions=2)` expands the root and then two frontier prefixes. The reported
budget shows all expansions, the root's included.

Ties go to the earlier-created prefix (children in the order the policy listed them).
Each round expands the top `expand_per_round` frontier prefixes of every unfinished root in one
`pv.expand` call, then scores the new non-terminal children in one `pv.evaluate` call (terminals
need no heuristic). Limits are checked before each round, so the last round may overshoot a token
limit by what its expansions generated. In the snapshot an expanded node has visits=1 and q=V.
Candidates are the visible terminals, scored by g (their total step score), best first.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from itertools import count

from tsllm.search.tree import Node, evaluate_nodes, expand_nodes, make_budget, new_root, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput


class _Search:
    """One root's frontier (a heap on -(g + h), then creation order) and backed-up values."""

    def __init__(self, root: Node):
        self.root, self.order = root, count()
        self.g: dict[Node, float] = {root: 0.0}
        self.heap: list[tuple[float, int, Node]] = []
        if not root.terminal:
            heapq.heappush(self.heap, (0.0, next(self.order), root))

    def pop(self, k: int) -> list[Node]:
        budget = self.root.budget
        if budget.exhausted():
            return []
        if budget.max_expansions is not None:
            k = min(k, budget.max_expansions - budget.expansions)
        return [heapq.heappop(self.heap)[2] for _ in range(min(k, len(self.heap)))]

    def v(self, node: Node) -> float:
        if node.terminal:
            return 0.0
        if node.expanded and node.children:
            return node.value_sum  # visits is 1 for expanded nodes, so q == value_sum == V
        return node.value if node.value is not None else 0.0

    def best_child(self, node: Node) -> Node:
        return max(node.children, key=lambda c: c.step_score + self.v(c))  # max keeps the first tie

    def expanded(self, node: Node) -> None:
        """Push the new children onto the frontier, then back V up from `node` to the root."""
        for child in node.children:
            self.g[child] = self.g[node] + child.step_score
            if not child.terminal:
                heapq.heappush(self.heap, (-(self.g[child] + child.value), next(self.order), child))
        while node is not None:
            node.visits = 1
            node.value_sum = max((c.step_score + self.v(c) for c in node.children), default=self.v(node))
            node = node.parent

    def output(self, env: Env) -> SearchOutput:
        path = [self.root]
        while path[-1].children:
            path.append(self.best_child(path[-1]))
        leaf = path[-1]
        terminals = [n for n in self.g if n.terminal]
        candidates = sorted(
            (Candidate(n.path(), env.answer(n.state), self.g[n]) for n in terminals),
            key=lambda c: -c.score,
        )
        root = self.root
        return SearchOutput(
            root=root.state,
            best_path=[n.state for n in path],
            answer=env.answer(leaf.state) if leaf.terminal else None,
            root_value=0.0 if root.terminal else (self.v(root) if root.expanded else None),
            candidates=candidates,
            tree=snapshot(root),
            stats={**tree_stats(root), "frontier": len(self.heap)},
            budget=root.budget,
        )


def best_first(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, width: int = 8,
               expand_per_round: int = 1, budget: Budget | None = None) -> list[SearchOutput]:
    """Best-first search from every root (deterministic)."""
    if expand_per_round < 1:
        raise ValueError(f"expand_per_round must be >= 1, got {expand_per_round}")
    template = make_budget(budget)
    searches = [_Search(new_root(env, state, template)) for state in roots]
    for search in searches:  # the root's expansion is free (T_0, see the module docstring)
        if search.root.budget.max_expansions is not None:
            search.root.budget.max_expansions += 1
    while True:
        picked = [(s, node) for s in searches for node in s.pop(expand_per_round)]
        if not picked:
            break
        nodes = [node for _, node in picked]
        expand_nodes(env, pv, nodes, width)
        evaluate_nodes(pv, [c for n in nodes for c in n.children if not c.terminal])
        for search, node in picked:
            search.expanded(node)
    return [s.output(env) for s in searches]
