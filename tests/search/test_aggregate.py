import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsllm.search.aggregate import aggregate, majority_vote, orm_max, orm_vote, weighted_vote
from tsllm.types import Candidate


def cand(answer, score, count=1):
    return Candidate(path=[], answer=answer, score=score, count=count)


def test_methods_disagree_where_they_should():
    cands = [cand("7", 0.9), cand("5", -0.2, count=2), cand("5", -0.3), cand("6", 0.1)]
    assert majority_vote(cands) == "5"  # 3 votes against 1 and 1
    assert orm_max(cands) == "7"  # single best score
    # orm_vote sums count*score: 7 -> 0.9, 5 -> -0.7, 6 -> 0.1
    assert orm_vote(cands) == "7"
    # weighted maps scores to [0,1]: 7 -> 0.95, 5 -> 2*0.4 + 0.35 = 1.15, 6 -> 0.55
    assert weighted_vote(cands) == "5"


def test_ties_go_to_first_appearance_and_none_never_wins():
    assert majority_vote([cand("b", 0), cand("a", 0)]) == "b"
    assert majority_vote([cand(None, 1, count=5), cand("x", 0)]) == "x"
    assert majority_vote([cand(None, 1)]) is None and orm_max([]) is None
    assert orm_max([cand("a", 0.5), cand("b", 0.5)]) == "a"


def test_aggregate_by_name():
    assert aggregate([cand(1, 0.0)], "weighted") == 1
    with pytest.raises(ValueError, match="unknown aggregation 'mode'"):
        aggregate([], "mode")


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(-1, 1), st.integers(1, 5)), min_size=1))
def test_winner_is_always_a_candidate_answer(rows):
    cands = [cand(a, s, n) for a, s, n in rows]
    for method in ("majority", "orm_max", "orm_vote", "weighted"):
        assert aggregate(cands, method) in {a for a, _, _ in rows}
