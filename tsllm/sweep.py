"""Budget sweeps for `tsllm eval`: each method at several values of one knob, over several seeds,
as JSON, a table and the test-time scaling plot (accuracy vs cost per question, in step tokens
and in compute side by side).

    tsllm eval --policy DIR --value DIR --sweep mcts_alpha.num_simulations=2,4,8,16 \
               --sweep cot_sc.k=1,4,16,64 --seeds 3 --out sweep.json      # + sweep.png

A `--sweep METHOD.KNOB=V1,V2,...` names any method's knob (the method joins those run); methods
that are not swept are one point at their `--set` knobs. Each point runs once per seed: seed s
gives the search its own `rng` and the policy its own sampling stream, and seed 0 is exactly what
a plain `tsllm eval` runs. Greedy decoding is deterministic, so it runs once per point, and so
does a search whose seed-0 run drew nothing random (no `rng`, every expansion scored). Every
point records each seed's accuracy and tokens per question, and their mean and spread (sample
std, min, max). Votes are not matched to the tree search here (`--match-budget` is for one
point per method): the curve is the comparison.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsllm.atomic import write_json
from tsllm.config import ConfigError
from tsllm.progress import show_progress

# LLMPolicyValue seeds generator call c with `seed + c`: seeds this far apart never share a call's seed
SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Sweep:
    """One `--sweep`: a method's knob and the values it takes, in the order given."""

    method: str
    knob: str
    values: tuple[int | float, ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", action="append", default=[], metavar="METHOD.KNOB=V1,V2,...",
                        help="evaluate METHOD at each value of KNOB (repeatable, one knob per method; the "
                             "method joins --methods), e.g. mcts_alpha.num_simulations=2,4,8,16; writes the "
                             "points as JSON (--out, default sweep.json), a table and a PNG beside the JSON; "
                             "votes are not matched to the search in a sweep")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per point, each with its own search and sampling seed (mean and spread "
                             "reported); more than 1 makes a sweep even without --sweep")


def _method_knobs(method: str) -> dict[str, Any]:
    """The knobs `method` takes: its algorithm's keyword parameters and the Budget limits."""
    from tsllm.loop_config import algorithm_knobs
    from tsllm.types import Budget

    knobs: dict[str, Any] = dict(algorithm_knobs("cot_greedy" if method == "greedy" else method))
    return {**knobs, **{limit: None for limit in Budget.LIMITS}}


def _number(text: str, spec: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--sweep {spec}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"--sweep {spec}: {text!r} is not a finite number")
    return value


def parse_sweep(spec: str) -> Sweep:
    """`mcts_alpha.num_simulations=2,4,8` -> Sweep, checked against the method's signature as the
    loop checks `search.knobs`; a ConfigError naming --sweep otherwise."""
    from tsllm.loop_config import check_knob
    from tsllm.search import ALGORITHMS

    key, sep, raw = spec.partition("=")
    method, dot, knob = key.partition(".")
    if not sep or not dot or not method or not knob:
        raise ConfigError(f"--sweep {spec}: write METHOD.KNOB=V1,V2,... (e.g. mcts_alpha.num_simulations=2,4,8)")
    if method != "greedy" and method not in ALGORITHMS:
        raise ConfigError(f"--sweep {spec}: unknown method {method!r}; choose greedy or one of {sorted(ALGORITHMS)}")
    valid = _method_knobs(method)
    if knob not in valid:
        raise ConfigError(f"--sweep {spec}: {method} has no knob {knob!r}; its knobs: {sorted(valid)}")
    texts = [t.strip() for t in raw.split(",") if t.strip()]
    if not texts:
        raise ConfigError(f"--sweep {spec}: no values (write {key}=V1,V2,...)")
    values = tuple(_number(t, spec) for t in texts)
    for value in values:
        if valid[knob] is None:  # a Budget limit
            if value < 0:
                raise ConfigError(f"--sweep {spec}: {knob} must be >= 0, got {value}")
        else:
            try:
                check_knob(knob, value, valid[knob])
            except ConfigError as error:  # "config key 'k': must be ..." -> "k must be ..."
                raise ConfigError(f"--sweep {spec}: {knob} {str(error).split(': ', 1)[1]}") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"--sweep {spec}: a value is repeated")
    return Sweep(method, knob, values)


def parse_sweeps(specs: list[str], seeds: int) -> list[Sweep]:
    """Every --sweep, checked (one knob per method), and --seeds >= 1."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    sweeps = [parse_sweep(spec) for spec in specs]
    methods = [s.method for s in sweeps]
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ConfigError(f"--sweep: one knob per method; {twice} swept more than once")
    return sweeps


@dataclass(frozen=True)
class Point:
    method: str
    knobs: dict[str, Any]
    knob: str | None = None  # the swept knob (None: the method's one point)
    value: int | float | None = None


def plan(knobs: dict[str, dict[str, Any]], sweeps: list[Sweep]) -> list[Point]:
    """The points in order: each method of `knobs` (eval's {method: knobs}, swept methods included)
    once per swept value over its other knobs, or once."""
    swept = {s.method: s for s in sweeps}
    points = []
    for method, method_knobs in knobs.items():
        sweep = swept.get(method)
        if sweep is None:
            points.append(Point(method, dict(method_knobs)))
            continue
        points += [Point(method, {**method_knobs, sweep.knob: v}, sweep.knob, v) for v in sweep.values]
    return points


def reseed(pv: Any, seed: int) -> Any:
    """`pv`, freshly built by make_pv, made to sample from stream `seed`; seed 0 leaves it as built."""
    if seed == 0:
        return pv
    import numpy as np

    if isinstance(getattr(pv, "seed", None), int):  # LLMPolicyValue: one seeded generator call each
        pv.seed += seed * SEED_STRIDE
    elif isinstance(getattr(pv, "rng", None), np.random.Generator):  # toy trees: rollouts draw from it
        pv.rng = np.random.default_rng([int(pv.rng.integers(2**32)), seed])
    else:  # token level: samples from torch's global generator
        import torch

        torch.manual_seed(seed)
    return pv


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample std (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def at_cost(points: list[tuple[float, ...]], cost: float) -> tuple[float, ...] | None:
    """A curve's values at `cost`: `points` are (cost, value, ...) tuples with cost > 0, read
    linearly in log cost between the two points around it (a sweep's curves are straight there
    more often than in cost); None outside the costs the curve spent, except within 5% of its
    cheapest point."""
    pts = sorted(points)
    for (x0, *y0), (x1, *y1) in zip(pts, pts[1:]):
        if x0 <= cost <= x1:
            t = 0.0 if x1 == x0 else (math.log(cost) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return tuple(a + t * (b - a) for a, b in zip(y0, y1))
    if pts and math.isclose(cost, pts[0][0], rel_tol=0.05):
        return tuple(pts[0][1:])
    return None


def run_point(env: Any, make_pv, problems: list, point: Point, seed: int, metrics=None,
              progress: bool = False) -> dict[str, Any]:
    """One seed of one point: accuracy, tokens per question, the task's own metrics, per question
    whether it checked and what it spent."""
    import numpy as np

    from tsllm.evaluate import run_method
    from tsllm.search import get_algorithm, takes_rng

    rng = None if seed == 0 else np.random.default_rng(seed)  # None: the algorithms' own seed, as eval
    built = []

    def seeded_pv(*args):
        built.append(reseed(make_pv(*args), seed))
        return built[-1]

    result = run_method(env, seeded_pv, problems, point.method, point.knobs, progress, rng=rng)
    per_question = result["per_question"]
    # nothing random was drawn: no rng, and every expansion scored rather than sampled
    deterministic = (point.method != "greedy" and not takes_rng(get_algorithm(point.method))
                     and all(getattr(pv, "generate_calls", None) == 0 for pv in built))
    return {"seed": seed, "deterministic": deterministic,
            "accuracy": result["accuracy"], "tokens_per_question": result["tokens_per_question"],
            "compute_per_question": result["compute_per_question"],
            "value_calls_per_question": result["value_calls_per_question"],
            "value_tokens_per_question": result["value_tokens_per_question"],
            "total_compute_per_question": result["compute_per_question"] + result["value_tokens_per_question"],
            **(metrics(result) if metrics else {}),
            "correct": [q["correct"] for q in per_question], "tokens": [q["tokens"] for q in per_question]}


def run_sweep(env: Any, make_pv, problems: list, points: list[Point], seeds: int, metrics=None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Every point over `seeds` seeds (greedy: one), with the spread of each number over seeds."""
    from tqdm.auto import tqdm

    rows = []
    for point in tqdm(points, desc="sweep", unit="point", disable=not show_progress(progress)):
        runs = [run_point(env, make_pv, problems, point, 0, metrics, progress)]
        if point.method != "greedy" and not runs[0]["deterministic"]:  # greedy decoding is deterministic
            runs += [run_point(env, make_pv, problems, point, s, metrics, progress) for s in range(1, seeds)]
        numbers = {k: [v for r in runs if isinstance(v := r.get(k), (int, float)) and not isinstance(v, bool)]
                   for k in runs[0] if k not in ("seed", "deterministic")}
        rows.append({"method": point.method, "knob": point.knob, "value": point.value, "knobs": point.knobs,
                     **{k: spread(vs) for k, vs in numbers.items() if vs}, "runs": runs})
    return rows


def print_sweep(rows: list[dict[str, Any]]) -> None:
    """Per point: accuracy (mean, std, min, max over seeds), tokens per question (mean, std), compute
    and value-model calls per question (means), and the mean of each task metric (rlhf: reward)."""
    core = ("accuracy", "tokens_per_question")
    extra = [k for k in dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, dict) and "mean" in v)
             if k not in core]
    costs = ("compute_per_question", "value_calls_per_question", "value_tokens_per_question")
    extra = [k for k in extra if k not in (*costs, "total_compute_per_question")]
    header = (f"{'point':<36}{'seeds':>6}{'accuracy':>10}{'± std':>8}{'min':>8}{'max':>8}{'tokens/q':>10}{'± std':>8}"
              f"{'compute/q':>10}{'values/q':>10}{'critic/q':>10}" + "".join(f"{k:>10}" for k in extra))
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        label = r["method"] if r["knob"] is None else f"{r['method']} {r['knob']}={r['value']}"
        a, t = r["accuracy"], r["tokens_per_question"]
        shown = "".join(f"{r[k]['mean']:>10.3f}" if k in r else f"{'-':>10}" for k in extra)
        compute, values, critic = (r.get(k, {}).get("mean", 0.0) for k in costs)
        print(f"{label:<36}{len(r['runs']):>6}{a['mean']:>10.1%}{a['std']:>8.1%}{a['min']:>8.1%}{a['max']:>8.1%}"
              f"{t['mean']:>10.1f}{t['std']:>8.1f}{compute:>10.1f}{values:>10.1f}{critic:>10.1f}{shown}")


COST_UNITS = (("tokens_per_question", "policy tokens of the steps per question (log)"),
              ("compute_per_question", "policy tokens processed per question (log)"),
              ("total_compute_per_question", "policy + value-model tokens processed per question (log)"))


def plot_sweep(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy vs cost per question, in each cost unit side by side (step tokens; compute:
    those plus prompt tokens not served from a cache; total: compute plus the tokens the value
    model ran, the critic's price): one line per method through its points in
    swept order, error bars one std over seeds both ways, each point labelled by its value; log x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tsllm.tracking import save_figure

    figure = Figure(figsize=(6 * len(COST_UNITS), 4.8), dpi=110)
    FigureCanvasAgg(figure)
    figure.suptitle("Accuracy vs cost per question (test-time scaling)")
    for index, (unit, label) in enumerate(COST_UNITS):
        axes = figure.add_subplot(1, len(COST_UNITS), index + 1)
        axes.set_xlabel(label)
        axes.set_ylabel("accuracy")
        axes.grid(True, alpha=0.3)
        for method in dict.fromkeys(r["method"] for r in rows):
            points = [r for r in rows if r["method"] == method and r.get(unit, {}).get("mean", 0) > 0]
            if not points:
                continue
            xs = [r[unit]["mean"] for r in points]
            means = [r["accuracy"]["mean"] for r in points]
            axes.errorbar(xs, means, yerr=[r["accuracy"]["std"] for r in points], xerr=[r[unit]["std"] for r in points],
                          marker="o", capsize=3,
                          label=method if points[0]["knob"] is None else f"{method} ({points[0]['knob']})")
            for r, x, y in zip(points, xs, means):
                if r["knob"] is not None:
                    axes.annotate(f"{r['value']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if axes.get_legend_handles_labels()[0]:
            axes.set_xscale("log")
            axes.legend(loc="best", fontsize=8)
        else:
            axes.text(0.5, 0.5, "no point spent any tokens", ha="center", va="center", transform=axes.transAxes)
        axes.set_ylim(-0.03, 1.03)
    return save_figure(figure, path)


def write_sweep(rows: list[dict[str, Any]], out: str | Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """The sweep's JSON at `out` and its plot beside it (same name, .png)."""
    out = Path(out)
    path = write_json({**meta, "points": rows}, out)
    return path, plot_sweep(rows, out.with_suffix(".png"))


def sweeping(args: argparse.Namespace) -> bool:
    """Whether `tsllm eval` runs a sweep: a --sweep, or more than one seed."""
    return bool(args.sweep) or args.seeds > 1


def sweep_out(args: argparse.Namespace) -> Path:
    return Path(args.out or "sweep.json")


def check_args(args: argparse.Namespace) -> list[Sweep]:
    """eval's sweep flags, checked before any model loads (a ConfigError naming the flag)."""
    from tsllm.checks import writable_problem

    sweeps = parse_sweeps(args.sweep, args.seeds)
    if sweeping(args):
        if args.trees:
            raise ConfigError("--trees draws the trees of one evaluation; run it without --sweep and --seeds")
        for path in (sweep_out(args), sweep_out(args).with_suffix(".png")):
            if problem := writable_problem(str(path)):
                raise ConfigError(f"--out: {problem}")
    return sweeps


def run_from_args(args: argparse.Namespace, task: Any, make_pv, problems: list, knobs: dict[str, dict[str, Any]],
                  sweeps: list[Sweep]) -> int:
    """`tsllm eval` with a sweep: run it, print the table, write the JSON and the plot."""
    rows = run_sweep(task.env, make_pv, problems, plan(knobs, sweeps), args.seeds, task.method_metrics)
    print_sweep(rows)
    meta = {"policy": args.policy, "value": args.value, "task": args.task, "data": args.data,
            "questions": len(problems), "seeds": args.seeds, "sweeps": {s.method: s.knob for s in sweeps}}
    path, plot = write_sweep(rows, sweep_out(args), meta)
    print(f"sweep: {path}; plot: {plot}")
    return 0
