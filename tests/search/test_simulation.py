"""The simulation driver on its own: the rules are plain functions, AlphaZero simulations back up at
the leaf they expand, RAP walks go on to an end, and each round is one batched expand + evaluate."""

import pytest

from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue
from tsllm.search.simulation import simulate
from tsllm.types import Budget

NODES = {
    "root": {"value": 0.1, "children": ["A", "B"]},
    "A": {"value": 0.2, "children": ["A1", "A2"]},
    "B": {"value": 0.3},
    "A1": {"value": 0.5},
    "A2": {"value": -0.5},
}


def first_child(node):
    return node.children[0]


def simulations(n):
    """A plan that starts one simulation per round until `n` have started."""
    def plan(search, rng):
        if search.simulations >= n:
            return 0
        search.simulations += 1
        return 1
    return plan


def run(n, **kwargs):
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    (search,) = simulate(env, pv, ["root"], plan_fn=simulations(n), interior_action_selection_fn=first_child,
                         width=2, **kwargs)
    return search, pv


def test_alphazero_simulations_back_up_the_leaf_they_expand():
    search, pv = run(3)
    root = search.tree
    a, a1 = root.children[0], root.children[0].children[0]
    # sim 1 expands the root and backs up its own value (0.1), sim 2 expands A (0.2), sim 3 reaches A1 (0.5)
    assert pv.expand_batches == [["root"], ["A"]] and pv.evaluate_calls == 2
    assert (root.visits, a.visits, a1.visits) == (3, 2, 1)
    assert root.value_sum == pytest.approx(0.1 + 0.2 + 0.5) and a.value_sum == pytest.approx(0.2 + 0.5)
    assert search.reached == [a1] and search.done


def test_rap_walks_go_on_through_what_they_expand_to_an_end():
    search, pv = run(1, walk_to_end=True)
    root = search.tree
    a, a1 = root.children[0], root.children[0].children[0]
    # one simulation over three rounds: expand the root, expand A, back up A1 (0.5) from A1 to the root
    assert pv.expand_batches == [["root"], ["A"]]
    assert (root.visits, a.visits, a1.visits) == (1, 1, 1) and root.value_sum == pytest.approx(0.5)
    assert root.value is None  # the root's own value is never backed up, so it is never asked for


def test_rap_walk_interrupted_by_the_budget_is_dropped():
    search, pv = run(1, walk_to_end=True, budget=Budget(max_expansions=1))
    assert pv.expand_batches == [["root"]] and search.tree.visits == 0
    assert search.exhausted and search.done and search.walk is None


def test_the_root_rule_makes_the_first_step_only():
    def last_at_root(search, node, rng):
        return node.children[-1]

    search, _ = run(2, root_action_selection_fn=last_at_root)
    # sim 1 expands the root; sim 2 goes to B (a terminal), not A
    assert [c.visits for c in search.tree.children] == [0, 1] and search.reached == [search.tree.children[1]]
