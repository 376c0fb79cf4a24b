"""TS-LLM BFS-V: a beam ranked by the critic, one level per round.

Level by level: expand every beam node with up to `width` children, score all new children with
the critic, turn terminal children into candidates (score = critic value), and keep the
`beam_width` non-terminal children with the highest value across the whole level as the next beam
(ties: earlier child in expansion order, beam order first). Stops at `max_depth` (nodes at that
depth are not expanded), when the beam is empty, or when the root's budget is exhausted (checked
before each level; with `max_expansions` only as many beam nodes as still fit are expanded).

One round = one `pv.expand` over the beams of all unfinished roots + one `pv.evaluate` over all
their new children. answer: the candidate with the highest value (or `aggregation`, a method of
search.aggregate); best_path: that candidate's path, or, with no terminal found, the path to the
best node of the last beam. root_value: the highest critic value of any node the search scored.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from tsllm.search.aggregate import choose_candidate
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


def _fit(beam: list[Node], budget: Budget) -> list[Node]:
    """The beam nodes this root can still expand."""
    if budget.exhausted():
        return []
    if budget.max_expansions is not None:
        return beam[: budget.max_expansions - budget.expansions]
    return beam


def bfs(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, beam_width: int = 4, width: int = 8,
        max_depth: int = 8, aggregation: str | None = None, budget: Budget | None = None) -> list[SearchOutput]:
    """BFS-V from every root (deterministic)."""
    template = make_budget(budget)
    trees = [new_root(env, state, template) for state in roots]
    evaluate_nodes(pv, [r for r in trees if r.terminal])  # a terminal root is its own candidate
    found: list[list[Candidate]] = [[] for _ in trees]
    for root, cands in zip(trees, found):
        if root.terminal:
            cands.append(Candidate([root.state], env.answer(root.state), root.value))
    beams = [[r] if not r.terminal else [] for r in trees]
    last_beams = [list(b) for b in beams]
    for _ in range(max_depth):
        takes = [_fit(beam, root.budget) for beam, root in zip(beams, trees)]
        batch = [node for take in takes for node in take]
        if not batch:
            break
        expand_nodes(env, pv, batch, width)
        evaluate_nodes(pv, [c for n in batch for c in n.children])
        for i, take in enumerate(takes):
            level = [c for n in take for c in n.children]
            found[i] += [Candidate(c.path(), env.answer(c.state), c.value) for c in level if c.terminal]
            ranked = sorted((c for c in level if not c.terminal), key=lambda c: -c.value)  # stable: ties keep order
            beams[i] = ranked[:beam_width]
            if beams[i]:
                last_beams[i] = beams[i]

    outputs = []
    for root, cands, last in zip(trees, found, last_beams):
        answer, chosen = choose_candidate(cands, aggregation or "orm_max")
        best_path = chosen.path if chosen is not None else last[0].path() if last else [root.state]
        values = [n.value for n in iter_nodes(root) if n.value is not None]
        outputs.append(SearchOutput(
            root=root.state, best_path=best_path, answer=answer,
            root_value=max(values) if values else None, candidates=cands,
            tree=snapshot(root), stats=tree_stats(root), budget=root.budget,
        ))
    return outputs

