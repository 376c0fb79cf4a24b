import json

import pytest

from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue
from tsllm.search.tree import evaluate_nodes, expand_nodes, make_budget, new_root, snapshot, tree_stats
from tsllm.types import Budget

NODES = {
    "r1": {"children": ["a", "b"]},
    "r2": {"children": ["c"]},
    "a": {"tokens": 4, "score": 0.5, "value": 0.1, "children": ["a1"]},
    "b": {"tokens": 2, "value": -0.2},
    "c": {"tokens": 7, "value": 0.7},
    "a1": {"value": 1.0},
}


def test_expand_and_evaluate_are_one_batched_call_and_charge_each_root():
    env = FixedTreeEnv(NODES, root="r1")
    pv = FixedTreePolicyValue(env)
    template = Budget(max_tokens=100)
    r1, r2 = new_root(env, "r1", template), new_root(env, "r2", template)
    assert r1.budget is not r2.budget and r1.budget is not template  # each root spends its own

    expand_nodes(env, pv, [r1, r2], width=5)
    assert pv.expand_calls == 1
    assert [c.state for c in r1.children] == ["a", "b"] and [c.state for c in r2.children] == ["c"]
    assert r1.budget.tokens == 6 and r2.budget.tokens == 7
    assert r1.budget.expansions == 1 and template.tokens == 0
    a = r1.children[0]
    assert (a.prior, a.step_score, a.token_count, a.depth, a.terminal) == (0.5, 0.5, 4, 1, False)
    assert r1.children[1].terminal  # "b" has no children

    children = r1.children + r2.children
    evaluate_nodes(pv, children + children)  # duplicates are scored once
    assert pv.evaluate_calls == 1 and pv.states_evaluated == 3
    assert [c.value for c in children] == [0.1, -0.2, 0.7]
    evaluate_nodes(pv, children)  # already valued: no call at all
    expand_nodes(env, pv, [r1, r1.children[1]], width=5)  # expanded and terminal: skipped
    assert pv.evaluate_calls == 1 and pv.expand_calls == 1
    assert r1.budget.value_calls == 2 and r2.budget.value_calls == 1


def test_snapshot_is_json_and_stats_count_nodes():
    env = FixedTreeEnv(NODES, root="r1")
    pv = FixedTreePolicyValue(env)
    root = new_root(env, "r1", Budget())
    expand_nodes(env, pv, [root], 5)
    expand_nodes(env, pv, root.children, 5)
    root.children[0].visits, root.children[0].value_sum = 3, 1.0
    snap = json.loads(json.dumps(snapshot(root)))
    assert snap["children"][0]["q"] == pytest.approx(0.333333)
    assert snap["children"][0]["children"][0]["state"] == "a1"
    assert tree_stats(root) == {"nodes": 4, "max_depth": 2}
    assert root.children[0].children[0].path() == ["r1", "a", "a1"]


def test_budget_limits_and_fresh_copies():
    b = Budget(max_expansions=2, max_tokens=10)
    assert not b.exhausted()
    b.expansions = 2
    assert b.exhausted()
    fresh = b.fresh()
    assert fresh.expansions == 0 and fresh.max_expansions == 2 and fresh.max_tokens == 10
    b2 = Budget(max_tokens=5)
    b2.tokens = 5
    assert b2.exhausted() and Budget().exhausted() is False
    assert Budget(max_seconds=0.0).exhausted()
    assert set(b.spent()) >= {"tokens", "expansions", "value_calls", "prompt_tokens", "cached_tokens", "seconds"}


def test_budget_rejects_bad_limits_and_none_is_unlimited():
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        Budget(max_tokens=-1)
    with pytest.raises(ValueError, match="max_seconds must be >= 0"):
        Budget(max_seconds=float("nan"))
    unlimited = make_budget(None)
    assert [getattr(unlimited, name) for name in Budget.LIMITS] == [None] * len(Budget.LIMITS)
    given = Budget(max_value_calls=3)
    assert make_budget(given) is given
