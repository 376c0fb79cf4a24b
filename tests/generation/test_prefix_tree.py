import math

from tsllm.generation.prefix_tree import likely_enough, paid_for, prefix_tree, scored_whole


def test_shared_prefixes_are_one_span_paid_by_the_first_continuation_through_it():
    tree = prefix_tree([list("14 + 3"), list("14 + 1"), list("14 * 2")])
    assert [("".join(s.ids), s.parent, s.depth) for s in tree.spans] == [
        ("14 ", -1, 1), ("+ ", 0, 2), ("3", 1, 3), ("1", 1, 3), ("* 2", 0, 2)]
    assert tree.paths == [[0, 1, 2], [0, 1, 3], [0, 4]]
    assert tree.paid == [6, 1, 3] and tree.tokens == 10  # 18 tokens as separate rows


def test_a_continuation_may_end_inside_another_and_repeats_cost_nothing():
    tree = prefix_tree([[1, 2], [1, 2, 3], [1, 2], [4]])
    assert [(s.ids, s.parent) for s in tree.spans] == [([1, 2], -1), ([3], 0), ([4], -1)]
    assert tree.paths == [[0], [0, 1], [0], [2]]
    assert tree.paid == [2, 1, 0, 1] and tree.tokens == sum(tree.paid)


def test_continuations_with_nothing_in_common_are_separate_spans():
    tree = prefix_tree([[5, 6], [7], [8, 9, 10]])
    assert [s.ids for s in tree.spans] == [[5, 6], [7], [8, 9, 10]]
    assert tree.paid == [2, 1, 3]


def test_likely_enough_keeps_the_prefixes_within_the_cutoff_of_the_likeliest():
    logprobs = {0: math.log(0.5), 1: math.log(0.1), 2: math.log(0.004)}
    assert likely_enough(logprobs, 0.01) == {0, 1}  # 0.004 < 0.01 * 0.5
    assert likely_enough(logprobs, 0.3) == {0}
    assert likely_enough(logprobs, 0.0) == {0, 1, 2}
    assert likely_enough({}, 0.5) == set()


def test_paid_for_counts_only_the_spans_that_ran():
    tree = prefix_tree([list("14 + 3"), list("14 + 1"), list("14 * 2")])  # spans "14 ", "+ ", "3", "1", "* 2"
    assert paid_for(tree, {0, 4}) == [3, 0, 3]
    assert paid_for(tree, set(range(5))) == tree.paid


def test_scored_whole_cuts_depth_by_depth_from_the_per_token_logprobs():
    tree = prefix_tree([list("14 + 3"), list("14 + 1"), list("14 * 2")])
    logprobs = [[0, 0, 0, -0.1, 0, -0.1], [0, 0, 0, -0.1, 0, -3.0], [0, 0, 0, -5.0, 0, 0]]
    # depth 2: "* 2" is e^-4.9 of "+ "; depth 3: "1" is e^-2.9 of "3"
    assert scored_whole(tree, logprobs, 0.1) == [True, False, False]
    assert scored_whole(tree, logprobs, 0.01) == [True, True, False]
    assert scored_whole(tree, logprobs, 0.0) == [True, True, True]
