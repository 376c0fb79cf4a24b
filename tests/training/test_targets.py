"""Policy targets from search trees (tsllm/training/targets.py) on a fixed, hand-made pair of trees.

golden/targets.json holds the trees and, per target, the rows worked out by hand from the module's
definitions (never regenerated from the code). By hand, for tree Q1 (MCTS-like: visits, q):
- advantages: V(root) = q 0.3; Q: a 0.5, b -0.1, c 0.6 (unvisited: its critic value), d none
  (skipped) -> A = 0.2, -0.4 (dropped), 0.3. At a: V = 0.5; Q a1 0.4, a2 1.0 (terminal: its reward,
  not its critic value), a3 -0.2 -> only a2 (0.5).
- visits: root 6/9, 3/9 (c and d have none: dropped); at a no child was visited, so
  softmax(Q / 0.25) over (0.4, 1.0, -0.2) = (0.08255, 0.909961, 0.007489).
- preferences (margin 0.5): (a, b) 0.6, (c, b) 0.7, not (c, a) 0.1; at a (a1, a3), (a2, a1), (a2, a3).
For tree Q2 (DFS-like: no visits, the root unscored): V(root) = the children's mean Q
(0.25 + 0.75 - 1) / 3 = 0, so A = 0.25, 0.75, and z's -1 is dropped; at x V = 0.25, x2 gets 0.75;
visits fall back to softmax(Q / 0.25); the pair (y, x) sits exactly at the margin and is kept.
"""

import json
from pathlib import Path

import pytest

from tsllm.envs.base import TextState
from tsllm.training import targets

GOLDEN = json.loads((Path(__file__).parent / "golden" / "targets.json").read_text())


@pytest.mark.parametrize("target", ["advantages", "visits", "preferences"])
def test_each_target_gives_the_hand_computed_rows(target):
    assert targets.target_rows(target, GOLDEN["records"]) == GOLDEN[target]


def test_visit_weights_sum_to_one_per_state_and_advantages_are_positive():
    per_state: dict[tuple, float] = {}
    for row in targets.target_rows("visits", GOLDEN["records"]):
        key = (row["question"], tuple(row["steps"]))
        per_state[key] = per_state.get(key, 0.0) + row["weight"]
    assert len(per_state) == 4 and all(abs(total - 1) < 1e-5 for total in per_state.values())
    assert all(r["weight"] > 0 for r in targets.target_rows("advantages", GOLDEN["records"]))


def test_an_advantage_too_small_to_write_is_dropped_not_written_as_zero():
    # the trainer refuses a weight of 0; Q - V = 4e-7 is positive but rounds to 0 at 6 digits
    tree = {"step": None, "visits": 2, "q": 0.3, "value": 0.3,
            "children": [{"step": "a", "visits": 1, "q": 0.3000004, "value": 0.3},
                         {"step": "b", "visits": 1, "q": 0.300001, "value": 0.3}]}
    rows = targets.target_rows("advantages", [{"question": "q", "task": "t", "tree": tree}])
    assert [(r["step"], r["weight"]) for r in rows] == [("b", 1e-6)]


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="no tree target 'paths'"):
        targets.target_rows("paths", GOLDEN["records"])


class UpperEnv:
    """A text env that rewrites each step (upper case), as reach writes a move's result; a path
    ends after two steps, won when it ends on B."""

    def step(self, state, action):
        return TextState(state.question, state.steps + (action.upper(),))

    def reward(self, state):
        return 1.0 if state.steps[-1] == "B" else -1.0


def test_a_tree_record_names_each_step_as_the_state_writes_it_and_rewards_the_terminals():
    def snap(action, children=(), terminal=False, visits=0, q=0.0, value=None):
        return {"state": "?", "action": action, "visits": visits, "q": q, "value": value, "prior": 1.0,
                "terminal": terminal, "children": list(children)}

    tree = snap(None, [snap("x", [snap("a", terminal=True), snap("b", terminal=True, value=0.5)], visits=2, q=0.1),
                       snap("y", value=-0.3)], visits=3, q=0.2)
    record = targets.tree_record(UpperEnv(), TextState("Q"), tree, "Q", "toy")
    assert record == {"question": "Q", "task": "toy", "tree": {
        "step": None, "visits": 3, "q": 0.2, "value": None, "children": [
            {"step": "X", "visits": 2, "q": 0.1, "value": None, "children": [
                {"step": "A", "visits": 0, "q": 0.0, "value": None, "reward": -1.0},
                {"step": "B", "visits": 0, "q": 0.0, "value": 0.5, "reward": 1.0}]},
            {"step": "Y", "visits": 0, "q": 0.0, "value": -0.3}]}}
    # and the rows read those steps: at X, Q(B) = its reward 1.0 (not its critic 0.5), V = q 0.1
    assert targets.advantage_rows(record)[-1] == {"question": "Q", "task": "toy", "steps": ["X"], "step": "B",
                                                  "ends": True, "weight": 0.9}
