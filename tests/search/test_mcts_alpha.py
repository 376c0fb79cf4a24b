"""MCTS-α and MCTS-Rollout on hand-worked toy trees, plus budgets, batching and golden trees.

PUCT numbers below use c(N) = log((N + 19652 + 1) / 19652) + 1.25 ≈ 1.25 (the log term is below
3e-4 for N < 6, far too small to change any comparison worked out here).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.search.golden import check_search_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search.gumbel import gumbel_mcts
from tsllm.search.mcts_alpha import mcts_alpha, mcts_rollout, puct_scores
from tsllm.search.simulation import VirtualLosses, most_visited
from tsllm.search.tree import Node
from tsllm.types import Budget

# The critic loves "a" (0.9) but a's only continuation is worth -1; "b" is a modest 0.5 all the way.
TRAP = {
    "root": {"children": ["a", "b"]},
    "a": {"prior": 0.5, "value": 0.9, "children": ["a1"]},
    "b": {"prior": 0.5, "value": 0.5, "children": ["b1"]},
    "a1": {"value": -1.0, "answer": "A"},
    "b1": {"value": 0.5, "answer": "B"},
}


def run_alpha(nodes, roots=("root",), **knobs):
    env = FixedTreeEnv(nodes, root=roots[0])
    pv = FixedTreePolicyValue(env)
    return mcts_alpha(env, pv, list(roots), **knobs), pv


def child(snap, state):
    return next(c for c in snap["children"] if c["state"] == state)


def is_chain(nodes, path):
    return all(b in nodes[a].get("children", []) for a, b in zip(path, path[1:]))


# ---------------------------------------------------------------------------------------------
# PUCT and commit rules


def test_puct_formula_by_hand():
    root = Node("r", Budget())
    root.visits = 10
    seen, fresh = Node("x", root.budget, root, prior=0.3), Node("y", root.budget, root, prior=0.1)
    seen.visits, seen.value_sum = 3, 0.6  # Q = 0.2
    fresh.value = 0.7  # unvisited: Q is the critic's value
    root.children = [seen, fresh]
    # c_base = 10 makes the log term visible: log(21 / 10) + 1.25 = 1.991937; times sqrt(10) = 6.299059
    c = (math.log(2.1) + 1.25) * math.sqrt(10)
    assert c == pytest.approx(6.299059, abs=1e-6)
    scores = puct_scores(root, [0.3, 0.1], c_init=1.25, c_base=10)
    assert scores == pytest.approx([0.2 + 0.3 * c / 4, 0.7 + 0.1 * c / 1])  # 0.2 + 0.472429, 0.7 + 0.629906
    assert scores == pytest.approx([0.672429, 1.329906], abs=1e-6)


def test_most_visited_breaks_ties_by_prior_then_order():
    root = Node("r", Budget())
    kids = [Node(s, root.budget, root, prior=p) for s, p in (("x", 0.2), ("y", 0.5), ("z", 0.5))]
    root.children = kids
    for k, v in zip(kids, (3, 3, 3)):
        k.visits = v
    assert most_visited(root).state == "y"  # visits tie; y and z tie on prior; y is earlier
    kids[0].visits = 4
    assert most_visited(root).state == "x"


# ---------------------------------------------------------------------------------------------
# MCTS-α on hand-worked trees


def test_alpha_commits_the_child_whose_subtree_holds_up():
    # Move 1 (root expansion first, then 5 simulations; PUCT = Q + 0.5 * 1.25 * sqrt(N) / (1 + n)):
    #  sim1 N=1: a 0.9+0.625=1.525  b 0.5+0.625=1.125        -> a (expanded, backs up 0.9)
    #  sim2 N=2: a 0.9+0.442=1.342  b 0.5+0.884=1.384        -> b (expanded, backs up 0.5)
    #  sim3 N=3: a 0.9+0.541=1.441  b 0.5+0.541=1.041        -> a -> a1 (-1): Q(a) = -0.05
    #  sim4 N=4: a -0.05+0.417=0.367  b 0.5+0.625=1.125      -> b -> b1 (0.5)
    #  sim5 N=5: a -0.05+0.466=0.416  b 0.5+0.466=0.966      -> b -> b1
    # Visits a 2, b 3: commit b although the critic preferred a. Move 2 from b runs 5 more
    # simulations into b1 (b: 3+5, b1: 2+5), then b1 is terminal.
    (out,), pv = run_alpha(TRAP, num_simulations=5)
    assert out.best_path == ["root", "b", "b1"] and out.answer == "B"
    tree = out.tree
    assert tree["visits"] == 6  # 1 root expansion + 5 simulations; move 2 never touches the root
    a, b = child(tree, "a"), child(tree, "b")
    assert (a["visits"], a["q"], b["visits"], b["q"]) == (2, -0.05, 8, 0.5)
    assert child(a, "a1")["visits"] == 1 and child(b, "b1")["visits"] == 7
    # root value: (0 root + 0.9 + 0.5 - 1 + 0.5 + 0.5) / 6
    assert out.root_value == pytest.approx(1.4 / 6)
    assert out.stats["simulations"] == 10 and out.stats["trees"] == 1
    # root, a, b expanded; root, a, b, a1, b1 scored once each
    assert out.budget.expansions == 3 and out.budget.value_calls == 5
    assert [(c.answer, c.count, c.terminal) for c in out.candidates] == [("B", 1, True)]


def test_alpha_with_two_simulations_follows_the_optimistic_critic():
    # sim1 -> a, sim2 -> b (see above): visits tie 1-1, priors tie, so the earlier child a wins.
    (out,), _ = run_alpha(TRAP, num_simulations=2)
    assert out.best_path == ["root", "a", "a1"] and out.answer == "A"
    assert out.candidates[0].score == -1.0  # a terminal scores its critic value


def test_terminal_reward_overrides_the_critic_at_terminals():
    nodes = {
        "root": {"children": ["t1", "t2"]},
        "t1": {"prior": 0.5, "value": 0.9, "reward": -1.0, "answer": "bad"},
        "t2": {"prior": 0.5, "value": 0.0, "reward": 1.0, "answer": "good"},
    }
    # Critic only (PUCT = Q + 0.625 sqrt(N) / (1 + n)):
    #  N=1: t1 1.525 t2 0.625 -> t1; N=2: t1 1.342 t2 0.884 -> t1; N=3: t1 1.261 t2 1.083 -> t1;
    #  N=4: t1 1.213 t2 1.250 -> t2; N=5: t1 1.249 t2 0.699 -> t1. Visits 4-1: commit t1.
    (out,), _ = run_alpha(nodes, num_simulations=5)
    assert out.answer == "bad" and child(out.tree, "t1")["visits"] == 4
    # With rewards: t1 is tried first (critic init 0.9) and backs up -1, after which t2 (backing
    # up +1) wins every comparison: N=2: t1 -1+0.442 vs t2 0+0.884.  Visits 1-4: commit t2.
    (out,), _ = run_alpha(nodes, num_simulations=5, use_terminal_reward=True)
    assert out.answer == "good" and child(out.tree, "t2")["visits"] == 4
    assert out.candidates[0].score == 1.0


def test_depth_cap_ends_the_path_without_an_answer():
    nodes = random_tree(depth=4, branching=2, seed=3, value_noise=0.3)
    (out,), _ = run_alpha(nodes, num_simulations=4, max_depth=2)
    assert len(out.best_path) == 3 and is_chain(nodes, out.best_path)
    assert out.answer is None and out.candidates[0].terminal is False
    assert out.stats["max_depth"] == 2  # nothing below the cap was created


def test_temperature_samples_the_commit_in_proportion_to_visits():
    # After move 1 of TRAP the visits are a 2, b 3 (see above), so with temperature 1 the commit
    # picks b with probability 3/5; a path through b answers "B". 400 inter-tree paths (fresh
    # tree each, same statistics) give a Binomial(400, 0.6) count of "B": sd ~ 10.
    (out,), _ = run_alpha(TRAP, num_simulations=5, temperature=1.0, num_paths=400, tree_mode="inter",
                          rng=np.random.default_rng(5))
    counts = {c.answer: c.count for c in out.candidates}
    assert sum(counts.values()) == 400 and 200 < counts["B"] < 280
    assert out.answer == "B"  # majority vote
    assert out.stats["trees"] == 400


@pytest.mark.parametrize("algo", [mcts_alpha, mcts_rollout, gumbel_mcts])
def test_terminal_and_dead_end_roots(algo):
    nodes = {"done": {"value": 0.3, "reward": 1.0, "answer": "D"}, "dead": {"terminal": False, "value": 0.1}}
    env = FixedTreeEnv(nodes, root="done")
    pv = FixedTreePolicyValue(env)
    done, dead = algo(env, pv, ["done", "dead"])
    assert done.best_path == ["done"] and done.answer == "D" and done.candidates[0].score == 0.3
    assert dead.best_path == ["dead"] and dead.answer is None and dead.candidates[0].terminal is False
    assert pv.expand_calls == 1 and pv.states_expanded == 1  # only "dead" asks the policy, once
    (rewarded,) = algo(env, FixedTreePolicyValue(env), ["done"], use_terminal_reward=True)
    assert rewarded.candidates[0].score == 1.0


# ---------------------------------------------------------------------------------------------
# Repeated searches, noise, determinism


def test_intra_tree_accumulates_visits_inter_tree_starts_fresh():
    nodes = random_tree(depth=3, branching=3, seed=2, value_noise=0.3)
    (intra,), _ = run_alpha(nodes, num_simulations=4, num_paths=3, tree_mode="intra")
    (inter,), _ = run_alpha(nodes, num_simulations=4, num_paths=3, tree_mode="inter")
    # intra: one tree whose root saw 1 expansion + 3 paths x 4 simulations
    assert intra.stats["trees"] == 1 and intra.tree["visits"] == 1 + 3 * 4
    # inter: three trees, each root 1 + 4; deterministic search -> three identical paths, one vote each
    assert inter.stats["trees"] == 3 and inter.tree["visits"] == 1 + 4
    assert [c.count for c in inter.candidates] == [3]
    assert inter.stats["nodes"] == 3 * tree_nodes(inter.tree)
    # re-searching a built tree spends less than rebuilding it twice
    assert intra.budget.expansions < inter.budget.expansions
    assert intra.budget.value_calls < inter.budget.value_calls
    assert sum(c.count for c in intra.candidates) == 3 and intra.stats["paths"] == 3


def tree_nodes(snap):
    return 1 + sum(tree_nodes(c) for c in snap["children"])


def test_without_noise_the_search_ignores_the_rng():
    nodes = random_tree(depth=3, branching=3, seed=4, value_noise=0.5)
    outs = [run_alpha(nodes, num_simulations=6, num_paths=2, rng=np.random.default_rng(s))[0][0]
            for s in (0, 1, 2)]
    assert all(o.tree == outs[0].tree and o.best_path == outs[0].best_path for o in outs)


def test_noise_is_seeded_and_leaves_stored_priors_alone():
    nodes = random_tree(depth=3, branching=4, seed=4, value_noise=0.5)
    clean = run_alpha(nodes, num_simulations=8)[0][0]
    noisy = [run_alpha(nodes, num_simulations=8, add_noise=True, rng=np.random.default_rng(s))[0][0]
             for s in range(6)]
    again = run_alpha(nodes, num_simulations=8, add_noise=True, rng=np.random.default_rng(0))[0][0]
    assert again.tree == noisy[0].tree  # same seed, same search
    visit_patterns = {tuple(c["visits"] for c in o.tree["children"]) for o in noisy}
    assert len(visit_patterns) > 1  # different noise changes where simulations go
    priors = [c["prior"] for c in clean.tree["children"]]
    assert all([c["prior"] for c in o.tree["children"]] == priors for o in noisy)


# ---------------------------------------------------------------------------------------------
# Budgets


def test_expansion_budget_stops_the_search_and_reports_spending():
    nodes = random_tree(depth=5, branching=3, seed=1, value_noise=0.3)
    (out,), pv = run_alpha(nodes, num_simulations=4, budget=Budget(max_expansions=3))
    # one expansion per simulation at most, budget checked before each: exactly 3
    assert out.budget.expansions == 3 and pv.expand_calls == 3
    assert out.budget.tokens == 9  # 3 expansions x 3 children x 1 token
    assert out.stats["budget_exhausted"] == 1.0
    assert is_chain(nodes, out.best_path) and out.answer is None  # depth 5 not reached


def test_value_call_budget_may_overshoot_by_one_round():
    nodes = random_tree(depth=5, branching=3, seed=1, value_noise=0.3)
    (out,), _ = run_alpha(nodes, num_simulations=4, budget=Budget(max_value_calls=5))
    # round 1 scores the root and its 3 children (4 < 5, go on); round 2 expands one child and
    # scores its 3 children: 7 >= 5, stop.
    assert out.budget.value_calls == 7 and out.budget.expansions == 2


def test_zero_budget_spends_nothing():
    nodes = random_tree(depth=3, branching=3, seed=1)
    (out,), pv = run_alpha(nodes, budget=Budget(max_expansions=0), num_paths=4)
    assert pv.expand_calls == 0 and pv.evaluate_calls == 0
    assert out.best_path == ["root"] and out.answer is None and out.root_value is None
    assert out.stats["paths"] == 1  # no new path starts once the budget is gone


def test_budget_cuts_repeated_paths_short():
    nodes = random_tree(depth=3, branching=3, seed=2, value_noise=0.3)
    (out,), _ = run_alpha(nodes, num_simulations=4, num_paths=10, tree_mode="inter", budget=Budget(max_tokens=20))
    assert out.stats["paths"] < 10 and out.budget.tokens >= 20
    assert out.budget.tokens < 20 + 3  # checked before each simulation: at most one extra expansion


# ---------------------------------------------------------------------------------------------
# Batching over roots


class RecordingPV(FixedTreePolicyValue):
    def __init__(self, env):
        super().__init__(env)
        self.calls = []

    def expand(self, states, width):
        self.calls.append(("expand", len(states)))
        return super().expand(states, width)

    def evaluate(self, states):
        self.calls.append(("evaluate", len(states)))
        return super().evaluate(states)


def forest(seeds, depth=3, branching=3):
    nodes = {}
    for i, seed in enumerate(seeds):
        nodes.update(random_tree(depth, branching, seed=seed, prefix=f"t{i}", value_noise=0.4))
    return nodes, [f"t{i}root" for i in range(len(seeds))]


@pytest.mark.parametrize("algo,knobs", [(mcts_alpha, {"num_simulations": 4, "num_paths": 2}),
                                        (mcts_rollout, {"num_paths": 4})])
def test_roots_share_batched_calls_and_match_solo_runs(algo, knobs):
    nodes, roots = forest([5, 6, 7])
    env = FixedTreeEnv(nodes, root=roots[0])
    solo_pvs = [FixedTreePolicyValue(env) for _ in roots]
    alone = [algo(env, p, [r], **knobs)[0] for p, r in zip(solo_pvs, roots)]
    pv = RecordingPV(env)
    together = algo(env, pv, roots, **knobs)
    for a, t in zip(alone, together):  # trees are independent: batching changes nothing
        assert a.tree == t.tree and a.best_path == t.best_path and a.answer == t.answer
        assert a.budget.spent()["tokens"] == t.budget.spent()["tokens"]
    solo_calls = [p.expand_calls for p in solo_pvs]
    assert max(solo_calls) <= pv.expand_calls < sum(solo_calls)
    assert pv.states_expanded == sum(p.states_expanded for p in solo_pvs)
    assert max(n for kind, n in pv.calls if kind == "expand") == 3  # some round served all roots
    kinds = [kind for kind, _ in pv.calls]  # a round is at most one expand followed by one evaluate
    assert all(not (x == y == "expand") for x, y in zip(kinds, kinds[1:]))


# ---------------------------------------------------------------------------------------------
# MCTS-Rollout


def test_rollout_votes_over_reached_terminals():
    nodes = {
        "root": {"children": ["t1", "t2", "t3"]},
        "t1": {"value": 0.2, "answer": "X"},
        "t2": {"value": 0.1, "answer": "Y"},
        "t3": {"value": 0.15, "answer": "Y"},
    }
    # sim1 expands the root. Then PUCT = Q + (1/3) * 1.25 * sqrt(N) / (1 + n):
    #  N=1: t1 0.617 t2 0.517 t3 0.567 -> t1 (X);  N=2: t1 0.495 t2 0.689 t3 0.739 -> t3 (Y)
    #  N=3: t1 0.561 t2 0.822 t3 0.511 -> t2 (Y).  Three terminals reached: stop.
    env = FixedTreeEnv(nodes)
    (out,) = mcts_rollout(env, FixedTreePolicyValue(env), ["root"], num_paths=3)
    assert [(c.answer, c.count) for c in out.candidates] == [("X", 1), ("Y", 1), ("Y", 1)]
    assert out.answer == "Y" and out.best_path == ["root", "t3"]  # t3 outscores t2 among the Ys
    assert out.stats["simulations"] == 4 and out.stats["paths"] == 3
    (best,) = mcts_rollout(env, FixedTreePolicyValue(env), ["root"], num_paths=3, aggregation="orm_max")
    assert best.answer == "X" and best.best_path == ["root", "t1"]


def test_rollout_revisits_add_votes():
    # TRAP: sims 1-3 expand root, a, b; sim4 reaches a1 (-1), sim5 and sim6 reach b1 (PUCT as in
    # the MCTS-α test: N=4 -> b, N=5 -> b). Three reaches: A once, B twice.
    env = FixedTreeEnv(TRAP)
    (out,) = mcts_rollout(env, FixedTreePolicyValue(env), ["root"], num_paths=3)
    assert [(c.answer, c.count, c.score) for c in out.candidates] == [("A", 1, -1.0), ("B", 2, 0.5)]
    assert out.answer == "B" and out.tree["visits"] == 6


def test_rollout_out_of_budget_reports_partial_path():
    nodes = random_tree(depth=5, branching=3, seed=1, value_noise=0.3)
    env = FixedTreeEnv(nodes)
    (out,) = mcts_rollout(env, FixedTreePolicyValue(env), ["root"], num_paths=4, budget=Budget(max_expansions=2))
    assert out.budget.expansions == 2 and out.stats["budget_exhausted"] == 1.0
    assert out.answer is None and out.candidates[0].terminal is False
    assert is_chain(nodes, out.best_path) and len(out.best_path) == 3


def test_rollout_safety_stop_when_no_terminal_is_reachable():
    nodes = random_tree(depth=4, branching=2, seed=1)
    env = FixedTreeEnv(nodes)
    (out,) = mcts_rollout(env, FixedTreePolicyValue(env), ["root"], max_depth=2, max_simulations=50)
    assert out.stats["simulations"] == 50 and out.stats["paths"] == 0 and out.answer is None
    assert out.budget.expansions == 3  # root + its 2 children; depth-2 nodes are never expanded


# ---------------------------------------------------------------------------------------------
# Invariants on random trees and knobs


def walk(snap, on_path):
    yield snap, snap["state"] in on_path
    for c in snap["children"]:
        yield from walk(c, on_path)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sims=st.integers(0, 6), paths=st.integers(1, 3),
       mode=st.sampled_from(["intra", "inter"]), noise=st.booleans())
def test_visit_counts_add_up(seed, sims, paths, mode, noise):
    nodes = random_tree(depth=3, branching=3, seed=seed, value_noise=0.5)
    (out,), _ = run_alpha(nodes, num_simulations=sims, num_paths=paths, tree_mode=mode,
                          add_noise=noise, temperature=0.5 if noise else 0.0,
                          rng=np.random.default_rng(seed))
    on_path = {s for c in out.candidates for s in c.path}
    for node, committed in walk(out.tree, on_path):
        if node["children"] and not committed:
            # every visit of a node off the committed paths is its expansion or a pass to a child
            assert node["visits"] == 1 + sum(c["visits"] for c in node["children"])
        assert -1.0 <= node["q"] <= 1.0
    assert all(is_chain(nodes, c.path) and c.terminal for c in out.candidates)
    assert sum(c.count for c in out.candidates) == paths


# ---------------------------------------------------------------------------------------------
# Golden trees


def test_golden_mcts_alpha_intra():
    def search(nodes):
        return run_alpha(nodes, num_simulations=3, num_paths=2, tree_mode="intra")[0][0]

    check_search_golden("mcts_alpha_depth3_branch2_seed11",
                        lambda: random_tree(depth=3, branching=2, seed=11, value_noise=0.4), search)


def test_golden_mcts_rollout():
    def search(nodes):
        env = FixedTreeEnv(nodes)
        return mcts_rollout(env, FixedTreePolicyValue(env), ["root"], num_paths=3)[0]

    check_search_golden("mcts_rollout_depth3_branch2_seed11",
                        lambda: random_tree(depth=3, branching=2, seed=11, value_noise=0.4), search)


# ---------------------------------------------------------------------------------------------
# Parallel simulations with virtual loss


def record_expansions(pv):
    """Wrap pv.expand so each batched call's states are kept in pv.expanded (one list per call)."""
    pv.expanded = []
    inner = pv.expand

    def expand(states, width):
        pv.expanded.append(list(states))
        return inner(states, width)

    pv.expand = expand
    return pv


def fan(prefix):
    """`prefix` -> 8 children c0..c7, each with two terminal children; every value 0, priors uniform."""
    nodes = {prefix: {"children": [f"{prefix}c{i}" for i in range(8)]}}
    for i in range(8):
        kid = f"{prefix}c{i}"
        nodes[kid] = {"children": [f"{kid}.0", f"{kid}.1"]}
        nodes[f"{kid}.0"], nodes[f"{kid}.1"] = {}, {}
    return nodes


@pytest.mark.parametrize("algo,knobs", [(mcts_alpha, {"num_simulations": 8}),
                                        (mcts_rollout, {"num_paths": 8})])
@pytest.mark.parametrize("k,calls", [(1, 9), (2, 5), (4, 3), (8, 2)])
def test_parallel_simulations_cut_expand_calls_by_k(algo, knobs, k, calls):
    # Three copies of `fan`. Round 1 expands the three roots. All values are 0, so a visited
    # child has Q = 0 like an unvisited one but a smaller exploration bonus, and sequential PUCT
    # takes the unvisited children in order c0, c1, ...; inside a round the virtual loss (Q = -1)
    # does the same. So every round expands the next k children of each root: 8 / k rounds, each
    # one batched call for all three roots, after the root round: 1 + 8 / k calls. (MCTS-α then
    # commits c0, all tied at 1 visit, and its 8 terminal-bound simulations expand nothing;
    # MCTS-Rollout's next 8 simulations reach c0.0 ... c7.0 and expand nothing either.)
    nodes = {**fan("x"), **fan("y"), **fan("z")}
    env = FixedTreeEnv(nodes, root="x")
    pv = record_expansions(FixedTreePolicyValue(env))
    outs = algo(env, pv, ["x", "y", "z"], width=8, parallel_simulations=k, **knobs)
    assert pv.expand_calls == calls and pv.evaluate_calls == calls
    assert [len(batch) for batch in pv.expanded] == [3] + [3 * k] * (8 // k)
    assert pv.states_expanded == 3 * 9  # the same work, in fewer and bigger batches
    root, visits = outs[0].tree, [c["visits"] for c in outs[0].tree["children"]]
    if algo is mcts_alpha:  # c0: 1 + 8 simulations of move 2, split 4-4 between its children
        assert root["visits"] == 9 and visits == [9] + [1] * 7
        assert [g["visits"] for g in root["children"][0]["children"]] == [4, 4]
        assert outs[0].stats["simulations"] == 16  # exactly 8 per move whatever k is
    else:  # each child: its expansion, then one trip to its first terminal
        assert root["visits"] == 17 and visits == [2] * 8 and outs[0].stats["simulations"] == 17
        assert [c.path[-1] for c in outs[0].candidates] == [f"xc{i}.0" for i in range(8)]


# The critic loves "a"; "b" and "c" look bad. One child each below, so nothing is hidden deeper.
FAVOURITE = {
    "root": {"children": ["a", "b", "c"]},
    "a": {"value": 0.9, "children": ["a1"]}, "b": {"value": -0.9, "children": ["b1"]},
    "c": {"value": -0.9, "children": ["c1"]},
    "a1": {"value": 0.9}, "b1": {"value": -0.9}, "c1": {"value": -0.9},
}


@pytest.mark.parametrize("loss,round_two", [(1.0, ["a", "b", "c"]), (0.0, ["a"])])
def test_virtual_loss_spreads_one_rounds_descents(loss, round_two):
    # Priors 1/3, so PUCT = Q + 0.4167 sqrt(N) / (1 + n). Round 2 (after the root round), N = 1:
    # a 0.9 + 0.417 = 1.317, b = c = -0.9 + 0.417 = -0.483 -> a. Nothing in the tree changes
    # between the round's descents except the virtual loss, so without one all three pick a.
    #  loss 1: a counts 1 visit of -1.  N=2: a -1 + 0.295 = -0.705, b -0.9 + 0.589 = -0.311 -> b;
    #          N=3: a = b = -1 + 0.361 = -0.639, c -0.9 + 0.722 = -0.178 -> c.
    #  loss 0: a counts 1 visit of 0.   N=2: a 0 + 0.295 = 0.295 > b -0.311 -> a again;
    #          N=3: a 0 + 0.241 > b -0.178 -> a: one leaf three times, expanded once.
    env = FixedTreeEnv(FAVOURITE)
    pv = record_expansions(FixedTreePolicyValue(env))
    (out,) = mcts_alpha(env, pv, ["root"], num_simulations=3, parallel_simulations=3, virtual_loss=loss)
    assert pv.expanded == [["root"], round_two]
    a = child(out.tree, "a")
    # a is committed either way (loss 1: 1-1-1 tie goes to the earlier child; loss 0: 3-0-0) and
    # gets the 3 simulations of move 2; with loss 0 its 3 duplicate selections were each backed up.
    assert a["visits"] == (1 if loss else 3) + 3 and out.best_path == ["root", "a", "a1"]
    # Sequentially (k=1) every simulation picks a too: sim 2 at N=2 gives a 0.9 + 0.295 > b -0.311.
    sequential = record_expansions(FixedTreePolicyValue(env))
    mcts_alpha(env, sequential, ["root"], num_simulations=3)
    assert sequential.expanded == [["root"], ["a"]]


def test_hand_worked_two_parallel_simulations():
    nodes = {
        "root": {"children": ["t1", "t2"]},
        "t1": {"prior": 0.5, "value": 0.9, "reward": -1.0, "answer": "bad"},
        "t2": {"prior": 0.5, "value": 0.0, "reward": 1.0, "answer": "good"},
    }
    # PUCT = Q + 0.625 sqrt(N) / (1 + n), virtual loss 1, 5 simulations in rounds of 2, 2, 1.
    # Critic only:
    #  round 2, N=1: t1 1.525 t2 0.625 -> t1; t1 gets a virtual -1: N=2: t1 -1 + 0.442 = -0.558,
    #           t2 0 + 0.884 -> t2.  Back up t1 0.9, t2 0.
    #  round 3, N=3: t1 0.9 + 0.541 = 1.441, t2 0.541 -> t1; virtual -1 on t1 (2 visits, Q -0.05):
    #           N=4: t1 -0.05 + 0.417 = 0.367, t2 0 + 0.625 -> t2.  Back up t1 0.9, t2 0.
    #  round 4, N=5: t1 0.9 + 0.466 = 1.366, t2 0 + 0.466 -> t1.
    # Visits t1 3, t2 2 (one at a time they are 4-1: the virtual loss spends a simulation on t2).
    (out,), _ = run_alpha(nodes, num_simulations=5, parallel_simulations=2)
    assert [c["visits"] for c in out.tree["children"]] == [3, 2] and out.answer == "bad"
    assert out.tree["visits"] == 6 and out.root_value == pytest.approx(3 * 0.9 / 6)  # no loss left behind
    # With terminal rewards round 2 is the same (t1, t2), but they back up -1 and +1:
    #  round 3, N=3: t1 -1 + 0.541, t2 1 + 0.541 -> t2; virtual -1 on t2 (2 visits, Q 0):
    #           N=4: t1 -1 + 0.625 = -0.375, t2 0 + 0.417 -> t2 again: a duplicate, backed up twice.
    #  round 4, N=5: t1 -1 + 0.699, t2 1 + 0.349 -> t2.  Visits 1-4, as one at a time.
    (out,), _ = run_alpha(nodes, num_simulations=5, parallel_simulations=2, use_terminal_reward=True)
    assert [c["visits"] for c in out.tree["children"]] == [1, 4] and out.answer == "good"
    assert child(out.tree, "t2")["q"] == 1.0 and out.root_value == pytest.approx(3 / 6)


def test_virtual_losses_are_undone_exactly():
    root = Node("r", Budget())
    a = Node("a", root.budget, root)
    a1 = Node("a1", root.budget, a)
    root.visits, root.value_sum, a.visits, a.value_sum = 3, 0.1, 2, 0.7
    losses = VirtualLosses(0.3)
    losses.add(a1, root)
    losses.add(a, root)
    assert (root.visits, a.visits, a1.visits) == (5, 4, 1)
    assert root.value_sum == pytest.approx(0.1 - 0.6) and a1.q == pytest.approx(-0.3)
    losses.undo()
    # exact, where adding the losses back would not be: 0.1 - 0.3 - 0.3 + 0.3 + 0.3 != 0.1
    assert (root.visits, root.value_sum, a.visits, a.value_sum, a1.visits, a1.value_sum) == (
        3, 0.1, 2, 0.7, 0, 0.0)
    losses.add(a1, a)  # stops at the move root: nodes above it are left alone
    assert (root.visits, a.visits, a1.visits) == (3, 3, 1)


def test_parallel_budget_is_checked_per_round():
    # fan: round 1 expands the root (1 < 2, go on); round 2 started under the limit, so all 4 of
    # its simulations complete, each expanding a child: 5 spent. Then the budget stops the search.
    env = FixedTreeEnv(fan("x"), root="x")
    (out,) = mcts_alpha(env, FixedTreePolicyValue(env), ["x"], num_simulations=8, width=8,
                        parallel_simulations=4, budget=Budget(max_expansions=2))
    assert out.budget.expansions == 5 and out.stats["budget_exhausted"] == 1.0
    assert out.stats["simulations"] == 4 and out.tree["visits"] == 5


def test_parallel_rollout_does_not_overshoot_num_paths():
    nodes = {
        "root": {"children": ["t1", "t2", "t3"]},
        "t1": {"value": 0.2, "answer": "X"},
        "t2": {"value": 0.1, "answer": "Y"},
        "t3": {"value": 0.15, "answer": "Y"},
    }
    # PUCT = Q + 0.4167 sqrt(N) / (1 + n). Round 1 expands the root. Round 2 (2 wanted), N=1:
    # t1 0.617 t2 0.517 t3 0.567 -> t1; virtual -1: N=2: t1 -1 + 0.295, t2 0.1 + 0.589, t3 0.15 +
    # 0.589 -> t3. Round 3 wants 1 terminal more, so selects 1: N=3: t1 0.561 t2 0.822 t3 0.511
    # -> t2. The same three as one at a time, in 3 rounds and 4 simulations (not 5).
    env = FixedTreeEnv(nodes)
    (out,) = mcts_rollout(env, FixedTreePolicyValue(env), ["root"], num_paths=3, parallel_simulations=2)
    assert [(c.path[-1], c.count) for c in out.candidates] == [("t1", 1), ("t3", 1), ("t2", 1)]
    assert out.stats["simulations"] == 4 and out.stats["paths"] == 3 and out.tree["visits"] == 4


@pytest.mark.parametrize("knobs", [{"parallel_simulations": 0}, {"virtual_loss": -1.0}])
@pytest.mark.parametrize("algo", [mcts_alpha, mcts_rollout])
def test_parallel_knobs_are_checked(algo, knobs):
    env = FixedTreeEnv(TRAP)
    with pytest.raises(ValueError):
        algo(env, FixedTreePolicyValue(env), ["root"], **knobs)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sims=st.integers(0, 6), paths=st.integers(1, 3),
       mode=st.sampled_from(["intra", "inter"]), k=st.integers(1, 4), loss=st.sampled_from([0.0, 1.0, 3.0]))
def test_parallel_visits_add_up_once_virtual_losses_are_undone(seed, sims, paths, mode, k, loss):
    nodes = random_tree(depth=3, branching=3, seed=seed, value_noise=0.5)
    (out,), _ = run_alpha(nodes, num_simulations=sims, num_paths=paths, tree_mode=mode,
                          parallel_simulations=k, virtual_loss=loss)
    on_path = {s for c in out.candidates for s in c.path}
    for node, committed in walk(out.tree, on_path):
        if node["children"] and not committed:
            # the simulations that ended here all came in the round that expanded it: 1 to k of
            # them (1 to k selections of one leaf), each backing up its critic value; every other
            # visit passed to a child. A virtual loss left behind would break both sums.
            ends = node["visits"] - sum(c["visits"] for c in node["children"])
            assert 1 <= ends <= k
            passed = sum(c["q"] * c["visits"] for c in node["children"])
            assert node["q"] * node["visits"] == pytest.approx(ends * node["value"] + passed, abs=1e-4)
        assert -1.0 <= node["q"] <= 1.0
    # depth-3 tree: 3 moves per path, exactly `sims` simulations each
    assert out.stats["simulations"] == paths * 3 * sims
    assert out.tree["visits"] == 1 + (paths if mode == "intra" else 1) * sims


def test_golden_mcts_alpha_two_parallel_simulations():
    # Checked by hand (PUCT with the stored priors, virtual loss 1): path 1, move 1 selects
    # [root.1, root.0] then [root.1.1, root.0.1]; visits tie 2-2, so the higher prior root.1 is
    # committed. Move 2 selects [root.1.1.0, root.1.0] then root.1.1.0 twice (a duplicate, backed
    # up twice) -> root.1.1 (4 visits vs 1). Path 2 opens with [root.0.0, root.1.1.0], the only
    # time root.0 is chosen again: root.0 ends with 3 visits, root 1 + 2 x 4, 24 simulations
    # (2 paths x 3 moves x 4), 7 expansions, 15 value calls.
    def search(nodes):
        return run_alpha(nodes, num_simulations=4, num_paths=2, tree_mode="intra",
                         parallel_simulations=2)[0][0]

    check_search_golden("mcts_alpha_parallel2_depth3_branch2_seed11",
                        lambda: random_tree(depth=3, branching=2, seed=11, value_noise=0.4), search)
