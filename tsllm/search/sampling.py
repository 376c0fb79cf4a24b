"""Baselines without a tree: greedy chain-of-thought, self-consistency, best-of-N.

- `cot_greedy`: from each root, ask for up to `width` children and follow the highest prior (ties:
  the earlier child) until a terminal, a dead end, `max_depth` or the budget; one `pv.expand` call
  per depth step covers all roots still walking. Candidate score = sum of log priors on the path
  (priors as the policy returned them, renormalised over the `width` children it proposed).
- `cot_sc`: k complete paths per root from ONE `pv.rollout(states, k)` call; candidates are the
  unique paths with their counts (score = share of the kept rollouts); answer by majority vote.
- `best_of_n`: n rollouts per root from one `pv.rollout` call, then ONE `pv.evaluate` call over the
  (per-root unique) final states of all roots: the value model read at the end acts as the ORM.
  Candidates are unique paths with counts, score = ORM value; answer by `method`
  ("orm_max", "orm_vote", "weighted" or "majority", see search.aggregate). `method="checker"` is
  sampling with the env's checker instead, the baseline of a search that sees terminal rewards:
  samples are kept in order until one wins (its answer is taken; pass@n at the cost actually
  spent), n are kept, or the budget ends; no value call.

cot_sc and best_of_n also report the kept samples as a tree (`SearchOutput.tree`, for inspection):
the trie of their paths, where a node's visits count the samples through it, its prior is the share
of its parent's samples that took its step, and (best-of-N) a final state's value is its ORM score.

Budget: rollouts charge their `token_count` to `Budget.tokens` and their prompt tokens to the
compute count (`Budget.compute`); best-of-N charges one value call per
final state scored. Rollouts are kept in the order the policy returned them, up to (not including)
the first one that does not fit: its tokens would pass `max_tokens` or `max_compute`, or
(best-of-N) its final state is new and would pass `max_value_calls`. The result is what sequential
sampling under the same limit would have produced. Under a token or compute limit (or with the
checker) samples are drawn in waves of `WAVE` per root still going, so a large k is only paid in
wall time for the samples a root keeps. A root whose budget is already exhausted samples nothing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from tsllm.search.aggregate import aggregate, choose_candidate
from tsllm.search.tree import Node, expand_nodes, iter_nodes, make_budget, new_root, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, Rollout, SearchOutput

WAVE = 8  # samples per root per batched call when a budget or a win may stop a root early


def _path(env: Env, root: Hashable, rollout: Rollout) -> list[Hashable]:
    path = [root]
    for action in rollout.actions:
        path.append(env.step(path[-1], action))
    return path


def _keep_fitting(env: Env, root: Hashable, rollouts: list[Rollout], budget: Budget, score_finals: bool,
                  kept: list[tuple[list[Hashable], list]], finals: set, stop_at_win: bool) -> bool:
    """Append to `kept` the (path, actions) of the rollouts that fit the budget, in order (see the
    module docstring), charging them; True when the root is done: a rollout did not fit, or
    (`stop_at_win`) a kept rollout won by the env's checker."""
    for rollout in rollouts:
        path = _path(env, root, rollout)
        if not budget.fits(rollout.token_count, rollout.prompt_tokens, rollout.cached_tokens):
            return True
        new_final = score_finals and path[-1] not in finals
        if new_final and budget.max_value_calls is not None and \
                budget.value_calls + len(finals) + 1 > budget.max_value_calls:
            return True
        budget.charge_rollout(rollout)
        if score_finals:
            finals.add(path[-1])
        kept.append((path, rollout.actions))
        if stop_at_win and _wins(env, path[-1]):
            return True
    return False


def _wins(env: Env, state: Hashable) -> bool:
    return env.is_terminal(state) and env.reward(state) > 0


def _trie(env: Env, root: Hashable, kept: list[tuple[list[Hashable], list]], budget: Budget) -> Node:
    """The samples' paths as a tree (see the module docstring)."""
    top = new_root(env, root, budget, fresh=False)
    for path, actions in kept:
        node = top
        node.visits += 1
        for state, action in zip(path[1:], actions):
            child = next((c for c in node.children if c.state == state), None)
            if child is None:
                child = Node(state, budget, node, action, terminal=env.is_terminal(state))
                node.children.append(child)
                node.expanded = True
            node = child
            node.visits += 1
    for node in iter_nodes(top):
        for child in node.children:
            child.prior = child.visits / node.visits
    return top


def _group(env: Env, paths: list[list[Hashable]]) -> list[Candidate]:
    """Unique paths in first-seen order, with counts."""
    by_path: dict[tuple, Candidate] = {}
    for path in paths:
        key = tuple(path)
        if key in by_path:
            by_path[key].count += 1
        else:
            terminal = env.is_terminal(path[-1])
            by_path[key] = Candidate(path, env.answer(path[-1]) if terminal else None, 0.0, terminal)
    return list(by_path.values())


def _sample(env: Env, pv: PolicyValueFn, roots: list[Hashable], k: int, template: Budget,
            score_finals: bool, stop_at_win: bool = False,
            wave: int = WAVE) -> tuple[list[Budget], list[list[Candidate]], list[Node]]:
    """Root budgets, each root's grouped candidates and its samples' tree. Without a token or
    compute limit and without `stop_at_win`, one batched rollout call of k per root; else waves of
    `wave` per root still open (one batched call each) until k are kept, one does not fit, or one
    wins, so a large k costs only the samples a root uses."""
    budgets = [template.fresh() for _ in roots]
    kept: list[list[tuple[list[Hashable], list]]] = [[] for _ in roots]
    finals: list[set] = [set() for _ in roots]
    done = [b.exhausted() for b in budgets]
    capped = template.max_tokens is not None or template.max_compute is not None or stop_at_win
    size = min(k, wave) if capped else k
    drawn = [0] * len(roots)
    while size > 0:
        todo = [i for i in range(len(roots)) if not done[i] and drawn[i] < k]
        if not todo:
            break
        for i, rolls in zip(todo, pv.rollout([roots[i] for i in todo], size)):
            short = len(rolls) < size  # the policy had no more to give (a scripted one, say)
            rolls = rolls[: k - drawn[i]]
            drawn[i] += len(rolls)
            done[i] = _keep_fitting(env, roots[i], rolls, budgets[i], score_finals, kept[i], finals[i],
                                    stop_at_win) or short
    groups = [_group(env, [path for path, _ in paths]) for paths in kept]
    return budgets, groups, [_trie(env, r, paths, b) for r, paths, b in zip(roots, kept, budgets)]


def _output(root: Hashable, candidates: list[Candidate], method: str, budget: Budget, tree: Node) -> SearchOutput:
    answer, chosen = choose_candidate(candidates, method)
    return SearchOutput(root=root, best_path=chosen.path if chosen else [root], answer=answer,
                        candidates=candidates, tree=snapshot(tree),
                        stats={"rollouts": sum(c.count for c in candidates), **tree_stats(tree)}, budget=budget)


def cot_sc(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, k: int = 8,
           budget: Budget | None = None) -> list[SearchOutput]:
    """Self-consistency: k sampled paths per root, majority vote (the policy does the sampling)."""
    template = make_budget(budget)
    budgets, groups, trees = _sample(env, pv, list(roots), k, template, score_finals=False)
    for cands in groups:
        kept = sum(c.count for c in cands)
        for c in cands:
            c.score = c.count / kept
    return [_output(r, c, "majority", b, t) for r, c, b, t in zip(roots, groups, budgets, trees)]


def best_of_n(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, n: int = 8, method: str = "orm_max",
              budget: Budget | None = None) -> list[SearchOutput]:
    """Best-of-N: n sampled paths per root scored at their end by the value model (ORM), or with
    `method="checker"` by the env's own reward (sampling + checker, pass@n: see the module doc)."""
    template = make_budget(budget)
    if method == "checker":
        return _until_win(env, pv, list(roots), n, template)
    aggregate([], method)  # fail on an unknown method before spending anything
    budgets, groups, trees = _sample(env, pv, list(roots), n, template, score_finals=True)
    finals = [list(dict.fromkeys(c.path[-1] for c in cands)) for cands in groups]
    flat = [state for states in finals for state in states]
    values = iter(pv.evaluate(flat) if flat else [])
    for cands, states, b, tree in zip(groups, finals, budgets, trees):
        score = {state: float(next(values)) for state in states}
        b.value_calls += len(states)
        for c in cands:
            c.score = score[c.path[-1]]
        for node in iter_nodes(tree):
            node.value = score.get(node.state)
    return [_output(r, c, method, b, t) for r, c, b, t in zip(roots, groups, budgets, trees)]


def _until_win(env: Env, pv: PolicyValueFn, roots: list[Hashable], n: int, template: Budget) -> list[SearchOutput]:
    """Sampling with the checker: samples in order until one wins, n are drawn or the budget ends;
    a candidate's score is its reward (a path cut short by the depth cap scores -1), the answer
    the winning sample's, else the first sample's."""
    budgets, groups, trees = _sample(env, pv, roots, n, template, score_finals=False, stop_at_win=True)
    for cands in groups:
        for c in cands:
            c.score = env.reward(c.path[-1]) if c.terminal else -1.0
    return [_output(r, c, "orm_max", b, t) for r, c, b, t in zip(roots, groups, budgets, trees)]


def cot_greedy(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *, width: int = 1,
               max_depth: int | None = None, budget: Budget | None = None) -> list[SearchOutput]:
    """Greedy decoding by prior (deterministic)."""
    template = make_budget(budget)
    trees = [new_root(env, state, template) for state in roots]
    heads = list(trees)
    while True:
        walking = [h for h in heads if not h.terminal and not h.expanded and not h.budget.exhausted()
                   and (max_depth is None or h.depth < max_depth)]
        if not walking:
            break
        expand_nodes(env, pv, walking, width)
        stepped = {id(h) for h in walking}
        heads = [max(h.children, key=lambda c: c.prior) if id(h) in stepped and h.children else h
                 for h in heads]

    outputs = []
    for root, head in zip(trees, heads):
        path = head.path()
        candidates = []
        if head.terminal:
            nodes, node = [], head
            while node.parent is not None:
                nodes.append(node)
                node = node.parent
            logprob = sum(math.log(max(n.prior, 1e-12)) for n in nodes)
            candidates.append(Candidate(path, env.answer(head.state), logprob))
        outputs.append(SearchOutput(
            root=root.state, best_path=path, answer=env.answer(head.state) if head.terminal else None,
            candidates=candidates, tree=snapshot(root), stats=tree_stats(root), budget=root.budget,
        ))
    return outputs
