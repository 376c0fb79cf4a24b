"""cot_greedy, cot_sc, best_of_n: hand-worked answers, every best-of-N aggregation, token and
value-call budgets, and one batched call across roots."""

import math

import pytest

from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue
from tsllm.search.sampling import best_of_n, cot_greedy, cot_sc
from tsllm.types import Budget, Rollout


class ScriptedPV(FixedTreePolicyValue):
    """The toy pv, but rollouts are scripted per root (so votes can be worked out by hand)."""

    def __init__(self, env, script):
        super().__init__(env)
        self.script = script  # root state -> list of paths (lists of actions)
        self.rollout_batches = []

    def rollout(self, states, n):
        self.rollout_calls += 1
        self.rollout_batches.append((list(states), n))
        def tokens(path):
            return sum(int(self.env.node(s).get("tokens", 1)) for s in path)
        return [[Rollout(list(p), tokens(p)) for p in self.script[s][:n]] for s in states]


# Terminals under "root": answer / ORM value (the value model read at the end).
NODES = {
    "root": {"children": ["P", "Q", "R", "S", "T", "N"]},
    "P": {"answer": "a", "value": -0.2, "tokens": 2},
    "Q": {"answer": "a", "value": -0.6, "tokens": 2},
    "R": {"answer": "b", "value": 0.5, "tokens": 2},
    "S": {"answer": "c", "value": 0.4, "tokens": 2},
    "T": {"answer": "c", "value": 0.3, "tokens": 2},
    "N": {"children": ["N1"], "value": 0.9, "tokens": 2},  # a depth-capped rollout stops here
    "N1": {"answer": "n"},
    "root2": {"children": ["U", "V"]},
    "U": {"answer": "u", "value": 0.1},
    "V": {"answer": "v", "value": 0.2},
}
SCRIPT = {
    "root": [["P"], ["P"], ["P"], ["Q"], ["R"], ["S"], ["T"]],
    "root2": [["U"], ["V"], ["V"]],
}


def test_cot_sc_majority_vote_over_unique_paths():
    env = FixedTreeEnv(NODES)
    pv = ScriptedPV(env, SCRIPT)
    out = cot_sc(env, pv, ["root"], k=7)[0]
    # votes: a = 3 (P) + 1 (Q), c = 2, b = 1
    assert out.answer == "a"
    assert [(c.path[-1], c.count) for c in out.candidates] == [("P", 3), ("Q", 1), ("R", 1), ("S", 1), ("T", 1)]
    assert out.best_path == ["root", "P"]  # the most-voted path with the winning answer
    assert out.candidates[0].score == pytest.approx(3 / 7)
    assert out.budget.tokens == 14 and pv.rollout_batches == [(["root"], 7)]


def test_cot_sc_capped_rollouts_have_no_answer():
    env = FixedTreeEnv(NODES)
    pv = ScriptedPV(env, {"root": [["N"], ["N"], ["R"]]})
    out = cot_sc(env, pv, ["root"], k=3)[0]
    # N is not terminal: its 2 votes carry no answer, so "b" wins with 1
    assert out.answer == "b" and out.candidates[0].terminal is False and out.candidates[0].answer is None


@pytest.mark.parametrize("method, answer, best", [
    ("majority", "a", "P"),  # a: 4 votes
    ("orm_max", "b", "R"),  # R has the top value .5
    ("orm_vote", "c", "S"),  # a: 3(-.2) - .6 = -1.2, b: .5, c: .4 + .3 = .7
    ("weighted", "a", "P"),  # (v+1)/2: a: 3(.4) + .2 = 1.4, b: .75, c: .7 + .65 = 1.35
])
def test_best_of_n_aggregations(method, answer, best):
    env = FixedTreeEnv(NODES)
    pv = ScriptedPV(env, SCRIPT)
    out = best_of_n(env, pv, ["root"], n=7, method=method)[0]
    assert out.answer == answer and out.best_path == ["root", best]
    # five distinct final states are scored once each, in one call
    assert pv.evaluate_calls == 1 and pv.states_evaluated == 5 and out.budget.value_calls == 5
    assert [round(c.score, 9) for c in out.candidates] == [-0.2, -0.6, 0.5, 0.4, 0.3]


def test_best_of_n_rejects_unknown_method():
    env = FixedTreeEnv(NODES)
    pv = ScriptedPV(env, SCRIPT)
    with pytest.raises(ValueError, match="unknown aggregation"):
        best_of_n(env, pv, ["root"], method="mode")
    assert pv.rollout_calls == 0


def test_token_budget_keeps_the_rollouts_that_fit_in_order():
    env = FixedTreeEnv(NODES)
    out = cot_sc(env, ScriptedPV(env, SCRIPT), ["root"], k=7, budget=Budget(max_tokens=5))[0]
    # 2 tokens each: 2 rollouts (4 tokens) fit, the third would make 6 > 5
    assert out.budget.tokens == 4 and out.stats["rollouts"] == 2
    assert [(c.path[-1], c.count) for c in out.candidates] == [("P", 2)]
    out = cot_sc(env, ScriptedPV(env, SCRIPT), ["root"], k=7, budget=Budget(max_tokens=0))[0]
    assert out.candidates == [] and out.answer is None and out.best_path == ["root"]


def test_value_call_budget_limits_distinct_final_states():
    env = FixedTreeEnv(NODES)
    out = best_of_n(env, ScriptedPV(env, SCRIPT), ["root"], n=7, budget=Budget(max_value_calls=2))[0]
    # P, P, P, Q fit (2 distinct states); R would be a third value call
    assert out.budget.value_calls == 2 and out.budget.tokens == 8
    assert out.answer == "a"


def test_sampling_batches_all_roots_in_one_call():
    env = FixedTreeEnv(NODES)
    pv = ScriptedPV(env, SCRIPT)
    outs = best_of_n(env, pv, ["root", "root2"], n=3, method="orm_max")
    assert pv.rollout_batches == [(["root", "root2"], 3)]
    assert pv.evaluate_calls == 1 and pv.states_evaluated == 1 + 2  # {P} and {U, V}
    assert [o.answer for o in outs] == ["a", "v"]
    pv = ScriptedPV(env, SCRIPT)
    outs = cot_sc(env, pv, ["root", "root2"], k=3)
    assert pv.rollout_calls == 1 and [o.answer for o in outs] == ["a", "v"]


def test_cot_sc_with_the_sampling_toy_policy():
    nodes = {"root": {"children": ["G", "H"]}, "G": {"prior": 0.9, "answer": "g"}, "H": {"prior": 0.1}}
    env = FixedTreeEnv(nodes)
    pv = FixedTreePolicyValue(env, seed=0)
    out = cot_sc(env, pv, ["root"], k=40)[0]
    # 40 draws at 90/10: "g" wins (seeded, so this is deterministic), counts add up
    assert out.answer == "g" and sum(c.count for c in out.candidates) == 40 and pv.rollout_calls == 1


GREEDY = {
    "root": {"children": ["A", "B"]},
    "A": {"prior": 1.0, "children": ["A1"]},
    "B": {"prior": 3.0, "children": ["B1", "B2"]},
    "B1": {"prior": 2.0, "children": ["B1a"]},
    "B2": {"prior": 1.0, "answer": "b2"},
    "A1": {"answer": "a1"},
    "B1a": {"answer": "b1a"},
    "solo": {"children": ["S1"]},
    "S1": {"answer": "s1"},
}


def test_cot_greedy_follows_the_highest_prior():
    env = FixedTreeEnv(GREEDY)
    pv = FixedTreePolicyValue(env)
    out = cot_greedy(env, pv, ["root"], width=2)[0]
    # B (3/4) then B1 (2/3) then B1a (the only child)
    assert out.best_path == ["root", "B", "B1", "B1a"] and out.answer == "b1a"
    assert out.candidates[0].score == pytest.approx(math.log(0.75) + math.log(2 / 3))
    assert pv.expand_calls == 3 and out.budget.expansions == 3 and out.budget.tokens == 2 + 2 + 1


def test_cot_greedy_limits():
    env = FixedTreeEnv(GREEDY)
    out = cot_greedy(env, FixedTreePolicyValue(env), ["root"], budget=Budget(max_tokens=2))[0]
    # width 1: each step makes 1 token; after 2 steps the budget is spent at B1 (not terminal)
    assert out.best_path == ["root", "B", "B1"] and out.answer is None and out.candidates == []
    assert out.budget.tokens == 2
    out = cot_greedy(env, FixedTreePolicyValue(env), ["root"], max_depth=1)[0]
    assert out.best_path == ["root", "B"] and out.budget.expansions == 1


def test_cot_greedy_batches_one_expand_per_depth_step():
    env = FixedTreeEnv(GREEDY)
    pv = FixedTreePolicyValue(env)
    outs = cot_greedy(env, pv, ["root", "solo"])
    # "solo" ends after 1 step, "root" after 3: 3 calls, 4 states
    assert pv.expand_calls == 3 and pv.states_expanded == 4
    assert [o.answer for o in outs] == ["b1a", "s1"]


TRIE_NODES = {
    "root": {"children": ["A", "B"]},
    "A": {"children": ["A1", "A2"]}, "B": {"answer": "b", "value": 0.7},
    "A1": {"answer": "a", "value": 0.2}, "A2": {"answer": "a", "value": -0.4},
}


@pytest.mark.parametrize("search, knobs", [(cot_sc, {"k": 5}), (best_of_n, {"n": 5})])
def test_samples_are_reported_as_the_trie_of_their_paths(search, knobs):
    env = FixedTreeEnv(TRIE_NODES)
    script = {"root": [["A", "A1"], ["B"], ["A", "A1"], ["A", "A2"], ["B"]]}
    out = search(env, ScriptedPV(env, script), ["root"], **knobs)[0]

    def walk(node):
        yield node
        for child in node["children"]:
            yield from walk(child)

    nodes = {n["state"]: n for n in walk(out.tree)}
    assert list(nodes) == ["root", "A", "A1", "A2", "B"]  # first-seen order, each state once
    assert {s: n["visits"] for s, n in nodes.items()} == {"root": 5, "A": 3, "A1": 2, "A2": 1, "B": 2}
    assert {s: n["prior"] for s, n in nodes.items() if s != "root"} == {"A": 0.6, "A1": round(2 / 3, 6),
                                                                       "A2": round(1 / 3, 6), "B": 0.4}
    assert [s for s, n in nodes.items() if n["terminal"]] == ["A1", "A2", "B"]
    assert out.stats["nodes"] == 5 and out.stats["rollouts"] == 5
    scored = {s: n["value"] for s, n in nodes.items() if n["value"] is not None}
    assert scored == ({} if search is cot_sc else {"A1": 0.2, "A2": -0.4, "B": 0.7})  # best-of-N: the ORM's scores


def test_best_of_n_checker_keeps_samples_until_one_wins_and_pays_only_for_those():
    nodes = {**NODES, "R": {**NODES["R"], "reward": 1.0}, "U": {**NODES["U"], "reward": -1.0},
             "V": {**NODES["V"], "reward": -1.0}}
    env = FixedTreeEnv(nodes)
    pv = ScriptedPV(env, SCRIPT)
    win, lose = best_of_n(env, pv, ["root", "root2"], n=64, method="checker")
    # root: P, P, P, Q lose (no reward), R wins: 5 samples kept, 10 tokens; the rest never paid
    assert win.answer == "b" and win.best_path == ["root", "R"] and win.budget.tokens == 10
    assert win.stats["rollouts"] == 5 and win.budget.value_calls == 0
    # root2: every sample loses; the answer is the first sample's, which the checker rejects
    assert lose.answer == "u" and lose.budget.tokens == 3
    # drawn in waves of 8 per root still going (the script has fewer), all roots in one call each
    assert pv.rollout_batches == [(["root", "root2"], 8)]
    # under a budget the samples that fit are kept, in order: 3 samples of 2 tokens fit in 7
    [capped] = best_of_n(env, ScriptedPV(env, SCRIPT), ["root"], n=64, method="checker",
                         budget=Budget(max_tokens=7))
    assert capped.stats["rollouts"] == 3 and capped.budget.tokens == 6 and capped.answer == "a"
