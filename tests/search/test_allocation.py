"""Allocation rules: exact integer shares, the properties every rule must keep, and DORA's
direction-level correction worked by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.search.allocation import (
    ALLOCATORS,
    apportion,
    beam,
    dora,
    dora_weights,
    dvts,
    rebase,
    rebase_weights,
    sampling,
    uniqueness,
)

scores_st = st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=12)
budget_st = st.integers(0, 64)
temperature_st = st.sampled_from([0.01, 0.1, 0.5, 1.0, 10.0])
FAST = settings(max_examples=150, deadline=None)


def _embeddings(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 5))


# --- properties -----------------------------------------------------------------------------

@FAST
@given(scores_st, budget_st, temperature_st, st.integers(0, 2**16))
def test_every_rule_spends_exactly_the_budget_nonnegative_and_deterministic(scores, budget, t, seed):
    emb = _embeddings(len(scores), seed)
    results = {
        "rebase": lambda: rebase(scores, budget, t),
        "dora": lambda: dora(scores, emb, budget, t, 0.01),
        "beam": lambda: beam(scores, budget, 1 + seed % 5),
        "sampling": lambda: sampling(len(scores), budget),
    }
    for name, call in results.items():
        first = call()
        assert len(first) == len(scores), name
        assert sum(first) == budget, name
        assert all(isinstance(a, int) and a >= 0 for a in first), name
        assert call() == first, name


def _assert_monotone(scores, alloc):
    for i, si in enumerate(scores):
        for j, sj in enumerate(scores):
            if si > sj:
                assert alloc[i] >= alloc[j], (scores, alloc, i, j)
            if si == sj:
                assert abs(alloc[i] - alloc[j]) <= 1, (scores, alloc, i, j)


@FAST
@given(scores_st, budget_st, temperature_st)
def test_rebase_never_gives_a_higher_score_fewer_rollouts(scores, budget, t):
    _assert_monotone(scores, rebase(scores, budget, t))


@FAST
@given(scores_st, budget_st, temperature_st, st.sampled_from(["identical", "orthogonal"]))
def test_dora_is_monotone_when_every_candidate_is_equally_unique(scores, budget, t, layout):
    # Identical embeddings: everyone's uniqueness is 1/n; orthogonal: everyone's is ~1. Either way
    # the reweighting is a constant factor, so DORA must rank exactly like REBASE.
    n = len(scores)
    emb = np.ones((n, 3)) if layout == "identical" else np.eye(n)
    alloc = dora(scores, emb, budget, t, 0.01)
    _assert_monotone(scores, alloc)
    assert alloc == rebase(scores, budget, t)


@FAST
@given(st.lists(st.tuples(st.integers(1, 5), st.floats(-1, 1)), min_size=1, max_size=5))
def test_dora_direction_totals_follow_softmax_of_direction_scores(directions):
    # Theorem 1 of the DORA paper: with directions of k_j identical candidates sharing score s_j,
    # DORA's real share of direction j is softmax(s/T)_j whatever the k_j. REBASE's is instead
    # proportional to k_j * exp(s_j / T).
    t = 0.1
    scores, emb, label = [], [], []
    for j, (k, s) in enumerate(directions):
        for _ in range(k):
            scores.append(s)
            emb.append(np.eye(len(directions))[j])
            label.append(j)
    label = np.array(label)
    s_dir = np.array([s for _, s in directions])
    k_dir = np.array([k for k, _ in directions])
    want = np.exp(s_dir / t) / np.exp(s_dir / t).sum()
    got = dora_weights(scores, np.array(emb), t, 0.01)
    got_dir = np.array([got[label == j].sum() for j in range(len(directions))])
    np.testing.assert_allclose(got_dir, want, rtol=1e-9, atol=1e-12)
    rebase_dir = np.array([rebase_weights(scores, t)[label == j].sum() for j in range(len(directions))])
    np.testing.assert_allclose(rebase_dir, k_dir * want / (k_dir * want).sum(), rtol=1e-9, atol=1e-12)


# --- worked cases ---------------------------------------------------------------------------

def test_dora_gives_a_duplicated_direction_one_directions_share():
    # Candidates 0, 1, 2 are the same reasoning direction (identical embeddings); candidate 3 is a
    # different one (orthogonal). Scores are equal, so both directions deserve the same total.
    # Uniqueness (diagonal of the row-softmax of cosine similarity / 0.01): rows 0-2 put weight
    # e^100 on three entries and e^0 on one, so about 1/3 each; row 3 about 1. Reweighted REBASE
    # shares: 1/4 * 1/3 three times and 1/4 * 1 once -> 1/6, 1/6, 1/6, 1/2 of 12 = 2, 2, 2, 6.
    # REBASE ignores the duplication: 12 / 4 = 3 each, so direction A takes 9 of 12 (3/4).
    scores = [0.3, 0.3, 0.3, 0.3]
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(uniqueness(emb, 0.01), [1 / 3, 1 / 3, 1 / 3, 1.0], rtol=1e-12)
    d = dora(scores, emb, 12)
    r = rebase(scores, 12)
    assert d == [2, 2, 2, 6] and sum(d[:3]) == d[3] == 6
    assert r == [3, 3, 3, 3] and sum(r[:3]) == 9
    # Budget 8: A's 4 rollouts are 4/3 each -> floors 1, 1, 1 and one left over; the three
    # fractional parts tie at 1/3, so the lower index gets it. B gets exactly 4.
    assert dora(scores, emb, 8) == [2, 1, 1, 4]


def test_dora_scales_embeddings_away_and_zero_vectors_count_as_unique():
    scores = [0.0, 0.0, 0.0]
    emb = np.array([[2.0, 0.0], [0.5, 0.0], [0.0, 0.0]])  # 0 and 1 point the same way
    assert dora(scores, emb, 4) == [1, 1, 2]  # shares 1/4, 1/4, 1/2


def test_rebase_worked_example_and_rounding_ties():
    # softmax([ln 3, 0] / 1) = [3/4, 1/4]: 8 rollouts -> 6 and 2.
    assert rebase([np.log(3.0), 0.0], 8, temperature=1.0) == [6, 2]
    # 4 over three equal scores: floors 1, 1, 1; the last rollout goes to the lowest index.
    assert rebase([0.0, 0.0, 0.0], 4) == [2, 1, 1]
    # equal fractional parts but different scores: the higher score wins the remainder, so a
    # higher score never ends with fewer rollouts.
    assert apportion([0.5, 0.5], 1, priority=[0.0, 1e-12]) == [0, 1]
    # 0.1 + 0.2 is 0.30000000000000004: the same weight as 0.3 up to floating noise, so the two
    # tie and the lower index gets the odd rollout (unrounded, the noise would hand it to index 1)
    assert apportion([0.3, 0.1 + 0.2], 1) == [1, 0]
    # a share of 2.9999999999 floors to 2 but its fractional part comes first: still 3
    assert apportion([1.0, 2.0 - 1e-12], 3) == [1, 2]
    # low temperature sends everything to the best
    assert rebase([0.0, 1.0, 0.5], 10, temperature=0.001) == [0, 10, 0]


def test_sampling_beam_and_dvts_by_hand():
    assert sampling(4, 4) == [1, 1, 1, 1]
    assert sampling(3, 8) == [3, 3, 2]
    # beam width 4 over ranking 1, 2, 0: 4, 4, then the 2 left to candidate 0
    assert beam([0.1, 0.5, 0.3], 10, 4) == [2, 4, 4]
    assert beam([0.1, 0.5, 0.3, 0.2], 8, 4) == [0, 4, 4, 0]
    # more chunks than candidates: start again from the top (3, 3, 3, 1)
    assert beam([1.0, 0.0], 10, 3) == [6, 4]
    assert beam([0.0, 0.0, 0.0], 2, 1) == [1, 1, 0]  # ties: lower index first
    # dvts: per group, the best candidate takes the whole group budget
    assert dvts([1, 2, 3, 0], ["a", "a", "b", "b"], {"a": 4, "b": 3}) == [0, 4, 3, 0]
    assert dvts([5, 5], [0, 0], {0: 2, 1: 2}) == [2, 0]  # empty group 1 spends nothing


def test_registry_uses_one_signature():
    s, e = [0.2, 0.1], np.eye(2)
    assert set(ALLOCATORS) == {"sampling", "beam", "rebase", "dora"}
    assert ALLOCATORS["sampling"](s, 3) == [2, 1]
    assert ALLOCATORS["beam"](s, 3, beam_width=2) == [2, 1]
    assert ALLOCATORS["rebase"](s, 3, temperature=0.1) == rebase(s, 3, 0.1)
    assert ALLOCATORS["dora"](s, 3, embeddings=e) == dora(s, e, 3)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: rebase([0.1], -1), "budget must be >= 0"),
    (lambda: rebase([0.1], 2.5), "budget must be an integer"),
    (lambda: rebase([float("nan")], 1), "finite"),
    (lambda: rebase([float("inf"), 0.0], 1), "finite"),
    (lambda: rebase([], 3), "zero candidates"),
    (lambda: rebase([0.1], 1, temperature=0.0), "temperature must be > 0"),
    (lambda: rebase([0.1], 1, temperature=-1.0), "temperature must be > 0"),
    (lambda: dora([0.1, 0.2], np.eye(3), 2), "one row per score"),
    (lambda: dora([0.1, 0.2], np.eye(2), 2, similarity_temperature=0), "similarity_temperature"),
    (lambda: dora([0.1, 0.2], np.array([[1.0, np.nan], [0, 1]]), 2), "embeddings must be finite"),
    (lambda: beam([0.1], 2, 0), "beam_width"),
    (lambda: sampling(0, 1), "zero candidates"),
    (lambda: dvts([0.1, 0.2], ["a"], {"a": 1}), "one label per score"),
    (lambda: ALLOCATORS["dora"]([0.1], 1), "needs embeddings"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_empty_pool_with_nothing_to_spend_is_fine():
    assert rebase([], 0) == [] and dora([], np.zeros((0, 4)), 0) == [] and sampling(0, 0) == []
    assert rebase([0.3, 0.1], 0) == [0, 0]
