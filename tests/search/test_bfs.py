"""bfs (BFS-V): a hand-worked beam, aggregation, depth and budget limits, batching across roots,
and a golden tree."""


import pytest

from tests.search.golden import check_search_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search.bfs import bfs
from tsllm.types import Budget

# With beam_width=2:
# level 1: D is terminal (candidate .3); non-terminals ranked B .9, A .5, C .1 -> beam [B, A], C dropped.
# level 2: B -> B1 (terminal .2), B2 (.4); A -> A1 (.8), A2 (terminal .95) -> beam [A1, B2].
# level 3: A1 -> A1x (terminal .6); B2 -> B2y (terminal .7); beam empty, stop.
NODES = {
    "root": {"children": ["A", "B", "C", "D"]},
    "A": {"value": 0.5, "children": ["A1", "A2"]},
    "B": {"value": 0.9, "children": ["B1", "B2"]},
    "C": {"value": 0.1, "children": ["C1"]},
    "D": {"value": 0.3, "terminal": True, "answer": "d"},
    "A1": {"value": 0.8, "children": ["A1x"]},
    "A2": {"value": 0.95, "terminal": True, "answer": "a2"},
    "B1": {"value": 0.2, "terminal": True, "answer": "y"},
    "B2": {"value": 0.4, "children": ["B2y"]},
    "C1": {"value": 1.0, "terminal": True, "answer": "c1"},
    "A1x": {"value": 0.6, "terminal": True, "answer": "x"},
    "B2y": {"value": 0.7, "terminal": True, "answer": "y"},
}


def test_beam_keeps_the_best_values_across_the_level():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = bfs(env, pv, ["root"], beam_width=2, max_depth=5)[0]
    assert pv.expand_batches == [["root"], ["B", "A"], ["A1", "B2"]]
    assert [c.answer for c in out.candidates] == ["d", "y", "a2", "x", "y"]  # in the order reached
    # highest-valued candidate: A2 (.95); C1 (1.0) was never reached because C left the beam
    assert out.answer == "a2" and out.best_path == ["root", "A", "A2"]
    assert out.root_value == pytest.approx(0.95)
    assert out.budget.expansions == 5 and out.budget.value_calls == 10  # root, B, A, A1, B2


def test_aggregation_knob_votes_over_candidates():
    env = FixedTreeEnv(NODES)
    out = bfs(env, FixedTreePolicyValue(env), ["root"], beam_width=2, aggregation="majority")[0]
    # "y" is reached twice (B1, B2y); its best representative is B2y (.7 > .2)
    assert out.answer == "y" and out.best_path == ["root", "B", "B2", "B2y"]
    out = bfs(env, FixedTreePolicyValue(env), ["root"], beam_width=2, aggregation="orm_vote")[0]
    # orm_vote sums: d .3, y .2 + .7 = .9, a2 .95, x .6
    assert out.answer == "a2"


def test_max_depth_and_no_terminal_found():
    env = FixedTreeEnv(NODES)
    out = bfs(env, FixedTreePolicyValue(env), ["root"], beam_width=2, max_depth=2)[0]
    assert [c.answer for c in out.candidates] == ["d", "y", "a2"] and out.answer == "a2"
    no_d = {k: v for k, v in NODES.items() if k != "D"}
    no_d["root"] = {"children": ["A", "B", "C"]}
    env = FixedTreeEnv(no_d)
    out = bfs(env, FixedTreePolicyValue(env), ["root"], beam_width=2, max_depth=1)[0]
    # nothing terminal at depth 1: the recommendation is the best node of the last beam
    assert out.candidates == [] and out.answer is None and out.best_path == ["root", "B"]


def test_expansion_budget_cuts_the_beam():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = bfs(env, pv, ["root"], beam_width=2, budget=Budget(max_expansions=2))[0]
    # the root uses 1 expansion; of the beam [B, A] only B still fits
    assert pv.expand_batches == [["root"], ["B"]]
    assert out.budget.expansions == 2 and out.budget.tokens == 6
    assert [c.answer for c in out.candidates] == ["d", "y"] and out.answer == "d"  # .3 > .2


def test_value_call_budget():
    env = FixedTreeEnv(NODES)
    out = bfs(env, FixedTreePolicyValue(env), ["root"], beam_width=2, budget=Budget(max_value_calls=4))[0]
    # level 1 scores 4 children (4 >= 4): no second level
    assert out.budget.value_calls == 4 and out.budget.expansions == 1 and out.answer == "d"


def test_roots_are_batched_level_by_level():
    nodes = {}
    for i in range(3):
        nodes.update(random_tree(depth=2 + i, branching=2, seed=20 + i, prefix=f"t{i}"))
    roots = ["t0root", "t1root", "t2root"]
    env = FixedTreeEnv(nodes, root="t0root")
    alone = [bfs(env, FixedTreePolicyValue(env), [r], beam_width=2)[0] for r in roots]
    pv = FixedTreePolicyValue(env)
    together = bfs(env, pv, roots, beam_width=2)
    # depths 2, 3, 4: one expand + one evaluate call per level, 4 levels for the deepest root
    assert pv.expand_calls == 4 and pv.evaluate_calls == 4
    assert pv.states_expanded == sum(o.budget.expansions for o in alone)
    for a, t in zip(alone, together):
        assert a.tree == t.tree and a.best_path == t.best_path and a.answer == t.answer


def test_golden_tree():
    def search(nodes):
        env = FixedTreeEnv(nodes)
        return bfs(env, FixedTreePolicyValue(env), ["root"], beam_width=2)[0]

    check_search_golden("bfs_depth3_branch2_seed11", lambda: random_tree(depth=3, branching=2, seed=11), search)
