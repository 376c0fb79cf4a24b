"""best_first: hand-worked trees (incl. the noisy-verifier failure of the prefix-search tutorial), budgets, batching
across roots, and a golden tree."""


import pytest

from tests.search.golden import check_search_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search.best_first import best_first
from tsllm.types import Budget

# g = step scores summed from the root, h = "value". Frontier priorities after expanding the root:
# A: .2+.3=.5, B: .5+.1=.6, C: .1+.7=.8  -> C is expanded second.
# Then C1: (.1+.4)+.5=1.0 beats B .6, so C1 is third; then B (.6), then A (.5).
NODES = {
    "root": {"children": ["A", "B", "C"]},
    "A": {"score": 0.2, "value": 0.3, "children": ["A1"]},
    "B": {"score": 0.5, "value": 0.1, "children": ["B1"]},
    "C": {"score": 0.1, "value": 0.7, "children": ["C1", "C2"]},
    "C1": {"score": 0.4, "value": 0.5, "children": ["C1a", "C1b"]},
    "C2": {"score": -0.2, "terminal": True, "reward": -1.0, "answer": "no"},
    "C1a": {"score": 0.3, "terminal": True, "reward": 1.0, "answer": "yes"},
    "C1b": {"score": -0.5, "terminal": True, "reward": -1.0, "answer": "no"},
    "A1": {"score": 0.0, "terminal": True, "answer": "a"},
    "B1": {"score": 0.2, "terminal": True, "answer": "b"},
}


def test_one_frontier_expansion_recommends_the_visible_frontier_leaf():
    env = FixedTreeEnv(NODES)
    # the root's expansion reveals T_0 and is free (the prefix-search tutorial); max_expansions=1 then expands C
    out = best_first(env, FixedTreePolicyValue(env), ["root"], budget=Budget(max_expansions=1))[0]
    # Visible: root, A, B, C, C1, C2. V(C1) = h = .5; V(C2) = 0 (terminal);
    # V(C) = max(.4 + .5, -.2 + 0) = .9; V(root) = max(.2+.3, .5+.1, .1+.9) = 1.0.
    assert out.best_path == ["root", "C", "C1"]
    assert out.answer is None  # C1 is not terminal
    assert out.root_value == pytest.approx(1.0)
    assert out.budget.expansions == 2  # the root's and C's
    assert [c.path for c in out.candidates] == [["root", "C", "C2"]]


def test_two_expansions_back_up_the_terminal_and_find_the_answer():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = best_first(env, pv, ["root"], budget=Budget(max_expansions=2))[0]
    assert pv.expand_batches == [["root"], ["C"], ["C1"]]
    # V(C1) = max(.3 + 0, -.5 + 0) = .3; V(C) = max(.4 + .3, -.2) = .7; V(root) = max(.5, .6, .1 + .7) = .8
    assert out.best_path == ["root", "C", "C1", "C1a"]
    assert out.answer == "yes"
    assert out.root_value == pytest.approx(0.8)
    # candidates scored by g, best first: C1a .1+.4+.3=.8, C1b .1+.4-.5=0, C2 .1-.2=-.1
    assert [(c.answer, round(c.score, 9)) for c in out.candidates] == [("yes", 0.8), ("no", 0.0), ("no", -0.1)]
    # the snapshot shows V as q on expanded nodes
    by_state = {c["state"]: c for c in out.tree["children"]}
    assert by_state["C"]["q"] == pytest.approx(0.7) and by_state["A"]["visits"] == 0


def test_unlimited_budget_expands_everything_in_priority_order():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = best_first(env, pv, ["root"])[0]
    assert pv.expand_batches == [["root"], ["C"], ["C1"], ["B"], ["A"]]
    # B: .5 + .2 = .7 and A: .2 + 0 = .2 both stay below C's .8
    assert out.best_path == ["root", "C", "C1", "C1a"] and out.root_value == pytest.approx(0.8)
    assert out.stats["frontier"] == 0 and out.stats["nodes"] == len(NODES)
    # one value call per non-terminal node created (A, B, C, C1); the root and terminals are not scored
    assert out.budget.value_calls == 4


def test_expand_per_round_takes_the_top_k_of_the_frontier():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    best_first(env, pv, ["root"], expand_per_round=2, budget=Budget(max_expansions=2))
    # round 2 pops the two best of {A .5, B .6, C .8}; the limit of 2 (after the free root)
    # leaves room for exactly that
    assert pv.expand_batches == [["root"], ["C", "B"]]


# Seed 000's noisy verifier: the step into W looks great (.9) but W leads to a wrong answer.
NOISY = {
    "root": {"children": ["R", "W"]},
    "R": {"score": 0.1, "value": 0.2, "children": ["R1"]},
    "W": {"score": 0.9, "value": 0.2, "children": ["W1"]},
    "R1": {"score": 0.3, "terminal": True, "reward": 1.0, "answer": 24},
    "W1": {"score": 0.3, "terminal": True, "reward": -1.0, "answer": 23},
}


def test_noisy_verifier_pulls_the_search_onto_the_wrong_branch():
    env = FixedTreeEnv(NOISY)
    pv = FixedTreePolicyValue(env)
    out = best_first(env, pv, ["root"])[0]
    # W (.9 + .2 = 1.1) is expanded before R (.1 + .2 = .3); with both visible,
    # V(root) = max(.9 + .3, .1 + .3) = 1.2 through W, so the wrong branch is recommended
    # although the correct terminal R1 is visible: search never reads the hidden reward.
    assert pv.expand_batches == [["root"], ["W"], ["R"]]
    assert out.best_path == ["root", "W", "W1"] and out.answer == 23
    assert env.reward(out.best_path[-1]) == -1.0
    assert any(env.reward(c.path[-1]) == 1.0 for c in out.candidates)
    assert out.root_value == pytest.approx(1.2)


def test_clean_verifier_finds_the_correct_branch():
    clean = {**NOISY, "W": {**NOISY["W"], "score": 0.0}}
    env = FixedTreeEnv(clean)
    out = best_first(env, FixedTreePolicyValue(env), ["root"])[0]
    # now R: .1 + .3 = .4 beats W: 0 + .3 = .3
    assert out.best_path == ["root", "R", "R1"] and env.reward("R1") == 1.0
    assert out.root_value == pytest.approx(0.4)


def test_token_budget_stops_and_reports_spending():
    nodes = {k: {**v, "tokens": 5} for k, v in NODES.items()}
    env = FixedTreeEnv(nodes)
    out = best_first(env, FixedTreePolicyValue(env), ["root"], budget=Budget(max_tokens=12))[0]
    # round 1: root -> 3 children x 5 = 15 tokens >= 12, so no second round (one round overshoots)
    assert out.budget.tokens == 15 and out.budget.expansions == 1
    assert out.budget.exhausted() and out.best_path == ["root", "C"]


def test_zero_budget_and_terminal_root():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = best_first(env, pv, ["root"], budget=Budget(max_tokens=0))[0]
    assert out.best_path == ["root"] and out.root_value is None and pv.expand_calls == 0
    # max_expansions=0 still reveals T_0: the best child is C (.1 + .7 beats B .5 + .1, A .2 + .3)
    out = best_first(env, pv, ["root"], budget=Budget(max_expansions=0))[0]
    assert out.best_path == ["root", "C"] and out.root_value == pytest.approx(0.8)
    assert pv.expand_calls == 1
    out = best_first(env, pv, ["C1a"])[0]
    assert out.best_path == ["C1a"] and out.answer == "yes" and out.root_value == 0.0


def _forest(n_roots):
    nodes = {}
    for i in range(n_roots):
        nodes.update(random_tree(depth=3, branching=2 + i, seed=i, prefix=f"t{i}"))
    return nodes


def test_roots_are_batched_one_call_per_round_and_searched_independently():
    nodes = _forest(3)
    roots = ["t0root", "t1root", "t2root"]
    env = FixedTreeEnv(nodes, root="t0root")
    alone = [best_first(env, FixedTreePolicyValue(env), [r], budget=Budget(max_expansions=6))[0] for r in roots]
    pv = FixedTreePolicyValue(env)
    together = best_first(env, pv, roots, budget=Budget(max_expansions=6))
    # t0 (branching 2, depth 3) has exactly 7 non-terminal nodes, and the free root + 6 fit every
    # root: each round expands one node per root, so 7 rounds = 7 expand calls, 21 states.
    assert [o.budget.expansions for o in alone] == [7, 7, 7]
    assert pv.expand_calls == 7 and pv.states_expanded == 21
    assert pv.evaluate_calls <= 7
    assert pv.states_evaluated == sum(o.budget.value_calls for o in alone)
    for a, t in zip(alone, together):
        assert a.tree == t.tree and a.best_path == t.best_path and a.root_value == t.root_value


def test_golden_tree():
    def search(nodes):
        env = FixedTreeEnv(nodes)
        return best_first(env, FixedTreePolicyValue(env), ["root"], budget=Budget(max_expansions=4))[0]

    check_search_golden("best_first_depth3_branch2_seed11", lambda: random_tree(depth=3, branching=2, seed=11), search)
