"""Golden-tree files: a search run with fixed inputs is stored as JSON under golden/ and every
later run must reproduce it exactly. Regenerate with TSLLM_REGEN_GOLDEN=1, then read the diff
against your hand reasoning before committing it."""

import json
import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def summarize(out) -> dict:
    """What a golden file pins down about one SearchOutput."""
    return {
        "tree": out.tree,
        "best_path": out.best_path,
        "answer": out.answer,
        "root_value": None if out.root_value is None else round(out.root_value, 6),
        "candidates": [[c.path, c.answer, round(c.score, 6), c.count] for c in out.candidates],
        "spent": {k: out.budget.spent()[k] for k in ("tokens", "expansions", "value_calls")},
        "stats": out.stats,
    }


def check_golden(name: str, data: dict) -> None:
    path = GOLDEN / f"{name}.json"
    data = json.loads(json.dumps(data))  # tuples -> lists, as stored
    if os.environ.get("TSLLM_REGEN_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
    assert path.exists(), f"{path} missing: run with TSLLM_REGEN_GOLDEN=1 and check it by eye"
    assert data == json.loads(path.read_text())


def check_search_golden(name: str, make_nodes, search) -> None:
    """Run `search(nodes)` and compare with the stored run. The input tree is stored with the
    output, so the file stands alone: a change to random_tree does not invalidate it."""
    path = GOLDEN / f"{name}.json"
    regen = os.environ.get("TSLLM_REGEN_GOLDEN") == "1"
    nodes = make_nodes() if regen or not path.exists() else json.loads(path.read_text())["nodes"]
    check_golden(name, {"nodes": nodes, "output": summarize(search(nodes))})
