"""Gumbel MCTS: Sequential Halving and top-k by hand, the improved-policy rule, best-q behaviour,
determinism, budgets, batching and a golden tree.

σ(q̂) = (50 + max_visits) * 0.1 * q̂ with q̂ the completed Q min-max normalised over the siblings.
"""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.search.golden import check_search_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search.gumbel import GumbelRule, gumbel_mcts, sigma_q
from tsllm.search.tree import Node
from tsllm.types import Budget

# Prior and critic both favour "a", but a's only continuation is worth -1; b's is worth 0.8.
TRAP = {
    "root": {"children": ["a", "b", "c", "d"]},
    "a": {"prior": 0.7, "value": 0.9, "children": ["a1"]},
    "b": {"prior": 0.1, "value": 0.0, "children": ["b1"]},
    "c": {"prior": 0.1, "value": -0.5, "answer": "C"},
    "d": {"prior": 0.1, "value": -0.2, "answer": "D"},
    "a1": {"value": -1.0, "answer": "A"},
    "b1": {"value": 0.8, "answer": "B"},
}


def run(nodes, roots=("root",), **knobs):
    env = FixedTreeEnv(nodes, root=roots[0])
    pv = FixedTreePolicyValue(env)
    return gumbel_mcts(env, pv, list(roots), **knobs), pv


def visits(snap):
    return {c["state"]: c["visits"] for c in snap["children"]}


def is_chain(nodes, path):
    return all(b in nodes[a].get("children", []) for a, b in zip(path, path[1:]))


def test_sequential_halving_schedule_by_hand():
    # 8 terminal children, uniform priors, no noise: the ranking is by value alone.
    values = [0.3, 0.8, 0.1, 0.5, 0.7, 0.2, 0.6, 0.4]
    nodes = {"root": {"children": [f"c{i}" for i in range(8)]}}
    nodes.update({f"c{i}": {"value": v} for i, v in enumerate(values)})
    (out,), _ = run(nodes, num_simulations=24, max_num_considered_actions=8, gumbel_scale=0.0, width=8)
    # 3 phases: 8 survivors x 24 // (3 * 8) = 1 visit; the best 4 (0.8, 0.7, 0.6, 0.5) get
    # 24 // (3 * 4) = 2 more; the best 2 (0.8, 0.7) get 24 // (3 * 2) = 4 more. 8 + 8 + 8 = 24.
    assert visits(out.tree) == {"c0": 1, "c1": 7, "c2": 1, "c3": 3, "c4": 7, "c5": 1, "c6": 3, "c7": 1}
    assert out.best_path == ["root", "c1"] and out.stats["simulations"] == 24


def test_only_the_top_k_children_are_considered():
    nodes = {"root": {"children": ["c0", "c1", "c2", "c3"]}}
    for i, (p, v) in enumerate([(0.4, 0.0), (0.3, 0.1), (0.2, 0.2), (0.1, 0.9)]):
        nodes[f"c{i}"] = {"prior": p, "value": v}
    (out,), _ = run(nodes, num_simulations=8, max_num_considered_actions=2, gumbel_scale=0.0)
    # No noise: the top 2 by logits are c0, c1; one phase gives each 8 // 2 = 4 visits. c3 has
    # the best value but is never considered. Commit: q̂ over all four = [0, 1/9, 2/9, 1], σ scale
    # (50 + 4) * 0.1 = 5.4: c0 log 0.4 + 0 = -0.916, c1 log 0.3 + 0.6 = -0.604 -> c1.
    assert visits(out.tree) == {"c0": 4, "c1": 4, "c2": 0, "c3": 0}
    assert out.answer == "c1"


def test_sigma_and_improved_policy_rule_by_hand():
    parent = Node("p", Budget())
    parent.visits = 4
    x, y = Node("x", parent.budget, parent, prior=0.7), Node("y", parent.budget, parent, prior=0.3)
    parent.children = [x, y]
    x.value = y.value = 0.5
    x.visits, x.value_sum = 3, 1.5  # Q 0.5 = y's critic value: q̂ all zero, σ all zero
    assert list(sigma_q(parent, 50.0, 0.1)) == [0.0, 0.0]
    rule = GumbelRule(4, 16, 1.0, 50.0, 0.1)
    # π' = priors [0.7, 0.3]; minus visit share n / (1 + 3) = [0.75, 0]: [-0.05, 0.3] -> y
    assert rule.interior_child(parent) is y
    x.visits, x.value_sum = 0, 0.0  # nobody visited: π' alone decides -> x
    assert rule.interior_child(parent) is x
    y.value = 1.0  # q̂ = [0, 1], σ = [0, 5.0]: π'(y) = e^5 * 0.3 / (0.7 + e^5 * 0.3) ~ 0.98 -> y
    assert list(sigma_q(parent, 50.0, 0.1)) == pytest.approx([0.0, 5.0])
    assert rule.interior_child(parent) is y


def test_enough_simulations_find_the_child_with_the_best_q():
    # 32 simulations, no noise. Phase 1 (2 phases for k = 4): 32 // (2 * 4) = 4 visits each.
    #   a: expand (0.9) then a1 three times (-1): Q -0.525;  b: 0.0 then b1 x3 (0.8): Q 0.6;
    #   c -0.5, d -0.2 (terminals). q̂ = [0, 1, 0.022, 0.289], σ scale 5.4:
    #   a log .7 + 0 = -0.36, b log .1 + 5.4 = 3.10, c -2.18, d -0.74 -> keep b and a.
    # Phase 2: 8 more each; b's Q climbs towards 0.8, a's falls towards -1: commit b.
    (out,), _ = run(TRAP, num_simulations=32, gumbel_scale=0.0)
    assert out.best_path == ["root", "b", "b1"] and out.answer == "B"
    # With 4 simulations every considered child gets one visit, which only expands it: q̂ is the
    # critic's view (a 0.9 best), so a wins: a log .7 + 5.1 = 4.74 vs b log .1 + 5.1 * 0.36 = -0.48.
    (few,), _ = run(TRAP, num_simulations=4, gumbel_scale=0.0)
    assert few.answer == "A"
    # With Gumbel noise the same holds for almost every seed (the σ margin is ~3.4 nats, a
    # logistic tail of ~3%); the seeds are fixed so this is not flaky.
    many = [run(TRAP, num_simulations=32, rng=np.random.default_rng(s))[0][0].answer for s in range(40)]
    few = [run(TRAP, num_simulations=4, rng=np.random.default_rng(s))[0][0].answer for s in range(40)]
    assert many.count("B") >= 37 and few.count("A") >= 37


def test_fixed_rng_is_deterministic_and_seeds_matter():
    nodes = random_tree(depth=3, branching=4, seed=8, value_noise=0.5)
    first = run(nodes, num_simulations=6, max_num_considered_actions=2, rng=np.random.default_rng(3))[0][0]
    again = run(nodes, num_simulations=6, max_num_considered_actions=2, rng=np.random.default_rng(3))[0][0]
    assert first.tree == again.tree and first.best_path == again.best_path
    # only 2 of 4 root children are considered, drawn by Gumbel-top-2: seeds change which
    considered = {tuple(v > 0 for v in visits(run(nodes, num_simulations=6, max_num_considered_actions=2,
                                                   rng=np.random.default_rng(s))[0][0].tree).values())
                  for s in range(8)}
    assert len(considered) > 1
    # no noise: the rng is irrelevant
    flat = [run(nodes, num_simulations=6, gumbel_scale=0.0, rng=np.random.default_rng(s))[0][0].tree
            for s in range(3)]
    assert flat[0] == flat[1] == flat[2]


def test_budget_exhaustion_stops_and_reports():
    nodes = random_tree(depth=5, branching=3, seed=1, value_noise=0.3)
    (out,), pv = run(nodes, num_simulations=8, budget=Budget(max_expansions=2))
    assert out.budget.expansions == 2 and pv.expand_calls == 2 and out.budget.tokens == 6
    assert out.stats["budget_exhausted"] == 1.0
    assert is_chain(nodes, out.best_path) and out.answer is None


def test_roots_share_batched_calls():
    nodes = {}
    for i, seed in enumerate((5, 6, 7)):
        nodes.update(random_tree(3, 3, seed=seed, prefix=f"t{i}", value_noise=0.4))
    roots = [f"t{i}root" for i in range(3)]
    env = FixedTreeEnv(nodes, root=roots[0])
    solo = [FixedTreePolicyValue(env) for _ in roots]
    alone = [gumbel_mcts(env, p, [r], num_simulations=4, gumbel_scale=0.0)[0] for p, r in zip(solo, roots)]
    pv = FixedTreePolicyValue(env)
    together = gumbel_mcts(env, pv, roots, num_simulations=4, gumbel_scale=0.0)
    assert [a.tree for a in alone] == [t.tree for t in together]
    assert max(p.expand_calls for p in solo) <= pv.expand_calls < sum(p.expand_calls for p in solo)
    assert pv.evaluate_calls < sum(p.evaluate_calls for p in solo)
    assert pv.states_expanded == sum(p.states_expanded for p in solo)


def walk(snap, on_path):
    yield snap, snap["state"] in on_path
    for c in snap["children"]:
        yield from walk(c, on_path)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sims=st.integers(0, 12), k=st.integers(1, 4),
       paths=st.integers(1, 2), mode=st.sampled_from(["intra", "inter"]))
def test_visit_counts_add_up(seed, sims, k, paths, mode):
    nodes = random_tree(depth=3, branching=3, seed=seed, value_noise=0.5)
    (out,), _ = run(nodes, num_simulations=sims, max_num_considered_actions=k, num_paths=paths,
                    tree_mode=mode, rng=np.random.default_rng(seed))
    on_path = {s for c in out.candidates for s in c.path}
    for node, committed in walk(out.tree, on_path):
        if node["children"] and not committed:
            assert node["visits"] == 1 + sum(c["visits"] for c in node["children"])
    assert all(is_chain(nodes, c.path) and c.terminal for c in out.candidates)
    assert out.stats["simulations"] <= sims * 3 * paths  # at most 3 moves per path (depth 3)


def test_golden_gumbel():
    def search(nodes):
        return run(nodes, num_simulations=4, rng=np.random.default_rng(0))[0][0]

    check_search_golden("gumbel_depth3_branch2_seed11",
                        lambda: random_tree(depth=3, branching=2, seed=11, value_noise=0.4), search)
