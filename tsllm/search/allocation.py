"""Rollout allocation rules for parallel search (DORA paper, "Every Rollout Counts", section 2.2 and 3.3).

Each rule takes the critic scores of the candidates in a pool and an integer rollout budget and
says how many rollouts each candidate gets at the next step:

- `sampling`  every candidate the same (1 each when the pool is as large as the budget).
- `beam`      the top budget/beam_width candidates get beam_width each.
- `rebase`    share proportional to softmax(score / temperature) (REBASE, eq. 4).
- `dora`      REBASE weights times semantic uniqueness, renormalised (DORA, eq. 10-13): cosine
              similarity of the L2-normalised embeddings, row-softmax with
              `similarity_temperature`, the diagonal is the uniqueness (about 1/k for a candidate
              in a direction of k near-duplicates), so a direction's total share no longer grows
              with how many candidates it has.
- `dvts`      per group (independent subtree), the best candidate gets the group's budget (eq. 3).

Rounding (`apportion`): every candidate gets the floor of its real share; the rollouts left over
go one each to the largest fractional parts. Fractional parts are compared after rounding to 9
decimals so floating-point noise never decides; ties go to the higher score, then to the lower
index. So results are exact integers summing to the budget, deterministic, and never give a
higher-weighted candidate fewer rollouts than a lower-weighted one.

Pure numpy. Every rule raises ValueError on bad input (negative budget, mismatched lengths,
non-finite scores, empty pool with budget > 0, temperature <= 0).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

_FRACTION_DIGITS = 9  # fractional parts closer than this tie (floating noise never decides)


def _check_budget(budget: int) -> int:
    if isinstance(budget, bool) or int(budget) != budget:
        raise ValueError(f"budget must be an integer, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return int(budget)


def _check_scores(scores: Sequence[float], budget: int) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D sequence, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers (got NaN or inf)")
    if s.size == 0 and budget > 0:
        raise ValueError(f"cannot allocate a budget of {budget} over zero candidates")
    return s


def check_temperature(name: str, value: float) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def apportion(weights: Sequence[float], budget: int,
              priority: Sequence[float] | None = None) -> list[int]:
    """Integer shares of `budget` proportional to non-negative `weights` (largest remainder).

    Leftover rollouts go to the largest fractional parts; ties to the higher `priority` (the
    score), then to the lower index. With all weights zero the budget is split evenly."""
    budget = _check_budget(budget)
    w = np.asarray(weights, dtype=float)
    if w.size == 0:
        if budget > 0:
            raise ValueError(f"cannot allocate a budget of {budget} over zero candidates")
        return []
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    w = w / total if total > 0 else np.full(w.size, 1.0 / w.size)
    shares = budget * w
    base = np.floor(shares).astype(np.int64)
    fractions = np.round(shares - base, _FRACTION_DIGITS)
    prio = np.zeros(w.size) if priority is None else np.asarray(priority, dtype=float)
    left = budget - int(base.sum())
    order = sorted(range(w.size), key=lambda i: (-fractions[i], -prio[i], i))
    for k in range(left):  # left < number of candidates; the modulo is only a guard
        base[order[k % w.size]] += 1
    return [int(x) for x in base]


def sampling(n_candidates: int, budget: int) -> list[int]:
    """Temperature sampling: no scores used, the budget split evenly (1 each when
    n_candidates == budget); the remainder goes to the lower indices."""
    budget = _check_budget(budget)
    if n_candidates < 0:
        raise ValueError(f"n_candidates must be >= 0, got {n_candidates}")
    if n_candidates == 0:
        if budget > 0:
            raise ValueError(f"cannot allocate a budget of {budget} over zero candidates")
        return []
    each, extra = divmod(budget, n_candidates)
    return [each + (1 if i < extra else 0) for i in range(n_candidates)]


def _ranking(s: np.ndarray) -> list[int]:
    """Candidate indices best first; ties go to the lower index."""
    return sorted(range(s.size), key=lambda i: (-s[i], i))


def beam(scores: Sequence[float], budget: int, beam_width: int) -> list[int]:
    """Beam search: walk down the ranking giving `beam_width` rollouts to each candidate (the last
    one gets what is left). If the ranking runs out first, start again from the top, so the
    budget is always spent exactly."""
    budget = _check_budget(budget)
    s = _check_scores(scores, budget)
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    alloc = [0] * s.size
    ranking, left, k = _ranking(s), budget, 0
    while left > 0:
        give = min(beam_width, left)
        alloc[ranking[k % s.size]] += give
        left -= give
        k += 1
    return alloc


def rebase_weights(scores: Sequence[float], temperature: float = 0.1) -> np.ndarray:
    """softmax(scores / temperature): REBASE's real-valued shares (sum 1)."""
    s = _check_scores(scores, 0)
    t = check_temperature("temperature", temperature)
    if s.size == 0:
        return s
    z = np.exp((s - s.max()) / t)
    return z / z.sum()


def rebase(scores: Sequence[float], budget: int, temperature: float = 0.1) -> list[int]:
    """REBASE: share proportional to softmax(score / temperature)."""
    budget = _check_budget(budget)
    s = _check_scores(scores, budget)
    return apportion(rebase_weights(s, temperature), budget, priority=s)


def uniqueness(embeddings: np.ndarray, similarity_temperature: float = 0.01) -> np.ndarray:
    """Diagonal of the row-softmax of the cosine-similarity matrix (DORA eq. 10-11): about 1/k
    for a candidate with k near-identical neighbours (itself included), about 1 for a loner.
    A zero embedding has no direction; it counts as unique (similarity 0 to everyone else)."""
    e = np.asarray(embeddings, dtype=float)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (candidates x dims), got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings must be finite")
    t = check_temperature("similarity_temperature", similarity_temperature)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    unit = e / np.where(norms > 0, norms, 1.0)
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    logits = sim / t
    logits -= logits.max(axis=1, keepdims=True)
    affinity = np.exp(logits)
    affinity /= affinity.sum(axis=1, keepdims=True)
    return np.diag(affinity).copy()


def dora_weights(scores: Sequence[float], embeddings: np.ndarray, temperature: float = 0.1,
                 similarity_temperature: float = 0.01) -> np.ndarray:
    """REBASE weights times uniqueness, renormalised (DORA eq. 12-13): real shares, sum 1."""
    s = _check_scores(scores, 0)
    e = np.asarray(embeddings, dtype=float)
    if e.ndim != 2 or e.shape[0] != s.size:
        raise ValueError(f"embeddings must have one row per score: {s.size} scores, "
                         f"embeddings of shape {e.shape}")
    if s.size == 0:
        return s
    w = rebase_weights(s, temperature) * uniqueness(e, similarity_temperature)
    return w / w.sum()


def dora(scores: Sequence[float], embeddings: np.ndarray, budget: int, temperature: float = 0.1,
         similarity_temperature: float = 0.01) -> list[int]:
    """DORA: allocate at the direction level, so duplicated candidates share one direction's
    rollouts instead of each claiming a full share."""
    budget = _check_budget(budget)
    s = _check_scores(scores, budget)
    w = dora_weights(s, embeddings, temperature, similarity_temperature)
    return apportion(w, budget, priority=s)


def dvts(scores: Sequence[float], groups: Sequence[Hashable],
         group_budgets: Mapping[Hashable, int]) -> list[int]:
    """DVTS: in each group (an independent subtree) the best candidate (ties: lower index) gets
    the group's whole budget. Groups without candidates spend nothing, so the result sums to the
    budgets of the groups present."""
    s = _check_scores(scores, 0)
    if len(groups) != s.size:
        raise ValueError(f"groups must have one label per score: {s.size} scores, {len(groups)} labels")
    alloc = [0] * s.size
    best: dict[Hashable, int] = {}
    for i in _ranking(s):
        best.setdefault(groups[i], i)
    for group, i in best.items():
        if group not in group_budgets:
            raise ValueError(f"group {group!r} has no budget")
        alloc[i] = _check_budget(group_budgets[group])
    return alloc


# One signature for the pool-level rules, so parallel search can pick them by name. (dvts needs
# group labels and is driven by parallel_search directly.)
Allocator = Callable[..., list[int]]


def _sampling_rule(scores, budget, **_knobs) -> list[int]:
    return sampling(len(scores), budget)


def _beam_rule(scores, budget, *, beam_width: int = 4, **_knobs) -> list[int]:
    return beam(scores, budget, beam_width)


def _rebase_rule(scores, budget, *, temperature: float = 0.1, **_knobs) -> list[int]:
    return rebase(scores, budget, temperature)


def _dora_rule(scores, budget, *, embeddings=None, temperature: float = 0.1,
               similarity_temperature: float = 0.01, **_knobs) -> list[int]:
    if embeddings is None:
        raise ValueError("dora needs embeddings (one row per candidate)")
    return dora(scores, embeddings, budget, temperature, similarity_temperature)


ALLOCATORS: dict[str, Allocator] = {
    "sampling": _sampling_rule,
    "beam": _beam_rule,
    "rebase": _rebase_rule,
    "dora": _dora_rule,
}
