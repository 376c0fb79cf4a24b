"""The `tsllm` command.

    tsllm demo [--roots 128] [--depth 6] [--branching 3] [--value-noise 0.5] [--json FILE]
    tsllm run [--config FILE] [--output-dir DIR] [--resume|--overwrite] [--print-config] [key=value ...]
    tsllm eval [--task NAME] --policy DIR [--value DIR] [--data FILE] [--methods greedy,mcts_alpha,cot_sc] [--out FILE]
               [--sweep METHOD.KNOB=V1,V2,... --seeds N] [--trees DIR]
    tsllm eval --run RUN_DIR [--round K] [any flag above, which wins over the run]
    tsllm serve --run RUN_DIR [--round K] [--port 8000]   (or --policy DIR --value DIR --task T; docs/SERVE.md)
    tsllm bench engine --backend {hf,vllm} [--model DIR --value-model DIR | --tokenizer char,bpe] [--out FILE.json]
    tsllm bench serve [--questions 32] [--concurrency 1,8,32] [--out FILE.json]
    tsllm bench loop [--config FILE] [--output-dir DIR] [--out FILE.json] [--arms A,B] [--seeds N]
                     [--first-seed S] [key=value ...]

`run` without --config runs the main job (configs/reach/tiny.yaml, shipped in the package as
tsllm/data/reach_tiny.yaml) into runs/reach-tiny; `tsllm eval --run runs/reach-tiny` evaluates it.

`demo` needs no model and no download. It builds a batch of random reasoning trees whose value
estimates are informative but noisy (what a learned critic gives a search), runs every search
algorithm on all of them at once, and prints accuracy against generated tokens per question, so
methods can be compared at their budgets.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from tsllm.types import Budget

# The demo's methods: name -> (algorithm, knobs). Budgets are of the same order (tens of step
# tokens per question) so the table compares search strategies, not just spending.
DEMO_METHODS: dict[str, tuple[str, dict]] = {
    "greedy": ("cot_greedy", {}),
    "cot_sc@16": ("cot_sc", {"k": 16}),
    "best_of_n@16 (orm_max)": ("best_of_n", {"n": 16, "method": "orm_max"}),
    "best_of_n@16 (weighted)": ("best_of_n", {"n": 16, "method": "weighted"}),
    "bfs (beam 3)": ("bfs", {"beam_width": 3, "width": 3}),
    "dfs": ("dfs", {"width": 3, "max_answers": 2}),
    "best_first": ("best_first", {"width": 3, "budget": Budget(max_expansions=12)}),
    "mcts": ("mcts", {"num_simulations": 8, "width": 3}),
    "mcts_alpha": ("mcts_alpha", {"num_simulations": 5, "width": 3}),
    "mcts_rollout": ("mcts_rollout", {"num_paths": 8, "width": 3}),
    "gumbel_mcts": ("gumbel_mcts", {"num_simulations": 8, "width": 3}),
    "rebase@16": ("parallel_rebase", {"num_rollouts": 16, "temperature": 0.2}),
    "dora@16": ("parallel_dora", {"num_rollouts": 16, "temperature": 0.2}),
}


def run_demo(args: argparse.Namespace) -> list[dict]:
    import numpy as np

    from tsllm.envs.toy import FixedTreePolicyValue
    from tsllm.search import get_algorithm, takes_rng
    from tsllm.tasks.toy import build_forest

    env, roots = build_forest(args.roots, args.depth, args.branching, args.value_noise, args.seed)
    print(f"{len(roots)} questions: random trees of depth {args.depth}, branching {args.branching}, "
          f"value noise {args.value_noise}; right answers are 0 (reward +1)")
    rows = []
    for label, (name, knobs) in DEMO_METHODS.items():
        pv = FixedTreePolicyValue(env, seed=args.seed)
        start = time.perf_counter()
        algorithm = get_algorithm(name)
        if takes_rng(algorithm):
            knobs = {**knobs, "rng": np.random.default_rng(args.seed)}
        outs = algorithm(env, pv, roots, **knobs)
        seconds = time.perf_counter() - start
        rows.append({
            "method": label,
            "algorithm": name,
            "accuracy": sum(o.answer == 0 for o in outs) / len(outs),
            "tokens_per_question": sum(o.budget.tokens for o in outs) / len(outs),
            "value_calls_per_question": sum(o.budget.value_calls for o in outs) / len(outs),
            "policy_calls": pv.expand_calls + pv.rollout_calls,
            "seconds": seconds,
        })
        print(f"  {label:<26} accuracy {rows[-1]['accuracy']:6.1%}  "
              f"tokens/q {rows[-1]['tokens_per_question']:6.1f}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'method':<26}{'accuracy':>9}{'tokens/q':>10}{'values/q':>10}{'calls':>7}{'sec':>7}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['method']:<26}{r['accuracy']:>9.1%}{r['tokens_per_question']:>10.1f}"
              f"{r['value_calls_per_question']:>10.1f}{r['policy_calls']:>7}{r['seconds']:>7.2f}")
    print("calls = batched policy calls for all questions together")


def run_loop(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tsllm import distributed as dist
    from tsllm.config import ConfigError, load_config, to_dict, to_yaml
    from tsllm.loop import Loop, LoopConfig, check_output_dir
    from tsllm.loop_config import MAIN_JOB
    from tsllm.tasks import get_task
    from tsllm.tracking import (
        NoOpTracker,
        make_tracker,
        plot_accuracy_per_round,
        plot_accuracy_vs_tokens,
    )

    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    try:
        config = load_config(LoopConfig, args.config or MAIN_JOB, overrides)
    except ConfigError as error:  # every rank reads the same config and stops the same way
        if dist.is_main():
            print(f"tsllm: {error}", file=sys.stderr)
        return 2
    if args.print_config:  # the config the run would use, checked as the run checks it
        print(to_yaml(config), end="")
        return 0
    from tsllm.checks import writable_problem

    if problem := writable_problem(config.output_dir, is_dir=True):  # every rank: all stop together
        if dist.is_main():
            print(f"tsllm: output_dir: {problem}; choose another --output-dir", file=sys.stderr)
        return 2
    dist.setup()  # under torchrun / accelerate launch: join the process group
    refused = None
    if dist.is_main():  # one process judges (and may clear) the output dir; the others follow
        try:
            check_output_dir(config, "overwrite" if args.overwrite else "resume" if args.resume else "refuse")
        except ConfigError as error:
            refused = str(error)
    refused = dist.broadcast(refused)
    if refused:
        if dist.is_main():
            print(f"tsllm: {refused}", file=sys.stderr)
        return 2
    out = Path(config.output_dir)
    if not dist.is_main():  # tracking, plots and the summary belong to the main process
        Loop(config, NoOpTracker(), progress=False).run()
        dist.finish()
        return 0
    print(f"tsllm run: task {config.task}, {dist.world_size()} process(es), output {out}", file=sys.stderr)
    tracker = make_tracker(config.tracking.report_to, out, project=config.tracking.project, run_name=out.name,
                           config=to_dict(config), mode=config.tracking.mode)
    try:
        rows = Loop(config, tracker, progress=not args.no_progress).run()
    finally:
        tracker.finish()
    dist.finish()  # the other ranks are done too; what follows is the main process's alone
    task = get_task(config.task)  # e.g. rlhf is judged by the reward model's mean score, against best-of-N
    metric, search = task.score, config.search.algorithm
    baseline = next((r["baseline_method"] for r in rows if r.get("baseline_method")), task.baseline)
    labels = {"search": search, "baseline": f"{baseline} (matched compute)",
              "baseline_tokens": f"{baseline} (matched step tokens)"}  # the methods, not their roles
    plot_accuracy_per_round(rows, out / "accuracy_per_round.png", labels)
    plot_accuracy_vs_tokens(rows, out / "accuracy_vs_tokens.png", labels)
    width = max(10, len(search) + 2, len(baseline) + 2)
    print(f"\n(baseline: {baseline}, given the search's compute per question; tok/q and compute/q are the "
          "search's)")
    print(f"\n{'round':>5}{'greedy':>10}{search:>{width}}{baseline:>{width}}{'tok/q':>8}{'compute/q':>10}"
          f"{'value loss':>12}{'policy loss':>12}")
    for r in rows:
        losses = [f"{v:.3f}" if isinstance(v, float) else "-" for v in (r.get("value_loss"), r.get("policy_loss"))]
        scores = [r.get(f"{m}_{metric}") for m in ("greedy", "search", "baseline")]
        shown = ["-" if v is None else f"{v:.1%}" if metric == "accuracy" else f"{v:.3f}" for v in scores]
        compute = r.get("search_compute_per_question")
        print(f"{r['round']:>5}{shown[0]:>10}{shown[1]:>{width}}{shown[2]:>{width}}{r['tokens_per_question']:>8.0f}"
              f"{'-' if compute is None else f'{compute:.0f}':>10}{losses[0]:>12}{losses[1]:>12}")
    print(f"rows: {out / 'rounds.jsonl'}; plots: {out / 'accuracy_per_round.png'}, {out / 'accuracy_vs_tokens.png'}")
    return 0


def run_bench_loop(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tsllm.bench_loop import DEFAULT_ARMS, parse_arms, print_loop_table, run_loop_bench, write_json, write_plot
    from tsllm.config import ConfigError, load_config
    from tsllm.loop import LoopConfig
    from tsllm.loop_config import MAIN_JOB

    start = time.perf_counter()
    config_file = args.config or MAIN_JOB
    try:
        output_dir = args.output_dir or load_config(LoopConfig, config_file, args.overrides).output_dir + "-bench-loop"
        arms = parse_arms(args.arms) if args.arms is not None else list(DEFAULT_ARMS)
        if args.seeds is not None and args.seeds < 1:
            raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
        if args.first_seed is not None and (args.seeds is None or args.first_seed < 0):
            raise ConfigError(f"--first-seed: needs --seeds and must be >= 0, got {args.first_seed}")
        result = run_loop_bench(config_file, list(args.overrides), output_dir, progress=not args.no_progress,
                                arms=arms, seeds=args.seeds, first_seed=args.first_seed or 0)
    except ConfigError as error:
        print(f"tsllm: {error}", file=sys.stderr)
        return 2
    # how the JSON was made, so a report built from it can say so (scripts/benchmarks.py --loop-json)
    result["command"] = shlex.join(["tsllm", "bench", "loop", *(["--config", args.config] if args.config else []),
                                    *(["--arms", args.arms] if args.arms is not None else []),
                                    *(["--seeds", str(args.seeds)] if args.seeds is not None else []),
                                    *(["--first-seed", str(args.first_seed)] if args.first_seed is not None else []),
                                    *args.overrides])
    result["seconds"] = time.perf_counter() - start
    print_loop_table(result)
    out = Path(args.out or Path(output_dir) / "bench_loop.json")
    write_json(result, out)
    print(f"results: {out}, plot: {write_plot(result, out.with_suffix('.png'))}")
    return 0


# `tsllm eval` flags named by the config keys a task's check reports
EVAL_FLAGS = {"test_data": "--data", "base_model": "--policy", "reward_model": "--reward-model",
              "prompt_field": "--prompt-field", "test_split": "--split", "backend": "--backend",
              "max_response_tokens": "--max-response-tokens", "test_ranks": "--ranks",
              "prompt_format": "--prompt-format", "system_prompt": "--system-prompt"}


def rank_range(text: str) -> tuple[int, int]:
    """--ranks: 'LO-HI' as two integers (their order is the task's check)."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected LO-HI such as 901-1000, got {text!r}")
    return int(lo), int(hi)


def eval_task(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """(task class, its settings from the flags), checked as the task checks a config: errors
    stop here, before any model loads, named by their flags."""
    from tsllm.config import ConfigError
    from tsllm.tasks import get_task
    from tsllm.tasks.base import TaskSettings

    task_cls = get_task(args.task)
    settings = TaskSettings(seed=args.seed, strict=not args.lenient, test_questions=args.test_questions,
                            test_data=args.data, test_split=args.split, prompt_field=args.prompt_field,
                            reward_model=args.reward_model, max_response_tokens=args.max_response_tokens,
                            max_step_tokens=args.max_step_tokens, base_model=args.policy, backend=args.backend,
                            test_ranks=args.ranks, prompt_format=args.prompt_format,
                            system_prompt=args.system_prompt)
    try:
        task_cls.check(settings, training=False)
    except ConfigError as error:
        message = str(error)
        for key, flag in EVAL_FLAGS.items():
            message = message.replace(f"config key '{key}'", flag)
        parser.error(message)
    return task_cls, settings


def eval_methods(args: argparse.Namespace, parser: argparse.ArgumentParser, task_cls,
                 also: Sequence[str] = ()) -> dict[str, dict]:
    """{method: knobs} in order: --methods (default greedy, mcts_alpha and the task's baseline),
    then those of `also` (swept methods) not among them; the task's baseline knobs under the
    --set ones."""
    from tsllm.config import ConfigError, parse_overrides
    from tsllm.search import ALGORITHMS

    methods = [m.strip() for m in (args.methods or f"greedy,mcts_alpha,{task_cls.baseline}").split(",") if m.strip()]
    methods += [m for m in dict.fromkeys(also) if m not in methods]
    unknown = [m for m in methods if m not in ("greedy", "cot_sc") and m not in ALGORITHMS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose greedy, cot_sc or one of {sorted(ALGORITHMS)}")
    if task_cls.needs_model:
        if not args.policy:
            parser.error(f"task {args.task} needs --policy (a policy model folder)")
        if any(m not in ("greedy", "cot_sc", "best_of_n_checker") for m in methods) and not args.value:
            parser.error("value-guided searches need --value (a value model folder)")
    try:
        knobs = parse_overrides(args.set)
    except ConfigError as error:
        parser.error(str(error))
    bad_knobs = [m for m in knobs if m not in methods or not isinstance(knobs[m], dict)]
    if bad_knobs:
        parser.error(f"--set names method(s) {bad_knobs} not in --methods {methods}")
    chosen = {m: {**(task_cls.baseline_knobs if m == task_cls.baseline else {}), **knobs.get(m, {})} for m in methods}
    from tsllm.evaluate import uses_checker

    if any(uses_checker(k) for k in chosen.values()) and "best_of_n_checker" not in chosen:
        # a search that sees terminal rewards is compared with sampling that sees them too
        print("tsllm eval: a search uses terminal rewards (a checker): best_of_n_checker, sampling with the "
              "same checker, is evaluated beside it", file=sys.stderr)
        chosen["best_of_n_checker"] = {}
    return chosen


def stop(message: str) -> NoReturn:
    """One line on stderr and exit 2: a bad input, not a bug (no traceback)."""
    print(f"tsllm: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_eval_inputs(args: argparse.Namespace, task_cls) -> None:
    """Model folders of the right kind, a readable non-empty --data, a writable --out: checked
    before any model loads, so a wrong input is one line, never a traceback or lost results."""
    from tsllm.checks import data_file_problem, model_folder_problem, writable_problem

    models = [("--policy", args.policy, "policy"), ("--value", args.value, "value"),
              ("--reward-model", args.reward_model, "reward")]
    for flag, path, kind in models:
        if path and task_cls.needs_model and (problem := model_folder_problem(path, kind)):
            stop(f"{flag}: {problem}")
    if args.backend == "vllm" and args.policy and task_cls.needs_model:
        from tsllm.generation.vllm import model_folder_problem as vllm_problem

        if problem := vllm_problem(args.policy):  # before the engine's worker fails with a traceback
            stop(f"--policy: {problem}")
    if args.data and (problem := data_file_problem(args.data)):
        stop(f"--data: {problem}")
    if args.out and (problem := writable_problem(args.out)):
        stop(f"--out: {problem}")
    if args.trees and (problem := writable_problem(args.trees, is_dir=True)):
        stop(f"--trees: {problem}")


def run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    from tsllm import sweep, trees
    from tsllm.config import ConfigError
    from tsllm.distributed import device
    from tsllm.envs.base import DataError
    from tsllm.eval_run import resolve_eval_args
    from tsllm.evaluate import MethodModels, evaluate_methods, print_table, save_results

    try:  # the sweeps, then the flags a run gives (--run) and the defaults; before any model loads
        sweeps = sweep.check_args(args)
        from_run = resolve_eval_args(args, swept=[s.method for s in sweeps])
    except ConfigError as error:
        stop(str(error))
    if from_run:
        print(f"tsllm eval: {from_run}", file=sys.stderr)
    task_cls, settings = eval_task(args, parser)
    knobs = eval_methods(args, parser, task_cls, also=[s.method for s in sweeps])
    check_eval_inputs(args, task_cls)
    methods = list(knobs)
    try:
        task = task_cls(settings, device())
        problems = task.test_problems()
    except (ConfigError, DataError) as error:
        print(f"tsllm: {error}", file=sys.stderr)
        return 2
    if not problems:
        stop(f"--data: {args.data} holds no problems" if args.data else "the held-out split is empty")
    warning = task.unusual_problems(problems)
    if warning:
        print(f"tsllm: warning: {warning}", file=sys.stderr)
    make_pv = MethodModels(task, args.policy, args.value, args.backend, args.temperature,
                           args.allow_illegal_steps, device()).make_pv
    if sweep.sweeping(args):
        return sweep.run_from_args(args, task, make_pv, problems, knobs, sweeps)
    results = evaluate_methods(task.env, make_pv, problems, methods, knobs, match_budget=not args.no_match_budget,
                               unit=args.match_unit)
    extra: list[str] = []
    for result in results.values():
        found = task.method_metrics(result)
        result.update(found)
        extra += [m for m in found if m not in extra]
    print_table(results, tuple(extra))
    if args.out:
        save_results(results, args.out, {"policy": args.policy, "value": args.value, "task": args.task,
                                         "data": args.data, "questions": len(problems), "run": args.run,
                                         "round": args.round})
    if args.trees:
        print(f"trees: {trees.write_trees(args.trees, task.env, results)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tsllm` console script. (vLLM starts worker processes that re-import
    the main module, so engine-building commands run only under `if __name__ == "__main__"` or
    through this console script.)"""
    from tsllm import serve, sweep, trees
    from tsllm.eval_run import EVAL_DEFAULTS, add_model_arguments
    from tsllm.tasks import get_task, names

    parser = argparse.ArgumentParser(prog="tsllm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compare every search algorithm on noisy toy trees (no model)")
    demo.add_argument("--roots", type=int, default=128, help="questions (trees) searched together")
    demo.add_argument("--depth", type=int, default=6, help="steps to an answer")
    demo.add_argument("--branching", type=int, default=3, help="candidate steps per state")
    demo.add_argument("--value-noise", type=float, default=0.5,
                      help="std of the Gaussian noise on the value estimates (0 = perfect critic)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    run = sub.add_parser("run", help="the iteration loop (default config: the main job, reach, into runs/reach-tiny)")
    run.add_argument("--config", help="YAML config (default: the main job, configs/reach/tiny.yaml, "
                                      "output runs/reach-tiny)")
    run.add_argument("--output-dir", help="where the run lives (overrides output_dir)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue a run even if its config changed")
    mode.add_argument("--overwrite", action="store_true", help="delete the run in --output-dir and start over")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--print-config", action="store_true",
                     help="print the resolved config (YAML) and exit; fails as the run would on a bad config")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. rounds=3")
    ev = sub.add_parser("eval", help="evaluate a policy (+ value) checkpoint with search methods")
    add_model_arguments(ev, "evaluate")

    def run_default(name: str) -> str:
        return f"default: the run's, else {EVAL_DEFAULTS[name]}"

    ev.add_argument("--data", help="problems file (or hub dataset id) in the task's format, e.g. "
                                   + "; ".join(f"{n}: {get_task(n).data_help}" for n in names()
                                               if get_task(n).data_help) + "; default: the task's held-out split")
    ev.add_argument("--split", help=f"the split of a hub dataset --data ({run_default('split')})")
    ev.add_argument("--ranks", type=rank_range, metavar="LO-HI",
                    help="game24: the ranks kept of a Tree-of-Thoughts CSV --data, inclusive (ToT's test set: "
                         "901-1000; default: every row)")
    ev.add_argument("--prompt-field", help=f"rlhf: the prompts' column in --data ({run_default('prompt_field')})")
    ev.add_argument("--test-questions", type=int, help=f"size of the held-out split ({run_default('test_questions')})")
    ev.add_argument("--methods", help="comma-separated: greedy, cot_sc, or any search algorithm name "
                                      "(default: greedy, the run's search algorithm or mcts_alpha, and the task's "
                                      "baseline)")
    ev.add_argument("--set", action="append", default=[], metavar="METHOD.KNOB=VALUE",
                    help="a method's knob, e.g. mcts_alpha.num_simulations=8 (repeatable)")
    ev.add_argument("--no-match-budget", action="store_true",
                    help="do not give the sampling methods (cot_sc, best_of_n, best_of_n_checker) the first tree "
                         "search's cost per question as their budget")
    ev.add_argument("--match-unit", choices=["compute", "tokens"], default="compute",
                    help="the cost a matched sampling method shares with the search: compute (policy tokens "
                         "processed: step tokens + prompt tokens not served from a cache) or step tokens")
    ev.add_argument("--lenient", action="store_true",
                    help="count a right final answer as solved even when a step broke the task's rules "
                         "(the loop scores strictly by default)")
    ev.add_argument("--out", metavar="FILE.json", help="write accuracy and per-question tokens here")
    sweep.add_arguments(ev)
    trees.add_arguments(ev)
    serve.add_arguments(sub)
    bench = sub.add_parser("bench", help="benchmarks (engine: how well a backend serves tree search; "
                                         "loop: the search loop against the RFT loop)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    engine = bench_sub.add_parser("engine", help="tse/prf/vcn of MCTS-α vs flat sampling on one backend")
    engine.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    engine.add_argument("--model", help="policy folder (default: a tiny random Llama built on the fly)")
    engine.add_argument("--value-model", help="value model folder (needed with --model)")
    engine.add_argument("--tokenizer", default="char", metavar="KIND[,KIND]",
                        help="the tiny model's tokenizer without --model: char, bpe (byte-level BPE trained on "
                             "Game24's text), or char,bpe to run both and print them side by side")
    engine.add_argument("--roots", type=int, default=16, help="Game24 puzzles searched together")
    engine.add_argument("--simulations", type=int, default=8, help="MCTS-α simulations per move")
    engine.add_argument("--width", type=int, default=4, help="sampled steps per expansion")
    engine.add_argument("--parallel-simulations", type=int, default=8,
                        help="MCTS-α simulations batched per round with virtual loss")
    engine.add_argument("--overlap-value", action="store_true",
                        help="score new children while the policy still decodes other samples")
    engine.add_argument("--repeats", type=int, default=5, help="interleaved tree/flat repeats (median ratio)")
    engine.add_argument("--block-size", type=int, default=32,
                        help="vLLM KV-cache block size: prefix caching reuses whole blocks, so "
                             "small blocks serve more of a tree (vLLM only; CPU needs multiples of 32)")
    engine.add_argument("--out", metavar="FILE.json", help="write the results here")
    bench_serve = bench_sub.add_parser("serve", help="tsllm serve's requests/s and p50/p95 latency at 1, 8 and 32 "
                                                     "clients beside tsllm eval's throughput, on the tiny model")
    bench_serve.add_argument("--questions", type=int, default=32, help="Game24 questions, one request each")
    bench_serve.add_argument("--concurrency", default="1,8,32", help="comma-separated numbers of clients")
    bench_serve.add_argument("--out", metavar="FILE.json", help="write the results here")
    loop = bench_sub.add_parser("loop", help="the loop once per arm (policy target, or sampling: RFT) from one "
                                             "warm start, per round; by default the search loop against RFT")
    loop.add_argument("--config", help="YAML config (default: the main job, configs/reach/tiny.yaml)")
    loop.add_argument("--output-dir", help="where the runs live, one folder per arm (seed_<s>/<arm> with --seeds) "
                                           "(default: the config's output_dir + '-bench-loop')")
    loop.add_argument("--out", metavar="FILE.json", help="the tables and every run's rounds, with a PNG beside it "
                                                         "(default: OUTPUT_DIR/bench_loop.json)")
    loop.add_argument("--arms", metavar="A,B,...", help="comma-separated: paths, advantages, visits, preferences "
                                                        "(policy.target with improve=search), sampling (RFT); "
                                                        "search is the old name of paths (default: search,sampling)")
    loop.add_argument("--seeds", type=int, metavar="N", help="repeat every arm with seed=0..N-1 and report "
                                                             "mean ± std per round (default: once, the config's seed)")
    loop.add_argument("--first-seed", type=int, metavar="S", help="with --seeds N: seeds S..S+N-1 instead of 0..N-1, "
                                                                  "to add seeds to a finished bench (default: 0)")
    loop.add_argument("--no-progress", action="store_true", help="no progress bars")
    loop.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for both runs")
    args = parser.parse_args(argv)

    if args.command == "run":
        return run_loop(args)
    if args.command == "eval":
        return run_eval(args, parser)
    if args.command == "serve":
        return serve.run_from_args(args, parser)
    if args.command == "bench" and args.bench == "loop":
        return run_bench_loop(args)
    if args.command == "bench" and args.bench == "serve":
        from tsllm.bench import print_serve_table, run_serve_bench, write_json

        clients = [c.strip() for c in args.concurrency.split(",") if c.strip()]
        if args.questions < 1 or not clients or not all(c.isdigit() and int(c) >= 1 for c in clients):
            parser.error("--questions must be >= 1 and --concurrency a comma-separated list of numbers >= 1")
        result = run_serve_bench(args.questions, tuple(map(int, clients)))
        print_serve_table(result)
        if args.out:
            write_json(result, args.out)
        return 0
    if args.command == "bench":
        from tsllm.bench import (
            TOKENIZERS,
            engine_json,
            print_engine_comparison,
            print_engine_table,
            run_engine_bench,
            write_json,
        )

        for name in ("roots", "simulations", "width", "repeats", "parallel_simulations"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1")
        tokenizers = list(dict.fromkeys(t.strip() for t in args.tokenizer.split(",") if t.strip()))
        if not tokenizers or any(t not in TOKENIZERS for t in tokenizers):
            parser.error(f"--tokenizer {args.tokenizer!r}: give one or more of {', '.join(TOKENIZERS)}, "
                         "comma-separated")
        if args.model and tokenizers != ["char"]:
            parser.error("--tokenizer picks the tiny model's tokenizer; --model brings its own")
        extra = {"block_size": args.block_size, "enforce_eager": True} if args.backend == "vllm" else {}
        results = []
        for tokenizer in tokenizers:
            results.append(run_engine_bench(args.backend, args.model, args.value_model, roots=args.roots,
                                            simulations=args.simulations, width=args.width, repeats=args.repeats,
                                            parallel_simulations=args.parallel_simulations,
                                            overlap_value=args.overlap_value, tokenizer=tokenizer, **extra))
            print_engine_table(results[-1])
        if len(results) > 1:
            print_engine_comparison(results)
        if args.out:
            write_json(engine_json(results), args.out)
    if args.command == "demo":
        for name in ("roots", "depth", "branching"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be >= 1")
        if args.value_noise < 0:
            parser.error("--value-noise must be >= 0")
        rows = run_demo(args)
        print_table(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
