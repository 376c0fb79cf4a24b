"""Parallel search with rollout allocation, on hand-written toy trees whose allocations are
worked out in the comments."""

import math

import numpy as np
import pytest

from tests.search.golden import check_golden
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue
from tsllm.search.parallel import RULES, parallel_search, text_embedding
from tsllm.types import Budget

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def _leaves(parent, answer, value):
    """Six terminal children; priors 6..1 so the toy's top-k by prior are the first k."""
    ids = [f"{parent}{i}" for i in range(1, 7)]
    return ids, {c: {"answer": answer, "value": value, "prior": 7 - i} for i, c in enumerate(ids, 1)}


# WIDE (two steps, B = 6, temperature 1): the root's children a, b, c are valued ln 4, 0, 0, so
# softmax(v / 1) = 4/6, 1/6, 1/6. All grandchildren are terminal: a's answer "A" valued -0.2
# (vote weight (v + 1) / 2 = 0.4), b's and c's answer "B" valued 1.0 (weight 1.0).
WIDE = {"wide": {"children": ["a", "b", "c"]}}
for _name, _value, _answer, _leaf_value in (("a", LN4, "A", -0.2), ("b", 0.0, "B", 1.0), ("c", 0.0, "B", 1.0)):
    _ids, _nodes = _leaves(_name, _answer, _leaf_value)
    WIDE[_name] = {"value": _value, "children": _ids}
    WIDE.update(_nodes)

# DEEP (three steps): completions on the way shrink the budget.
#   deep -> p (ln 3), q (0), t (terminal "T", 0.5)
#   p -> p1 (terminal "T", 0.0, prior .5), p2 (ln 2, prior .3), p3 (0, prior .2)
#   q -> q1 (0, prior .6), q2 (0.5, prior .4)
#   p2 -> p2a, p3 -> p3a ("P", 1.0); q1 -> q1a ("Q", 1.0); q2 -> q2a ("Q", 1.0), q2b ("Q", -1.0)
DEEP = {
    "deep": {"children": ["p", "q", "t"]},
    "p": {"value": LN3, "children": ["p1", "p2", "p3"]},
    "q": {"value": 0.0, "children": ["q1", "q2"]},
    "t": {"answer": "T", "value": 0.5},
    "p1": {"answer": "T", "value": 0.0, "prior": 0.5},
    "p2": {"value": LN2, "prior": 0.3, "children": ["p2a"]},
    "p3": {"value": 0.0, "prior": 0.2, "children": ["p3a"]},
    "q1": {"value": 0.0, "prior": 0.6, "children": ["q1a"]},
    "q2": {"value": 0.5, "prior": 0.4, "children": ["q2a", "q2b"]},
    "p2a": {"answer": "P", "value": 1.0},
    "p3a": {"answer": "P", "value": 1.0},
    "q1a": {"answer": "Q", "value": 1.0},
    "q2a": {"answer": "Q", "value": 1.0},
    "q2b": {"answer": "Q", "value": -1.0},
}


def _random_nodes(prefix, seed, depth=4, branching=3):
    """A seeded random tree built here (not by toy.random_tree) so the golden file depends on
    this test alone."""
    rng = np.random.default_rng(seed)
    nodes, stack = {}, [(prefix + "root", 0)]
    while stack:
        node_id, d = stack.pop()
        node = {"value": round(float(rng.uniform(-1, 1)), 3), "prior": round(float(rng.uniform(0.1, 1)), 3)}
        if d == depth or (d > 1 and rng.random() < 0.15):  # some early finishes
            node["answer"] = int(rng.integers(0, 3))
        else:
            node["children"] = [f"{node_id}.{i}" for i in range(branching)]
            stack.extend((c, d + 1) for c in node["children"])
        nodes[node_id] = node
    return nodes


RANDOM = {**_random_nodes("x/", 1), **_random_nodes("y/", 2)}
ALL = {**WIDE, **DEEP, **RANDOM}
ENV = FixedTreeEnv(ALL, root="wide")
WIDE_EMBED = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.0, 1.0]}  # b and c: one direction


class WidthSpy(FixedTreePolicyValue):
    """The toy policy, recording the per-state widths of every batched expand call."""

    def __init__(self, env):
        super().__init__(env)
        self.width_calls = []

    def expand(self, states, width):
        self.width_calls.append([width] * len(states) if isinstance(width, int) else list(width))
        return super().expand(states, width)


def _visits(tree):
    """{state: visits} over a snapshot: the rollouts each node was given."""
    out, stack = {}, [tree]
    while stack:
        node = stack.pop()
        out[node["state"]] = node["visits"]
        stack.extend(node["children"])
    return out


def _completed(out):
    return [c.path[-1] for c in out.candidates if c.terminal]


def _embed_wide(states):
    return np.array([WIDE_EMBED[s] for s in states])


# --- each rule on WIDE ----------------------------------------------------------------------

@pytest.mark.parametrize("rule, widths, answer", [
    # softmax 4/6, 1/6, 1/6 of 6 -> 4, 1, 1; votes A 4 x 0.4 = 1.6 < B 2 x 1.0
    ("rebase", {"a": 4, "b": 1, "c": 1}, "B"),
    # 1 each would need 6 candidates; 3 candidates get 2 each; A 0.8 < B 4.0
    ("sampling", {"a": 2, "b": 2, "c": 2}, "B"),
    # beam width 3: top 6 / 3 = 2 candidates (a, then b before c on the tie) get 3 each
    ("beam", {"a": 3, "b": 3, "c": 0}, "B"),
    # b and c are one direction (uniqueness 1/2 each, a's 1): weights 4, 1/2, 1/2 -> shares 4.8,
    # 0.6, 0.6 -> floors 4, 0, 0 and two left: a (.8), then b (.6 ties c; lower index)
    # -> 5, 1, 0; votes A 5 x 0.4 = 2.0 > B 1.0
    ("dora", {"a": 5, "b": 1, "c": 0}, "A"),
    # 6 // 3 = 2 subtrees; the root's children are dealt a -> 0, b -> 1, c -> 0; each subtree's
    # best (a in 0, b in 1) gets its 3 rollouts
    ("dvts", {"a": 3, "b": 3, "c": 0}, "B"),
])
def test_each_rule_on_a_two_step_tree(rule, widths, answer):
    pv = WidthSpy(ENV)
    [out] = parallel_search(ENV, pv, ["wide"], rule=rule, num_rollouts=6, temperature=1.0,
                            beam_width=3, embed=_embed_wide)
    assert pv.width_calls == [[6], [w for w in widths.values() if w > 0]]
    visits = _visits(out.tree)
    assert {s: visits[s] for s in "abc"} == widths
    expected_done = [f"{s}{i}" for s in "abc" for i in range(1, widths[s] + 1)]
    assert _completed(out) == expected_done  # each candidate's top-`width` children by prior
    assert out.answer == answer
    assert out.stats["completed"] == 6 and out.stats["rollouts"] == 12 and out.stats["steps"] == 2
    # best path: the first highest-valued completion with the winning answer
    assert out.best_path == {"A": ["wide", "a", "a1"], "B": ["wide", "b", "b1"]}[answer]


# --- budget shrinking on DEEP ---------------------------------------------------------------

@pytest.mark.parametrize("rule, budget, width_calls, done, answer", [
    # step 0: deep gets 5 -> p, q, t; t completes, 4 left: softmax(ln 3, 0) -> p 3, q 1.
    # step 1: p -> p1 p2 p3, q -> q1 (higher prior); p1 completes, 3 left over p2, p3, q1 valued
    # ln 2, 0, 0: shares 1.5, .75, .75 -> floors 1, 0, 0, remainders to p3 and q1 -> 1, 1, 1.
    # step 2: three completions. Votes: T .75 + .5 = 1.25, P 2.0, Q 1.0.
    ("rebase", 5, [[5], [3, 1], [1, 1, 1]], ["t", "p1", "p2a", "p3a", "q1a"], "P"),
    # beam width 2: 3 left -> p 2, q 1; p's top two priors are p1, p2; p1 completes; 2 left over
    # p2, q1 -> p2 gets 2 but has one child; it completes, 1 left and an empty pool: stop.
    ("beam", 4, [[4], [2, 1], [2]], ["t", "p1", "p2a"], "T"),
    # dvts width 2: subtrees p,t -> 0 and q -> 1, 2 each; t spends one of subtree 0's, so p 1,
    # q 2; p's one rollout makes p1 (done, subtree 0 spent); q1, q2 both in subtree 1: q2 (0.5)
    # takes both; q2a, q2b complete. Votes: T 1.25 > Q 1.0 + 0.0.
    ("dvts", 4, [[4], [1, 2], [2]], ["t", "p1", "q2a", "q2b"], "T"),
    # sampling: 3 left over p, q -> 2, 1 (lower index first); then 2 over p2, q1 -> 1, 1.
    ("sampling", 4, [[4], [2, 1], [1, 1]], ["t", "p1", "p2a", "q1a"], "T"),
])
def test_completions_shrink_the_budget_and_widths_always_sum_to_it(rule, budget, width_calls, done, answer):
    pv = WidthSpy(ENV)
    [out] = parallel_search(ENV, pv, ["deep"], rule=rule, num_rollouts=budget, temperature=1.0,
                            beam_width=2)
    assert pv.width_calls == width_calls
    # exact accounting: step k requests B minus the completions found before it (at depth <= k)
    depths = [len(c.path) - 1 for c in out.candidates if c.terminal]
    if rule != "dvts":  # dvts spends per subtree; checked by hand in the comment above
        for step, widths in enumerate(width_calls):
            assert sum(widths) == budget - sum(d <= step for d in depths)
    assert _completed(out) == done
    assert out.answer == answer
    assert out.stats["rollouts"] == sum(map(sum, width_calls))


def test_rebase_best_path_follows_the_best_winning_candidate():
    [out] = parallel_search(ENV, FixedTreePolicyValue(ENV), ["deep"], rule="rebase",
                            num_rollouts=5, temperature=1.0)
    assert out.answer == "P" and out.best_path == ["deep", "p", "p2", "p2a"]
    votes = {c.path[-1]: c.score for c in out.candidates}
    assert votes == {"t": 0.5, "p1": 0.0, "p2a": 1.0, "p3a": 1.0, "q1a": 1.0}
    # expansions: deep; p, q; p2, p3, q1. Value calls and tokens: one per created node.
    assert out.budget.expansions == 1 + 2 + 3
    assert out.budget.value_calls == out.budget.tokens == 3 + 4 + 3


# --- batching and the two expansion paths ---------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_many_roots_share_one_expand_and_one_evaluate_per_step(rule):
    roots = ["wide", "deep", "x/root", "y/root"]
    kw = dict(rule=rule, num_rollouts=6, temperature=0.5, beam_width=2)
    embeds = []

    def embed(states):
        embeds.append(len(states))
        return text_embedding([str(s) for s in states])

    pv = FixedTreePolicyValue(ENV)
    together = parallel_search(ENV, pv, roots, embed=embed, **kw)
    steps = max(o.stats["steps"] for o in together)
    assert pv.expand_calls == steps and pv.evaluate_calls == steps
    assert pv.states_evaluated == sum(o.stats["nodes"] - 1 for o in together)  # each node once
    if rule == "dora":
        assert 0 < len(embeds) <= steps  # one embed call per step at most, across all roots
    for root, out in zip(roots, together):
        alone = parallel_search(ENV, FixedTreePolicyValue(ENV), [root], embed=embed, **kw)[0]
        assert out.tree == alone.tree and out.answer == alone.answer
        assert out.budget.spent()["tokens"] == alone.budget.spent()["tokens"]


@pytest.mark.parametrize("rule", ["sampling", "beam", "rebase", "dora"])
@pytest.mark.parametrize("root", ["x/root", "y/root"])
def test_every_step_requests_exactly_the_budget_left(rule, root):
    pv = WidthSpy(ENV)
    [out] = parallel_search(ENV, pv, [root], rule=rule, num_rollouts=9, temperature=0.3, beam_width=2)
    depths = [len(c.path) - 1 for c in out.candidates if c.terminal]
    assert len(pv.width_calls) == out.stats["steps"] >= 2
    for step, widths in enumerate(pv.width_calls):
        assert all(w > 0 for w in widths)
        assert sum(widths) == 9 - sum(d <= step for d in depths)


# --- budgets and stopping -------------------------------------------------------------------

def test_budget_exhaustion_stops_each_root_and_reports_spending():
    # max_expansions=1: step 0 expands the root and the limit is reached. t has completed; p and
    # q wait with their next-step allocation (softmax(ln 3, 0) of 4 = 3, 1) but are never expanded.
    pv = FixedTreePolicyValue(ENV)
    [out] = parallel_search(ENV, pv, ["deep"], rule="rebase", num_rollouts=5, temperature=1.0,
                            budget=Budget(max_expansions=1))
    assert pv.expand_calls == 1 and out.budget.expansions == 1 and out.budget.value_calls == 3
    assert out.answer == "T" and out.best_path == ["deep", "t"]
    assert [(c.path[-1], c.terminal, c.answer) for c in out.candidates] == [
        ("t", True, "T"), ("p", False, None), ("q", False, None)]
    assert _visits(out.tree)["p"] == 3 and _visits(out.tree)["q"] == 1
    assert out.stats["unfinished"] == 2


def test_a_spent_root_drops_out_while_others_go_on():
    # max_expansions=3 per root: deep spends 1 + 2 (p, q) in two steps and stops (a step may
    # overshoot, never start past the limit); wide spends 1 + 3 and finishes anyway.
    pv = WidthSpy(ENV)
    outs = parallel_search(ENV, pv, ["deep", "wide"], rule="rebase", num_rollouts=5,
                           temperature=1.0, budget=Budget(max_expansions=3))
    deep, wide = outs
    assert deep.budget.expansions == 3 and deep.stats["steps"] == 2
    assert [c.path[-1] for c in deep.candidates if not c.terminal] == ["p2", "p3", "q1"]
    assert wide.stats["steps"] == 2 and wide.stats["completed"] == 5
    assert len(pv.width_calls) == 2  # step 3 never happens: deep is spent, wide is done


def test_max_depth_and_terminal_roots():
    [capped] = parallel_search(ENV, FixedTreePolicyValue(ENV), ["deep"], num_rollouts=5,
                               temperature=1.0, max_depth=1)
    assert capped.stats["steps"] == 1 and capped.answer == "T"
    [nothing] = parallel_search(ENV, FixedTreePolicyValue(ENV), ["deep"], max_depth=0)
    assert nothing.answer is None and nothing.best_path == ["deep"] and nothing.budget.expansions == 0
    pv = FixedTreePolicyValue(ENV)
    [leaf] = parallel_search(ENV, pv, ["t"])
    assert leaf.answer == "T" and pv.expand_calls == 0 and pv.evaluate_calls == 1


def test_dora_default_embedding_is_state_text_trigrams():
    emb = text_embedding(["add 3 and 4", "add 3 and 4", "multiply 9 by 2"])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert unit[0] @ unit[1] == pytest.approx(1.0) and unit[0] @ unit[2] < 0.5
    assert np.array_equal(emb, text_embedding(["add 3 and 4", "add 3 and 4", "multiply 9 by 2"]))
    # the ids a, b, c share no trigram, so the fallback sees three directions: DORA == REBASE
    kw = dict(num_rollouts=6, temperature=1.0)
    dora_out = parallel_search(ENV, FixedTreePolicyValue(ENV), ["wide"], rule="dora", **kw)[0]
    rebase_out = parallel_search(ENV, FixedTreePolicyValue(ENV), ["wide"], rule="rebase", **kw)[0]
    assert dora_out.tree == rebase_out.tree
    # each root's text is stripped from its own states, so batching changes nothing
    together = parallel_search(ENV, FixedTreePolicyValue(ENV), ["x/root", "y/root"], rule="dora", **kw)
    for root, out in zip(["x/root", "y/root"], together):
        alone = parallel_search(ENV, FixedTreePolicyValue(ENV), [root], rule="dora", **kw)[0]
        assert out.tree == alone.tree


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="mcts"), "unknown rule"),
    (dict(aggregation="median"), "unknown aggregation"),
    (dict(num_rollouts=0), "num_rollouts"),
    (dict(beam_width=0), "beam_width"),
    (dict(temperature=0.0), "temperature"),
    (dict(max_depth=-1), "max_depth"),
    (dict(rule="dora", embed=lambda states: np.zeros((1, 2))), "embed returned shape"),
])
def test_bad_knobs_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parallel_search(ENV, FixedTreePolicyValue(ENV), ["wide"], **kwargs)


# --- golden trees ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["rebase", "dora", "dvts"])
def test_golden_tree(rule):
    """Regenerate with TSLLM_REGEN_GOLDEN=1 and read the diff before accepting it."""
    # dora's directions here: states ending in the same child index (x/root.1.0.1 ~ x/root.1.1.1)
    def last_index(states):
        return np.array([np.eye(3)[int(s[-1])] for s in states])

    [out] = parallel_search(ENV, FixedTreePolicyValue(ENV), ["x/root"], rule=rule, num_rollouts=8,
                            temperature=0.5, beam_width=2, embed=last_index)
    check_golden(f"parallel_{rule}", {"answer": out.answer, "best_path": out.best_path, "tree": out.tree})
