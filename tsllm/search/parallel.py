"""Parallel search with rollout allocation (DORA paper, "Every Rollout Counts", Algorithm 1).

A pool of partial solutions grows one step at a time. Step 0 gives the root all B rollouts.
After every step the new candidates are scored by the critic and the allocation rule
(tsllm.search.allocation) decides how many of the B rollouts each candidate gets at the next
step: `sampling`, `beam`, `rebase`, `dora`, or `dvts` (B/beam_width independent subtrees, each
a beam search that keeps its single best candidate and gives it the subtree's rollouts).
Candidates given 0 rollouts are pruned.

Choices (documented here because the paper leaves them open):
- Completed solutions leave the pool and the budget shrinks by one per completion, as in
  REBASE/DORA: at every step the widths requested sum to B minus the completions so far (for
  dvts, per subtree: its share of B, beam_width when it divides evenly, minus its completions).
  Search stops when that budget reaches 0, the pool is empty, `max_depth` steps were taken, or
  the root's Budget is exhausted.
- A step is one batched `pv.expand` for every candidate of every root, then one batched
  `pv.evaluate` of all the new children (one embed call too, for dora). The Budget is checked
  before each step; the scoring of children a step produced belongs to that step, so a limit
  can be overshot by at most one step's spending.
- A candidate given more rollouts than the distinct children the policy returns (the toy dedups
  children; an LLM backend may too) just yields fewer candidates; the budget only shrinks by
  completions, so the unused rollouts are redistributed next step (and lost at the last step).
- Per-candidate widths: the one batched `pv.expand(states, widths)` call gives each candidate
  its own allocation as its width.
- dvts subtrees: the root's children are dealt to the B // beam_width subtrees round-robin in
  expansion order (so a root with fewer distinct children than B still seeds every subtree it
  can); later children stay in their parent's subtree.
- dora without `embed`: a hashed bag of character trigrams of each state's text, with the root's
  text removed when it is a prefix (the question is shared by every candidate, so it says nothing
  about direction). Identical steps collapse into one direction; pass a sentence embedder
  (e.g. all-MiniLM-L6-v2) as `embed` for paraphrases.
- Answer: weighted majority vote (`aggregation`, see search.aggregate) over completed candidates,
  each weighted by its critic value. Candidates still unfinished at the stop are reported with
  terminal=False and answer None, and do not vote. best_path: the highest-valued completed
  candidate with the winning answer (ties: earliest completed), else the highest-valued
  unfinished one, else the root.
Ties everywhere go to the earlier candidate in expansion order. The rules are deterministic
(sampling randomness lives in the policy), so the search takes no `rng`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from tsllm.search.aggregate import AGGREGATORS, aggregate
from tsllm.search.allocation import ALLOCATORS, check_temperature, dvts, sampling
from tsllm.search.tree import Node, evaluate_nodes, expand_nodes, make_budget, new_root, snapshot, tree_stats
from tsllm.types import Budget, Candidate, Env, PolicyValueFn, SearchOutput

RULES = ("sampling", "beam", "rebase", "dora", "dvts")
Embedder = Callable[[Sequence[Hashable]], np.ndarray]


def text_embedding(texts: Sequence[str], dim: int = 256) -> np.ndarray:
    """Hashed character-trigram counts (crc32, stable across processes), one row per text."""
    out = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
        padded = f"  {text} "
        for i in range(len(padded) - 2):
            out[row, zlib.crc32(padded[i:i + 3].encode("utf-8")) % dim] += 1.0
    return out


def _step_text(state: Hashable, root: Hashable) -> str:
    """str(state) without the root's text when it is a prefix (the shared question)."""
    text, root_text = str(state), str(root)
    return text[len(root_text):] if text.startswith(root_text) else text


class _Run:
    """One root's pool, allocation and completed solutions."""

    def __init__(self, root: Node, num_rollouts: int):
        self.root = root
        self.pool: list[Node] = [] if root.terminal else [root]
        self.widths: list[int] = [] if root.terminal else [num_rollouts]
        self.remaining = num_rollouts  # B minus completions so far
        self.completed: list[Node] = [root] if root.terminal else []
        self.group: dict[int, int] = {}  # dvts: id(node) -> subtree
        self.group_budget: dict[int, int] = {}
        self.steps = 0
        self.rollouts = 0  # widths requested, summed over steps



def _settle(run: _Run, rule: str, num_rollouts: int, beam_width: int) -> list[Node]:
    """Move this step's completed children out of the pool and shrink the budget; return the
    unfinished children (the next pool, before allocation)."""
    children = [c for node in run.pool for c in node.children]
    if rule == "dvts":
        if run.pool == [run.root]:  # first step: deal the root's children to the subtrees
            n_groups = max(1, num_rollouts // beam_width)
            run.group_budget = dict(enumerate(sampling(n_groups, num_rollouts)))
            for i, c in enumerate(children):
                run.group[id(c)] = i % n_groups
        else:
            for node in run.pool:
                for c in node.children:
                    run.group[id(c)] = run.group[id(node)]
    unfinished = []
    for c in children:
        if c.terminal:
            run.completed.append(c)
            run.remaining -= 1
            if rule == "dvts":
                run.group_budget[run.group[id(c)]] -= 1
        else:
            unfinished.append(c)
    return unfinished


def _embed_pools(active: list[_Run], pools: list[list[Node]],
                 embed: Embedder | None) -> list[np.ndarray]:
    """Embeddings for every pool in one embed call (pools of one candidate need none)."""
    needy = [i for i, pool in enumerate(pools) if len(pool) > 1]
    out = [np.ones((len(pool), 1)) for pool in pools]
    states = [c.state for i in needy for c in pools[i]]
    if not states:
        return out
    if embed is None:
        vectors = text_embedding([_step_text(c.state, active[i].root.state)
                                  for i in needy for c in pools[i]])
    else:
        vectors = np.asarray(embed(states), dtype=float)
    if vectors.ndim != 2 or vectors.shape[0] != len(states):
        raise ValueError(f"embed returned shape {vectors.shape} for {len(states)} states")
    start = 0
    for i in needy:
        out[i] = vectors[start:start + len(pools[i])]
        start += len(pools[i])
    return out


def _allocate(run: _Run, pool: list[Node], embeddings: np.ndarray | None, rule: str,
              knobs: dict) -> None:
    scores = [c.value for c in pool]
    if rule == "dvts":
        widths = dvts(scores, [run.group[id(c)] for c in pool], run.group_budget)
    else:
        widths = ALLOCATORS[rule](scores, run.remaining, embeddings=embeddings, **knobs)
    for c, w in zip(pool, widths):
        c.visits = w  # rollouts this candidate is given (kept on the tree for inspection)
        c.value_sum = w * c.value
    kept = [(c, w) for c, w in zip(pool, widths) if w > 0]
    run.pool, run.widths = [c for c, _ in kept], [w for _, w in kept]


def _output(env: Env, run: _Run, aggregation: str) -> SearchOutput:
    done = [Candidate(n.path(), env.answer(n.state), 0.0 if n.value is None else n.value)
            for n in run.completed]
    open_ = [Candidate(n.path(), None, 0.0 if n.value is None else n.value, terminal=False)
             for n in run.pool]
    answer = aggregate(done, aggregation) if done else None
    pick = [c for c in done if c.answer == answer] if answer is not None else (done or open_)
    best = max(pick, key=lambda c: c.score) if pick else None  # max keeps the earliest on ties
    stats = dict(tree_stats(run.root))
    stats.update(steps=run.steps, rollouts=run.rollouts, completed=len(done), unfinished=len(open_))
    return SearchOutput(root=run.root.state, best_path=best.path if best else [run.root.state],
                        answer=answer, root_value=None, candidates=done + open_,
                        tree=snapshot(run.root), stats=stats, budget=run.root.budget)


def parallel_search(env: Env, pv: PolicyValueFn, roots: Sequence[Hashable], *,
                    rule: str = "rebase", num_rollouts: int = 16, max_depth: int = 64,
                    temperature: float = 0.1, similarity_temperature: float = 0.01,
                    beam_width: int = 4, embed: Embedder | None = None,
                    aggregation: str = "weighted", budget: Budget | None = None) -> list[SearchOutput]:
    """Step-wise parallel search over many roots at once (see the module docstring)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {list(RULES)}")
    if aggregation not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {sorted(AGGREGATORS)}")
    for name, v in (("num_rollouts", num_rollouts), ("beam_width", beam_width)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    check_temperature("temperature", temperature)
    check_temperature("similarity_temperature", similarity_temperature)
    knobs = dict(temperature=temperature, similarity_temperature=similarity_temperature,
                 beam_width=beam_width)
    template = make_budget(budget)
    runs = [_Run(new_root(env, r, template), num_rollouts) for r in roots]
    evaluate_nodes(pv, [run.root for run in runs if run.root.terminal])  # no call when none

    for _step in range(max_depth):
        active = [run for run in runs if run.pool and not run.root.budget.exhausted()]
        if not active:
            break
        nodes = [n for run in active for n in run.pool]
        widths = [w for run in active for w in run.widths]
        expand_nodes(env, pv, nodes, widths)
        for node, width in zip(nodes, widths):
            node.visits = width  # the rollouts this candidate was given
        for run in active:
            run.steps += 1
            run.rollouts += sum(run.widths)
        pools = [_settle(run, rule, num_rollouts, beam_width) for run in active]
        evaluate_nodes(pv, [c for run in active for n in run.pool for c in n.children])
        embeddings = _embed_pools(active, pools, embed) if rule == "dora" else [None] * len(active)
        for run, pool, emb in zip(active, pools, embeddings):
            if run.remaining > 0 and pool:
                _allocate(run, pool, emb, rule, knobs)
            else:
                run.pool, run.widths = [], []
    return [_output(env, run, aggregation) for run in runs]
