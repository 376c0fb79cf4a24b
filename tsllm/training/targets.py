"""Policy targets from the training search's trees (docs/ARCHITECTURE.md section 1, `policy.target`).
Pure Python: no torch, so the rows can be built and checked without a model.

The search stage stores one tree record per pool problem in `trees.jsonl` (`tree_record`):

    {"question": str, "task": str, "tree": node}
    node = {"step": str | None (None at the root), "visits": int, "q": float, "value": float | None,
            "reward": float (terminal nodes only), "children": [node, ...] (expanded nodes only)}

`step` is the line the child's state ends with (the env may rewrite the policy's text: reach writes
the result of the move the line names), `visits` and `q` the search's visit count and mean
backed-up value, `value` the critic's estimate (None where the critic never scored the node),
`reward` the checker's outcome of a terminal.

Definitions, at every expanded state s (a node with children) of every tree, solved or not:

- Q(s, a), the value of child c = a: its `reward` if terminal (the outcome is known, whatever the
  search backed up); else its `q` once visited; else its critic `value`; a child with none of
  these has no Q and is skipped.
- V(s): s's own `q` once visited (the search's backed-up value of the state); else its critic
  `value`; else (the DFS root, which the critic never scores) the mean Q of its children.

Targets (one row per kept child step, trained as weighted SFT on that single step given s's prompt):

- `advantages`: weight A = Q(s, a) - V(s). Steps with A <= 0 are dropped, not clipped to a
  negative weight: weighted SFT only raises a step's likelihood, and a negative weight would be
  unlikelihood training, unbounded below without a reference model; a dropped step is still
  lowered relatively, since its siblings with A > 0 are raised.
- `visits`: weight = the search's visit distribution over s's children, n(c) / sum n; where the
  search kept no visits below s (DFS, BFS, an MCTS leaf expanded last), the softmax of the
  children's Q at temperature Q_TEMPERATURE. Zero weights are dropped (they train nothing).
- `preferences`: every sibling pair (a, b) with Q(s, a) - Q(s, b) >= PREFERENCE_MARGIN, as a
  prompt / chosen / rejected row (step DPO); the margin skips pairs the values cannot tell apart.
  The policy trainer trains them with TRL's DPOTrainer (tsllm/training/policy_trainer.py).

A step row: {"question", "task", "steps" (the state's steps), "step" (the child's), "ends" (the
child is terminal: the trainer appends EOS after it, as after a whole path), "weight"}. A
preference row: {"question", "task", "steps", "chosen", "chosen_ends", "rejected",
"rejected_ends", "margin" (the Q gap, a record: DPO does not read it)}. Weights and Q values are
rounded to WEIGHT_DIGITS so written rows (and the golden test) are stable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

TARGETS = ("paths", "advantages", "visits", "preferences")
TREE_TARGETS = TARGETS[1:]  # the ones built from trees.jsonl (paths reads trajectories.jsonl)
# Softmax temperature over children's Q where no visits were kept. Q lies in [-1, 1] (the
# checker's +-1, a critic trained on it), so 0.25 makes a win next to a checked loss (Q 1 vs -1)
# weigh e^8 times as much, while children the critic barely separates stay near uniform.
Q_TEMPERATURE = 0.25
PREFERENCE_MARGIN = 0.5  # a quarter of Q's range: smaller gaps are mostly critic noise
WEIGHT_DIGITS = 6


# ------------------------------------------------------------------------------ tree records

def tree_record(env: Any, root_state: Any, snapshot: dict[str, Any], question: str, task: str) -> dict[str, Any]:
    """The compact tree of one search (`SearchOutput.tree`, see tsllm.search.tree.snapshot),
    replayed from `root_state` with each node's action so every child names its step as its
    state writes it and every terminal carries the env's reward."""

    def node(snap: dict[str, Any], state: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"step": None, "visits": snap["visits"], "q": snap["q"], "value": snap["value"]}
        if snap["terminal"]:
            out["reward"] = float(env.reward(state))
        children = []
        for child in snap["children"]:
            child_state = env.step(state, child["action"])
            children.append({**node(child, child_state), "step": child_state.steps[-1]})
        if children:
            out["children"] = children
        return out

    return {"question": question, "task": task, "tree": node(snapshot, root_state)}


def q_value(node: dict[str, Any]) -> float | None:
    """Q of the step into `node` (module doc): reward, else backed-up q, else critic value."""
    if "reward" in node:
        return node["reward"]
    if node["visits"] > 0:
        return node["q"]
    return node["value"]


def state_value(node: dict[str, Any], child_qs: list[float]) -> float | None:
    """V of an expanded state (module doc): backed-up q, else critic value, else children's mean Q."""
    if node["visits"] > 0:
        return node["q"]
    if node["value"] is not None:
        return node["value"]
    return sum(child_qs) / len(child_qs) if child_qs else None


def expanded_states(record: dict[str, Any]) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """(steps of the state, node) for every expanded node of a record's tree, depth-first."""
    stack = [([], record["tree"])]
    while stack:
        steps, node = stack.pop()
        children = node.get("children", [])
        if children:
            yield steps, node
        stack.extend((steps + [c["step"]], c) for c in reversed(children))


def _step_row(record: dict[str, Any], steps: list[str], child: dict[str, Any], weight: float) -> dict[str, Any]:
    return {"question": record["question"], "task": record["task"], "steps": steps, "step": child["step"],
            "ends": "reward" in child, "weight": round(weight, WEIGHT_DIGITS)}


def _scored(node: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """(child, Q) for every child of `node` that has a Q."""
    return [(c, q) for c in node["children"] if (q := q_value(c)) is not None]


# ------------------------------------------------------------------------------ the targets

def advantage_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for steps, node in expanded_states(record):
        scored = _scored(node)
        v = state_value(node, [q for _, q in scored])
        # kept where positive as written: an advantage under the weights' precision rounds to 0
        rows += [_step_row(record, steps, c, q - v) for c, q in scored
                 if v is not None and round(q - v, WEIGHT_DIGITS) > 0]
    return rows


def visit_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for steps, node in expanded_states(record):
        total = sum(c["visits"] for c in node["children"])
        if total > 0:
            weighted = [(c, c["visits"] / total) for c in node["children"]]
        else:
            scored = _scored(node)
            top = max((q for _, q in scored), default=0.0)  # subtracted: exp never overflows
            exps = [(c, math.exp((q - top) / Q_TEMPERATURE)) for c, q in scored]
            norm = sum(e for _, e in exps)
            weighted = [(c, e / norm) for c, e in exps]
        rows += [_step_row(record, steps, c, p) for c, p in weighted if round(p, WEIGHT_DIGITS) > 0]
    return rows


def preference_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for steps, node in expanded_states(record):
        scored = _scored(node)
        for chosen, q_chosen in scored:
            for rejected, q_rejected in scored:
                if q_chosen - q_rejected >= PREFERENCE_MARGIN:
                    rows.append({"question": record["question"], "task": record["task"], "steps": steps,
                                 "chosen": chosen["step"], "chosen_ends": "reward" in chosen,
                                 "rejected": rejected["step"], "rejected_ends": "reward" in rejected,
                                 "margin": round(q_chosen - q_rejected, WEIGHT_DIGITS)})
    return rows


BUILDERS = {"advantages": advantage_rows, "visits": visit_rows, "preferences": preference_rows}


def target_rows(target: str, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row of tree target `target` over `records`, in record order."""
    if target not in BUILDERS:
        raise ValueError(f"no tree target {target!r}; tree targets: {sorted(BUILDERS)}")
    return [row for record in records for row in BUILDERS[target](record)]
