"""`tsllm eval --trees DIR`: each question's search tree as JSON, checked against the search's own
output, and one static HTML page that embeds every tree and names every question; with chromium
installed, the page is also opened in a real headless browser and must draw the tree."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_evaluate import TOT_CSV, models  # noqa: F401  (the tiny policy/value checkpoint fixture)
from tsllm.cli import main
from tsllm.envs.toy import FixedTreeEnv, FixedTreePolicyValue, random_tree
from tsllm.search import get_algorithm
from tsllm.trees import question_tree, render_html


def snapshot_nodes(snap: dict) -> list[dict]:
    return [snap] + [n for c in snap["children"] for n in snapshot_nodes(c)]


@pytest.mark.parametrize("algorithm, knobs", [
    ("mcts_alpha", {"num_simulations": 6, "width": 3, "add_noise": True, "temperature": 1.0}),
    ("bfs", {"beam_width": 2, "width": 3}), ("gumbel_mcts", {"num_simulations": 6, "width": 3}),
    ("parallel_rebase", {"num_rollouts": 6}), ("cot_greedy", {}), ("cot_sc", {"k": 6}),
])
def test_tree_json_matches_the_search_output(algorithm, knobs):
    env = FixedTreeEnv(random_tree(depth=4, branching=3, seed=3))
    search = get_algorithm(algorithm)
    extra = {"rng": np.random.default_rng(1)} if algorithm in ("mcts_alpha", "gumbel_mcts") else {}
    out = search(env, FixedTreePolicyValue(env), ["root"], **knobs, **extra)[0]
    tree = question_tree(env, out)
    nodes, snapped = tree["nodes"], snapshot_nodes(out.tree)
    assert len(nodes) == len(snapped) == out.stats["nodes"] > 1
    assert [n["id"] for n in nodes] == list(range(len(nodes)))
    for node, snap in zip(nodes, snapped):  # depth-first, creation order, the snapshot's numbers
        assert (node["prior"], node["value"], node["q"], node["visits"], node["terminal"]) == \
            (snap["prior"], snap["value"], snap["q"], snap["visits"], snap["terminal"])
        if node["parent"] is not None:
            parent = nodes[node["parent"]]
            assert parent["depth"] == node["depth"] - 1 and any(c is snap for c in snapped[parent["id"]]["children"])
        # toy steps are child ids: the step is the state it leads to, and an end shows its outcome
        assert node["step"] == (None if node["parent"] is None else snap["state"])
        assert node["reward"] == (env.reward(snap["state"]) if snap["terminal"] else None)
    # the chosen path: the root, then the steps of best_path, each the parent of the next
    path = tree["chosen_path"]
    assert [nodes[i]["step"] for i in path[1:]] == out.best_path[1:] and path[0] == 0
    assert all(nodes[b]["parent"] == a for a, b in zip(path, path[1:]))
    assert [n["id"] for n in nodes if n["chosen"]] == path


def embedded_trees(page: str) -> dict:
    data = re.search(r'<script type="application/json" id="trees">(.*?)</script>', page, re.S).group(1)
    return json.loads(data)


def test_eval_trees_on_a_real_policy_writes_json_per_question_and_the_page(models, tmp_path):  # noqa: F811
    from tsllm.envs.game24 import Game24Env

    policy, value = models
    out, trees = tmp_path / "eval.json", tmp_path / "trees"
    assert main(["eval", "--policy", str(policy), "--value", str(value), "--data", str(TOT_CSV),
                 "--methods", "greedy,mcts_alpha,cot_sc", "--set", "mcts_alpha.num_simulations=2",
                 "--set", "mcts_alpha.width=2", "--max-step-tokens", "16", "--out", str(out),
                 "--trees", str(trees)]) == 0
    methods = json.loads(out.read_text())["methods"]
    page = (trees / "index.html").read_text()
    shown = embedded_trees(page)
    assert list(shown) == ["greedy", "mcts_alpha", "cot_sc"]  # cot_sc: the trie of its samples
    env = Game24Env()
    for method, per_question in ((m, methods[m]["per_question"]) for m in shown):
        files = sorted((trees / method).glob("*.json"))
        assert len(files) == len(per_question) == len(shown[method])
        for q, file, embedded in zip(per_question, files, shown[method]):
            tree = json.loads(file.read_text())
            assert tree == embedded and tree["question"] == q["question"] and tree["correct"] == q["correct"]
            assert len(tree["nodes"]) == q["nodes"]  # one path per question: the tree the search built
            steps = [tree["nodes"][i]["step"] for i in tree["chosen_path"][1:]]
            end = tree["nodes"][tree["chosen_path"][-1]]
            if q["reward"] is not None:  # the chosen path ended: its last node holds the method's outcome
                assert end["terminal"] and end["reward"] == q["reward"]
                assert env.extract_answer("\n".join(steps)) == q["answer"]
            assert html.escape(q["question"]) in page  # every question is named on the page


def test_the_page_shows_model_text_only_as_text():
    hostile = "</script><script>alert(1)</script><b>x</b> & <!--"
    tree = {"method": "bfs", "index": 0, "question": hostile, "answer": hostile, "correct": False, "tokens": 3,
            "nodes": [{"id": 0, "parent": None, "depth": 0, "step": None, "prior": 1.0, "value": None, "q": 0.0,
                       "visits": 1, "terminal": False, "reward": None, "chosen": True},
                      {"id": 1, "parent": 0, "depth": 1, "step": hostile, "prior": 1.0, "value": 0.5, "q": 0.5,
                       "visits": 1, "terminal": True, "reward": -1.0, "chosen": True}],
            "chosen_path": [0, 1]}
    page = render_html({"bfs": [tree], "treeless": None})
    assert "alert(1)</script>" not in page and "<b>x</b>" not in page
    assert page.count("<script") == 2  # the data and the drawing code, nothing injected
    assert embedded_trees(page) == {"bfs": [tree]}
    assert "innerHTML" not in page  # the script sets model text with textContent only


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (Debian: apt-get install chromium)")
def test_the_page_draws_the_selected_tree_in_a_headless_browser(tmp_path):
    trees = tmp_path / "trees"
    assert main(["eval", "--task", "toy", "--test-questions", "3", "--methods", "greedy,mcts_alpha",
                 "--trees", str(trees)]) == 0
    expected = json.loads((trees / "mcts_alpha" / "0002.json").read_text())
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          f"{Path(trees / 'index.html').as_uri()}#mcts_alpha/2"],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<circle") == len(expected["nodes"])  # one per node
    assert dom.count("<line") == len(expected["nodes"]) - 1  # one per edge
    assert f"mcts_alpha #2: {expected['question']}" in dom
    chosen = re.findall(r'<line[^>]*stroke="#e67e00"', dom)
    assert len(chosen) == len(expected["chosen_path"]) - 1  # the chosen path is highlighted
    path = re.search(r'<ol id="path">(.*?)</ol>', dom, re.S).group(1)
    assert re.findall(r"<li>(.*?)</li>", path) == [expected["nodes"][i]["step"] for i in expected["chosen_path"][1:]]
