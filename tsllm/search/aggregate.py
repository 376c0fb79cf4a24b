"""Turning many candidate answers into one.

- majority: each candidate counts its `count` votes (self-consistency).
- orm_max: the answer of the highest-scoring candidate (best-of-N with an ORM).
- orm_vote: votes weighted by the ORM score, summed per answer (TS-LLM's ORM-vote; scores in
  [-1, 1] so an answer the ORM dislikes loses weight).
- weighted: votes weighted by the score mapped from [-1, 1] to [0, 1] (REBASE/DORA weighted
  majority: a weight never takes votes away).
Ties go to the answer that appears first in the candidate list; candidates with answer None
(no extractable answer) never win while any answer exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tsllm.types import Candidate


def _tally(candidates: Sequence[Candidate], weight: Callable[[Candidate], float]) -> Any:
    totals: dict[Any, float] = {}
    for c in candidates:
        if c.answer is None:
            continue
        totals[c.answer] = totals.get(c.answer, 0.0) + weight(c)
    if not totals:
        return None
    best = max(totals.values())
    return next(a for a, t in totals.items() if t == best)  # dicts keep first-appearance order


def majority_vote(candidates: Sequence[Candidate]) -> Any:
    return _tally(candidates, lambda c: c.count)


def orm_vote(candidates: Sequence[Candidate]) -> Any:
    return _tally(candidates, lambda c: c.count * c.score)


def weighted_vote(candidates: Sequence[Candidate]) -> Any:
    return _tally(candidates, lambda c: c.count * min(max((c.score + 1.0) / 2.0, 0.0), 1.0))


def orm_max(candidates: Sequence[Candidate]) -> Any:
    best = None
    for c in candidates:
        if c.answer is not None and (best is None or c.score > best.score):
            best = c
    return None if best is None else best.answer


AGGREGATORS: dict[str, Callable[[Sequence[Candidate]], Any]] = {
    "majority": majority_vote,
    "orm_max": orm_max,
    "orm_vote": orm_vote,
    "weighted": weighted_vote,
}


def aggregate(candidates: Sequence[Candidate], method: str = "majority") -> Any:
    if method not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {method!r}; choose one of {sorted(AGGREGATORS)}")
    return AGGREGATORS[method](candidates)


def choose_candidate(candidates: Sequence[Candidate], method: str) -> tuple[Any, Candidate | None]:
    """The aggregated answer and the candidate standing for it: the highest score among those with
    that answer (ties: earlier); with no answer at all, the highest-scoring candidate, if any."""
    answer = aggregate(candidates, method)
    pool = [c for c in candidates if c.answer == answer] if answer is not None else list(candidates)
    return answer, max(pool, key=lambda c: c.score, default=None)
