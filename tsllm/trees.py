"""Search-tree inspection for `tsllm eval --trees DIR`: what each search did on each question.

    DIR/<method>/<question index>.json   the tree as a node list (see `question_tree`)
    DIR/index.html                        one page, every tree embedded: the questions of each
                                          method, and the selected one's tree drawn as SVG

The page is static (inline script, no server, no network): it opens from disk. Model text is
untrusted, so the page only ever sets it as text (`textContent`), never as markup. Trees come
from `SearchOutput.tree` (tsllm.search.tree.snapshot), replayed from the root state with each
node's action to name its step and read the rewards of its ends (cot_sc and best_of_n report
the trie of their samples); a method whose outputs keep no tree is listed as such.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from tsllm.atomic import write_json, write_text
from tsllm.search.tree import _key as state_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trees", metavar="DIR",
                        help="write each tree search's tree per question as JSON, and DIR/index.html that "
                             "draws them (opens from disk)")


def _step_text(env: Any, action: Any) -> str:
    if isinstance(action, int) and callable(getattr(env, "decode", None)):  # token level: the token's text
        return env.decode([action]) or f"[token {action}]"  # special tokens decode to nothing
    return str(action)


def _reward(env: Any, state: Any) -> float | None:
    try:
        return float(env.reward(state))
    except ValueError:  # a state without a gold answer (bare question): no outcome to show
        return None


def question_tree(env: Any, out: Any) -> dict[str, Any]:
    """One SearchOutput's tree as a flat node list, depth-first in creation order: per node its
    id, parent id, step text (the action into it; None at the root), prior, critic value, mean
    backed-up value q, visits, terminal flag, reward (the env's outcome; ends only) and whether it
    lies on the chosen path (`best_path`). States are replayed from the root with each action;
    a node whose replayed state does not match the snapshot gets no reward."""
    chosen = [state_key(s) for s in out.best_path]
    nodes: list[dict[str, Any]] = []
    stack = [(out.tree, None, out.root, True)]
    while stack:
        snap, parent, state, on_path = stack.pop()
        depth = 0 if parent is None else nodes[parent]["depth"] + 1
        if state is not None and snap["action"] is not None and parent is not None:
            state = env.step(state, snap["action"])
        if state is not None and state_key(state) != snap["state"]:
            state = None
        on_path = on_path and depth < len(chosen) and snap["state"] == chosen[depth]
        node_id = len(nodes)
        nodes.append({
            "id": node_id, "parent": parent, "depth": depth,
            "step": None if parent is None else _step_text(env, snap["action"]),
            "prior": snap["prior"], "value": snap["value"], "q": snap["q"], "visits": snap["visits"],
            "terminal": snap["terminal"],
            "reward": _reward(env, state) if snap["terminal"] and state is not None else None,
            "chosen": on_path,
        })
        stack += [(c, node_id, state, on_path) for c in reversed(snap["children"])]
    return {"nodes": nodes, "chosen_path": [n["id"] for n in nodes if n["chosen"]]}


def write_trees(directory: str | Path, env: Any, results: dict[str, dict[str, Any]]) -> Path:
    """Every question's tree of every method that keeps one (`results`: evaluate_methods', with
    their outputs), as JSON files and one index.html; returns the page's path."""
    directory = Path(directory)
    pages: dict[str, list[dict[str, Any]] | None] = {}
    for method, result in results.items():
        outputs = result["outputs"]
        if any(o.tree is None for o in outputs):
            pages[method] = None
            continue
        pages[method] = []
        for index, (out, q) in enumerate(zip(outputs, result["per_question"])):
            question = q["question"] if q["question"] is not None else state_key(out.root)
            tree = {"method": method, "index": index, "question": question, "answer": q["answer"],
                    "correct": q["correct"], "tokens": q["tokens"], **question_tree(env, out)}
            tree = json.loads(json.dumps(tree, default=str))  # answers of any type, as the JSON holds them
            write_json(tree, directory / method / f"{index:04d}.json")
            pages[method].append(tree)
    return write_text(directory / "index.html", render_html(pages))


def _embedded(data: Any) -> str:
    """JSON safe inside a <script> element: no '</' can close it, no '<!--' can open a comment."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(pages: dict[str, list[dict[str, Any]] | None]) -> str:
    """The page: a static list of every method's questions (links work without the script), the
    trees as embedded JSON, and a script that draws the selected tree."""
    sections = []
    for method, trees in pages.items():
        if trees is None:
            sections.append(f"<h2>{html.escape(method)}</h2><p class=note>no tree kept</p>")
            continue
        items = "".join(
            f'<li><a href="#{html.escape(method)}/{t["index"]}">{"&#10003;" if t["correct"] else "&#10007;"} '
            f'{html.escape(str(t["question"]))}</a></li>' for t in trees)
        sections.append(f"<h2>{html.escape(method)}</h2><ol start=0>{items}</ol>")
    return (PAGE.replace("{sections}", "\n".join(sections))
            .replace("{data}", _embedded({m: t for m, t in pages.items() if t is not None})))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tsllm search trees</title>
<style>
body { font: 14px sans-serif; margin: 0; display: flex; height: 100vh; }
#list { width: 28%; overflow: auto; padding: 0 1em; border-right: 1px solid #ccc; }
#list li { margin: 2px 0; } #list a { text-decoration: none; color: #225; }
#view { flex: 1; overflow: auto; padding: 0 1em; }
#svgbox { overflow: auto; border: 1px solid #eee; } .note { color: #777; }
#path li, #node { white-space: pre-wrap; font-family: monospace; }
</style></head>
<body>
<div id="list"><h1>Search trees</h1>
{sections}
</div>
<div id="view"><h2 id="title">select a question</h2><p id="summary" class="note"></p>
<div id="svgbox"></div>
<h3>node</h3><div id="node" class="note">click a node</div>
<h3>chosen path</h3><ol id="path"></ol></div>
<script type="application/json" id="trees">{data}</script>
<script>
"use strict";
const TREES = JSON.parse(document.getElementById("trees").textContent);
const SVG = "http://www.w3.org/2000/svg";
const fmt = v => v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(3) : String(v));
function svg(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  parent.appendChild(e); return e;
}
function color(v) {  // critic value in [-1, 1]: red (bad) to green (good)
  if (v === null) return "#bbb";
  const t = Math.max(0, Math.min(1, (v + 1) / 2));
  return `rgb(${Math.round(220 * (1 - t))},${Math.round(170 * t + 40)},60)`;
}
function showNode(n) {
  document.getElementById("node").textContent =
    `step: ${n.step === null ? "(root)" : n.step}\\nprior ${fmt(n.prior)}  value ${fmt(n.value)}  ` +
    `q ${fmt(n.q)}  visits ${n.visits}  terminal ${n.terminal}  reward ${fmt(n.reward)}` +
    (n.chosen ? "  (chosen path)" : "");
}
function draw(method, index) {
  const tree = (TREES[method] || [])[index];
  if (!tree) return;
  document.getElementById("title").textContent = `${method} #${index}: ${tree.question}`;
  const answer = tree.answer === null ? "none" : String(tree.answer);
  document.getElementById("summary").textContent =
    `answer ${answer} (${tree.correct ? "correct" : "wrong"}), ${tree.nodes.length} nodes, ${tree.tokens} tokens`;
  const kids = tree.nodes.map(() => []);
  tree.nodes.forEach(n => { if (n.parent !== null) kids[n.parent].push(n.id); });
  const x = [], dx = 28, dy = 60;
  let next = 0;
  (function place(id) {  // leaves left to right, a parent centred over its children
    if (!kids[id].length) { x[id] = next++; return; }
    kids[id].forEach(place);
    x[id] = (x[kids[id][0]] + x[kids[id][kids[id].length - 1]]) / 2;
  })(0);
  const depth = Math.max(...tree.nodes.map(n => n.depth));
  const box = document.getElementById("svgbox");
  box.replaceChildren();
  const root = svg("svg", {width: (next + 1) * dx, height: (depth + 1) * dy + 20}, box);
  const px = id => (x[id] + 1) * dx, py = id => tree.nodes[id].depth * dy + 20;
  tree.nodes.forEach(n => {
    if (n.parent === null) return;
    svg("line", {x1: px(n.parent), y1: py(n.parent), x2: px(n.id), y2: py(n.id),
                 stroke: n.chosen ? "#e67e00" : "#999", "stroke-width": n.chosen ? 4 : 1}, root);
  });
  tree.nodes.forEach(n => {
    const c = svg("circle", {cx: px(n.id), cy: py(n.id), r: 5 + Math.min(6, Math.log2(1 + n.visits)),
                             fill: color(n.value), stroke: n.terminal ? "#000" : "none", "stroke-width": 2}, root);
    svg("title", {}, c).textContent = `${n.step === null ? "(root)" : n.step}\\nvalue ${fmt(n.value)} ` +
      `q ${fmt(n.q)} visits ${n.visits} reward ${fmt(n.reward)}`;
    c.style.cursor = "pointer";
    c.addEventListener("click", () => showNode(n));
  });
  const path = document.getElementById("path");
  path.replaceChildren();
  tree.chosen_path.slice(1).forEach(id => {
    const li = document.createElement("li");
    li.textContent = tree.nodes[id].step;
    path.appendChild(li);
  });
  showNode(tree.nodes[0]);
}
function fromHash() {
  const [method, index] = decodeURIComponent(location.hash.slice(1)).split("/");
  if (method in TREES) draw(method, Number(index));
}
window.addEventListener("hashchange", fromHash);
if (location.hash) fromHash(); else { const m = Object.keys(TREES)[0]; if (m) draw(m, 0); }
</script>
</body></html>
"""
