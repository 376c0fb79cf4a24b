"""mcts: hand-worked simulations (PUCT, UCT, critic vs terminal reward), budgets, lockstep
batching across roots, and a golden tree."""


import pytest

from tests.search.golden import check_search_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search.mcts import mcts
from tsllm.types import Budget

# The critic likes B (.6) and its terminal B1 (.5), but B1 is wrong; it dislikes A1 (-.9), which is right.
NODES = {
    "root": {"children": ["A", "B"]},
    "A": {"value": 0.2, "children": ["A1"]},
    "B": {"value": 0.6, "children": ["B1"]},
    "A1": {"value": -0.9, "reward": 1.0, "answer": "right"},
    "B1": {"value": 0.5, "reward": -1.0, "answer": "wrong"},
}


def _visits(out):
    return {c["state"]: c["visits"] for c in out.tree["children"]}


def test_puct_with_critic_values_follows_the_critic():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = mcts(env, pv, ["root"], num_simulations=4, c_puct=1.0)[0]
    # P = .5 each.  sim1: root has N=0, so PUCT = Q only: B (.6) > A (.2); B expanded, B1 backs up .5.
    # sim2: N=1: A = .2 + .5*1/1 = .7, B = .5 + .5*1/2 = .75 -> B again (.5).
    # sim3: N=2: A = .2 + .5*1.414/1 = .907, B = .5 + .5*1.414/3 = .736 -> A, expanded, A1 backs up -.9.
    # sim4: N=3: A = -.9 + .5*1.732/2 = -.467, B = .5 + .5*1.732/3 = .789 -> B.
    assert pv.expand_batches == [["root"], ["B"], ["A"]]
    assert _visits(out) == {"A": 1, "B": 3}
    assert out.best_path == ["root", "B", "B1"] and out.answer == "wrong"
    assert out.root_value == pytest.approx((0.5 * 3 - 0.9) / 4)
    assert [(c.answer, c.count, round(c.score, 9)) for c in out.candidates] == [("right", 1, -0.9), ("wrong", 3, 0.5)]
    assert out.stats["simulations"] == 4


def test_terminal_reward_corrects_the_critic():
    env = FixedTreeEnv(NODES)
    out = mcts(env, FixedTreePolicyValue(env), ["root"], num_simulations=4, use_terminal_reward=True)[0]
    # sim1: B -> B1, reward -1.  sim2: A = .2 + .5 = .7 vs B = -1 + .25 -> A -> A1, reward +1.
    # sim3, sim4: A (1 + .5*sqrt(N)/(1+n_A)) stays far above B (-1 + ...).
    assert _visits(out) == {"A": 3, "B": 1}
    assert out.best_path == ["root", "A", "A1"] and out.answer == "right"
    assert out.root_value == pytest.approx((3 - 1) / 4)


def test_uct_visits_unvisited_children_first_by_critic_value():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = mcts(env, pv, ["root"], num_simulations=3, selection="uct", c_puct=1.0)[0]
    # sim1: both unvisited -> higher critic value B; sim2: A is the only unvisited child.
    # sim3: A = -.9 + sqrt(ln 2 / 1) = -.067, B = .5 + .833 = 1.333 -> B.
    assert pv.expand_batches == [["root"], ["B"], ["A"]]
    assert _visits(out) == {"A": 1, "B": 2}


def test_expansion_budget_drops_the_interrupted_simulation():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = mcts(env, pv, ["root"], num_simulations=10, budget=Budget(max_expansions=2))[0]
    # expansions: root, B; sim1 completes at B1; sim2 picks B again (.75 > .7, see above) and needs
    # no model; sim3 picks A, which needs an expansion -> budget spent, search stops, sim3 dropped.
    assert out.budget.expansions == 2 and pv.expand_calls == 2
    assert out.stats["simulations"] == 2 and out.tree["visits"] == 2
    assert out.best_path == ["root", "B", "B1"]
    assert out.budget.spent()["value_calls"] == 3  # A, B, B1


def test_token_budget():
    nodes = {k: {**v, "tokens": 7} for k, v in NODES.items()}
    env = FixedTreeEnv(nodes)
    out = mcts(env, FixedTreePolicyValue(env), ["root"], num_simulations=10, budget=Budget(max_tokens=10))[0]
    # root expansion makes 14 tokens >= 10: sim1 stops at B before its expansion; nothing backed up.
    assert out.budget.tokens == 14 and out.stats["simulations"] == 0
    assert out.root_value is None and out.answer is None and out.best_path == ["root"]


def test_terminal_root_is_scored_without_search():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = mcts(env, pv, ["B1"], num_simulations=3)[0]
    assert pv.expand_calls == 0 and pv.evaluate_calls == 1
    assert out.best_path == ["B1"] and out.answer == "wrong" and out.root_value == pytest.approx(0.5)


def test_roots_advance_in_lockstep_one_call_per_round():
    nodes = {}
    for i in range(3):
        nodes.update(random_tree(depth=3, branching=2 + i, seed=10 + i, prefix=f"t{i}"))
    roots = ["t0root", "t1root", "t2root"]
    env = FixedTreeEnv(nodes, root="t0root")
    alone = [mcts(env, FixedTreePolicyValue(env), [r], num_simulations=6)[0] for r in roots]
    pv = FixedTreePolicyValue(env)
    together = mcts(env, pv, roots, num_simulations=6)
    # every round each unfinished root contributes exactly one node, so the number of rounds is the
    # largest per-root expansion count, and each round is one expand + one evaluate call
    per_root = [o.budget.expansions for o in alone]
    assert len(set(per_root)) > 1  # roots finish at different rounds
    assert pv.expand_calls == max(per_root) and pv.evaluate_calls == max(per_root)
    assert pv.states_expanded == sum(per_root)
    for a, t in zip(alone, together):
        assert a.tree == t.tree and a.best_path == t.best_path


def test_golden_tree():
    def search(nodes):
        env = FixedTreeEnv(nodes)
        return mcts(env, FixedTreePolicyValue(env), ["root"], num_simulations=5, c_puct=1.0)[0]

    check_search_golden("mcts_depth3_branch2_seed11", lambda: random_tree(depth=3, branching=2, seed=11), search)


def test_a_root_that_ends_its_own_walk_backs_up_its_critic_value():
    # "dead" is not terminal but the policy gives it no children; "B1" is a terminal root. Both are
    # scored in the same batched value call as the other root's children, once.
    nodes = {**NODES, "dead": {"value": 0.3, "terminal": False}}
    env = FixedTreeEnv(nodes)
    pv = FixedTreePolicyValue(env)
    dead, terminal, normal = mcts(env, pv, ["dead", "B1", "root"], num_simulations=3)
    assert dead.root_value == pytest.approx(0.3) and dead.tree["visits"] == 3
    assert terminal.root_value == pytest.approx(0.5) and terminal.tree["visits"] == 3
    assert dead.budget.value_calls == 1 and terminal.budget.value_calls == 1
    assert normal.tree == mcts(env, FixedTreePolicyValue(env), ["root"], num_simulations=3)[0].tree
    assert pv.expand_batches[0] == ["dead", "root"] and pv.evaluate_calls == pv.expand_calls


def test_terminal_root_under_terminal_rewards_needs_no_value_call():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    out = mcts(env, pv, ["A1"], num_simulations=2, use_terminal_reward=True)[0]
    assert pv.evaluate_calls == 0 and out.budget.value_calls == 0
    assert out.root_value == pytest.approx(1.0) and out.stats["simulations"] == 2
