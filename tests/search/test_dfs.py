"""dfs (DFS-V): value order, both pruning rules, answer limit, budgets, batching across roots,
and a golden tree."""


from tests.search.golden import check_search_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search.dfs import dfs
from tsllm.types import Budget

# Children are visited best value first: root -> B (.9), A (.5), C (.1); B -> B2 (.4), B1 (-.2).
# C1 (value 1.0) is the best terminal but sits under the worst-looking child.
NODES = {
    "root": {"children": ["A", "B", "C"]},
    "A": {"value": 0.5, "children": ["A1"]},
    "B": {"value": 0.9, "children": ["B1", "B2"]},
    "C": {"value": 0.1, "children": ["C1"]},
    "A1": {"value": 0.6, "terminal": True, "answer": "a1"},
    "B1": {"value": -0.2, "terminal": True, "answer": "b1"},
    "B2": {"value": 0.4, "children": ["B2x"]},
    "B2x": {"value": 0.7, "terminal": True, "answer": "x"},
    "C1": {"value": 1.0, "terminal": True, "answer": "c1"},
}


def test_value_ordered_depth_first_stops_after_max_answers():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = dfs(env, pv, ["root"], max_answers=2)[0]
    # root, then B (best), then B2 (.4 before B1 -.2); B2x is answer 1, B1 (next on the stack) answer 2
    assert pv.expand_batches == [["root"], ["B"], ["B2"]]
    assert [c.answer for c in out.candidates] == ["x", "b1"]
    assert out.answer == "x" and out.best_path == ["root", "B", "B2", "B2x"]  # .7 > -.2
    assert out.root_value is None and out.stats["pruned"] == 0


def test_absolute_threshold_prunes_low_children():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = dfs(env, pv, ["root"], max_answers=2, prune_threshold=0.0)[0]
    # B1 (-.2 < 0) is pruned, so after B2x the search backtracks to A and finds A1
    assert pv.expand_batches == [["root"], ["B"], ["B2"], ["A"]]
    assert [c.answer for c in out.candidates] == ["x", "a1"] and out.stats["pruned"] == 1


def test_ratio_prunes_relative_to_the_best_sibling():
    env = FixedTreeEnv(NODES)
    out = dfs(env, FixedTreePolicyValue(env), ["root"], max_answers=5, prune_ratio=0.5)[0]
    # root's children: best .9, keep >= .5 * .9 = .45 -> B, A; C (.1) pruned, so C1 is never seen.
    # B's children: best .4, keep >= .2 -> B1 pruned. The stack empties after 2 answers.
    assert [c.answer for c in out.candidates] == ["x", "a1"]
    assert out.stats["pruned"] == 2 and out.answer == "x"


def test_ratio_with_negative_values_measures_the_gap_from_the_best():
    nodes = {
        "root": {"children": ["N1", "N2", "N3"]},
        "N1": {"value": -0.5, "terminal": True},
        "N2": {"value": -0.6, "terminal": True},
        "N3": {"value": -0.9, "terminal": True},
    }
    env = FixedTreeEnv(nodes)
    out = dfs(env, FixedTreePolicyValue(env), ["root"], max_answers=5, prune_ratio=0.5)[0]
    # best -.5: keep values >= -.5 - (1 - .5) * |-.5| = -.75 -> N1, N2 kept, N3 pruned
    assert [c.answer for c in out.candidates] == ["N1", "N2"] and out.stats["pruned"] == 1


def test_expansion_budget_stops_before_any_answer():
    env = FixedTreeEnv(NODES)
    out = dfs(env, FixedTreePolicyValue(env), ["root"], max_answers=3, budget=Budget(max_expansions=2))[0]
    # root and B use the 2 expansions; the top of the stack is B2, which would need a third
    assert out.budget.expansions == 2 and out.budget.value_calls == 5
    assert out.candidates == [] and out.answer is None and out.best_path == ["root"]


def test_max_depth_skips_deep_nodes():
    env = FixedTreeEnv(NODES)
    out = dfs(env, FixedTreePolicyValue(env), ["root"], max_answers=5, max_depth=1)[0]
    # only the root (depth 0) may be expanded: no terminal is at depth 1, so nothing is found
    assert out.budget.expansions == 1 and out.candidates == []


def test_roots_advance_one_expansion_per_round():
    nodes = {}
    for i in range(3):
        nodes.update(random_tree(depth=3, branching=2 + i, seed=30 + i, prefix=f"t{i}"))
    roots = ["t0root", "t1root", "t2root"]
    env = FixedTreeEnv(nodes, root="t0root")
    kw = dict(max_answers=4, prune_threshold=-0.5)
    alone = [dfs(env, FixedTreePolicyValue(env), [r], **kw)[0] for r in roots]
    pv = FixedTreePolicyValue(env)
    together = dfs(env, pv, roots, **kw)
    per_root = [o.budget.expansions for o in alone]
    assert len(set(per_root)) > 1  # roots finish at different rounds
    assert pv.expand_calls == max(per_root) and pv.evaluate_calls == max(per_root)
    assert pv.states_expanded == sum(per_root)
    for a, t in zip(alone, together):
        assert a.tree == t.tree and [c.path for c in a.candidates] == [c.path for c in t.candidates]


def test_golden_tree():
    def search(nodes):
        env = FixedTreeEnv(nodes)
        return dfs(env, FixedTreePolicyValue(env), ["root"], max_answers=3, prune_threshold=-0.75)[0]

    check_search_golden("dfs_depth3_branch2_seed11", lambda: random_tree(depth=3, branching=2, seed=11), search)


def test_with_terminal_rewards_checked_failures_backtrack_and_the_first_win_ends_it():
    # rewards (the checker): x loses, a1 loses, c1 wins; the critic still ranks B, then A, then C
    nodes = {**NODES, "B2x": {**NODES["B2x"], "reward": -1.0}, "A1": {**NODES["A1"], "reward": -1.0},
             "B1": {**NODES["B1"], "reward": -1.0}, "C1": {**NODES["C1"], "reward": 1.0}}
    env = FixedTreeEnv(nodes)
    pv = FixedTreePolicyValue(env)
    out = dfs(env, pv, ["root"], use_terminal_reward=True)[0]
    # B -> B2 -> B2x fails, B1 fails, A -> A1 fails, C -> C1 wins: every failure backtracks
    assert pv.expand_batches == [["root"], ["B"], ["B2"], ["A"], ["C"]]
    assert out.answer == "c1" and out.best_path == ["root", "C", "C1"]
    assert out.stats["failures"] == 3 and [c.score for c in out.candidates] == [1.0]
    # terminals are scored by the checker, never sent to the value model
    assert pv.states_evaluated == 4  # A, B, C and B2
    # a win among a node's children is visited first, whatever the critic says of it
    nodes["C1"] = {**nodes["C1"], "value": -1.0}
    nodes["C2"] = {"value": 1.0, "terminal": True, "answer": "c2", "reward": -1.0}
    nodes["C"] = {**nodes["C"], "children": ["C2", "C1"]}
    out = dfs(FixedTreeEnv(nodes), FixedTreePolicyValue(FixedTreeEnv(nodes)), ["root"], use_terminal_reward=True)[0]
    assert out.answer == "c1" and out.stats["failures"] == 3


def test_prior_weight_lets_the_policy_reorder_siblings_but_not_the_candidates_scores():
    # A (value .5) outranks B (.4) on value; B's prior (.9 against .1) outweighs that at w = 1:
    # .4 + log .9 = .29 > .5 + log .1 = -1.80
    nodes = {"root": {"children": ["A", "B"]},
             "A": {"value": 0.5, "prior": 0.1, "children": ["A1"]},
             "B": {"value": 0.4, "prior": 0.9, "children": ["B1"]},
             "A1": {"value": 0.2, "terminal": True, "answer": "a"},
             "B1": {"value": 0.3, "terminal": True, "answer": "b"}}
    env = FixedTreeEnv(nodes)
    assert dfs(env, FixedTreePolicyValue(env), ["root"])[0].answer == "a"  # value alone
    pv = FixedTreePolicyValue(env)
    out = dfs(env, pv, ["root"], prior_weight=1.0)[0]
    assert pv.expand_batches == [["root"], ["B"]] and out.answer == "b"
    assert [c.score for c in out.candidates] == [0.3]  # a candidate is scored by the critic alone
