import numpy as np
import pytest

from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree

NODES = {
    "root": {"children": ["A", "B", "C"]},
    "A": {"prior": 0.5, "score": 0.1, "value": 0.2, "tokens": 3, "children": ["A1"]},
    "B": {"prior": 0.3, "value": -0.5, "terminal": True, "reward": -1.0, "answer": "b"},
    "C": {"prior": 0.2, "value": 0.9, "terminal": True, "reward": 1.0},
    "A1": {"reward": 1.0},
}


def test_env_reads_fields_and_defaults():
    env = FixedTreeEnv(NODES)
    assert env.initial_state() == "root" and env.initial_state("A") == "A"
    assert env.step("root", "B") == "B"
    assert env.is_terminal("B") and env.is_terminal("A1")  # explicit, and leaf by default
    assert not env.is_terminal("A")
    assert env.reward("C") == 1.0 and env.reward("A") == 0.0
    assert env.answer("B") == "b" and env.answer("C") == "C"  # answer defaults to the node id


@pytest.mark.parametrize(
    "nodes, message",
    [
        ({"x": {}}, "root 'root'"),
        ({"root": {"children": ["ghost"]}}, "missing child 'ghost'"),
        ({"root": {"valu": 1.0}}, "unknown fields ['valu']"),
    ],
)
def test_env_rejects_malformed_trees(nodes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FixedTreeEnv(nodes)


def test_env_step_rejects_non_children():
    with pytest.raises(ValueError, match="not a child"):
        FixedTreeEnv(NODES).step("root", "A1")


def test_expand_keeps_top_priors_in_listed_order_and_renormalises():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    full, top2, leaf = (
        pv.expand(["root"], 10)[0], pv.expand(["root"], 2)[0], pv.expand(["C"], 4)[0])
    assert full.actions == ["A", "B", "C"]
    assert np.allclose(full.priors, [0.5, 0.3, 0.2])
    assert full.token_counts == [3, 1, 1] and full.step_scores == [0.1, 0.0, 0.0]
    assert top2.actions == ["A", "B"] and np.allclose(top2.priors, [0.625, 0.375])
    assert leaf.actions == [] and leaf.priors == []
    assert pv.expand_calls == 3 and pv.states_expanded == 3


def test_uniform_prior_when_absent_and_values():
    env = FixedTreeEnv({"root": {"children": ["x", "y"]}, "x": {"value": 0.3}, "y": {}})
    pv = FixedTreePolicyValue(env)
    assert pv.expand(["root"], 2)[0].priors == [0.5, 0.5]
    assert pv.evaluate(["x", "y"]) == [0.3, 0.0]
    assert pv.evaluate_calls == 1 and pv.states_evaluated == 2


def test_rollout_samples_by_prior_reproducibly():
    env = FixedTreeEnv(NODES)
    a = FixedTreePolicyValue(env, seed=7).rollout(["root"], 400)[0]
    b = FixedTreePolicyValue(env, seed=7).rollout(["root"], 400)[0]
    assert [r.actions for r in a] == [r.actions for r in b]
    first = [r.actions[0] for r in a]
    # priors 0.5/0.3/0.2: with 400 draws each frequency is within ~0.08 of its prior
    for child, p in (("A", 0.5), ("B", 0.3), ("C", 0.2)):
        assert abs(first.count(child) / 400 - p) < 0.08
    through_a = next(r for r in a if r.actions[0] == "A")
    assert through_a.actions == ["A", "A1"] and through_a.token_count == 4  # A costs 3 tokens, A1 one
    assert through_a.logprob == pytest.approx(np.log(0.5))


def test_random_tree_shapes_and_informative_values():
    nodes = random_tree(depth=4, branching=3, seed=1, prefix="q/")
    assert len(nodes) == sum(3**d for d in range(5))
    env = FixedTreeEnv(nodes, root="q/root")
    leaves = [n for n in nodes if env.is_terminal(n)]
    assert len(leaves) == 81 and all(nodes[n]["reward"] in (1.0, -1.0) for n in leaves)
    assert all((nodes[n]["answer"] == 0) == (nodes[n]["reward"] == 1.0) for n in leaves)

    informative = random_tree(depth=4, branching=3, seed=1, value_noise=0.0)
    env = FixedTreeEnv(informative)
    # with no noise a node's value is exactly the mean of its children's values
    for node_id, node in informative.items():
        if not env.is_terminal(node_id):
            kids = [informative[c]["value"] for c in node["children"]]
            assert node["value"] == pytest.approx(float(np.clip(np.mean(kids), -1, 1)))


def test_expand_takes_one_width_per_state():
    env = FixedTreeEnv(NODES)
    pv = FixedTreePolicyValue(env)
    one, three = pv.expand(["root", "root"], [1, 3])
    assert one.actions == ["A"] and one.priors == [1.0]
    assert three.actions == ["A", "B", "C"]
    assert pv.expand_calls == 1
    with pytest.raises(ValueError, match="2 widths for 1 states"):
        pv.expand(["root"], [1, 2])
