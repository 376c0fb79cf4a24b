"""Evaluating a policy (+ value) checkpoint with decoding methods at their token budgets.

    tsllm eval --policy DIR [--value DIR] [--task game24] [--data FILE] [--reward-model DIR] \
               [--methods greedy,mcts_alpha,cot_sc] [--set mcts_alpha.num_simulations=8] [--out FILE.json]

Methods: `greedy` (temperature-0 chain), `cot_sc` (self-consistency), `best_of_n` (the ORM
picks) and `best_of_n_checker` (sampling + the env's checker: the baseline of a search that sees
terminal rewards), and any name in tsllm.search.ALGORITHMS (value-guided; needs --value;
proposals that break the task's rules are dropped, see Env.legal_step). Unless --no-match-budget,
a sampling method gets the first tree search's cost per question as its budget (`matched_knobs`).
Per method: accuracy (exact checker), cost per question in step tokens and in compute (those
plus prompt tokens not served from a cache) and the task's own metrics (rlhf: mean reward),
written as JSON with the per-question results. The problems, env and policy/value bridge are the
task's (tsllm/tasks/), so every registered task evaluates the same way. The loop's eval
stage uses the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsllm.atomic import write_json
from tsllm.progress import show_progress


def chunks(items: list, size: int, label: str, progress: bool = True) -> Iterator[list]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=label, unit="q", disable=not show_progress(progress), leave=False)
    for i in range(0, len(items), size):
        yield items[i:i + size]
        bar.update(min(size, len(items) - i))
    bar.close()


def is_correct(env: Any, out: Any) -> bool:
    """Whether a SearchOutput's answer checks: its best path's end when that carries the answer,
    else any complete candidate path with the chosen answer (votes pick answers, not paths)."""
    if out.answer is None:
        return False
    end = out.best_path[-1]
    if env.is_terminal(end) and env.answer(end) == out.answer:
        return env.reward(end) > 0
    return any(env.is_terminal(c.path[-1]) and c.answer == out.answer and env.reward(c.path[-1]) > 0
               for c in out.candidates)


class MethodModels:
    """The models a task's methods decode with, loaded once and shared by every method of a
    `tsllm eval` or `tsllm serve`: the policy's generator (built on first use: token-level tasks
    read the model themselves) and the value model. `make_pv` is what `run_method` takes."""

    def __init__(self, task: Any, policy: str | None, value: str | None, backend: str, temperature: float,
                 allow_illegal_steps: bool = False, device: str = "cpu"):
        self.task, self.policy, self.backend = task, policy, backend
        self.temperature, self.allow_illegal_steps = temperature, allow_illegal_steps
        self.generator: Any = None
        self.value_fn: Any = None
        if value and task.needs_model:
            from tsllm.models.value import ValueFunction

            self.value_fn = ValueFunction(value, device=device)

    def generator_for(self, policy: str) -> Any:
        if self.generator is None:
            from tsllm.generation import make_generator

            self.generator = make_generator(self.backend, policy)
        return self.generator

    def make_pv(self, temperature: float | None, guided: bool, rules: bool) -> Any:
        """The task's PolicyValueFn: guided (tree searches) with the value model, else the policy
        alone; under the task's rules when `rules`; temperature None: the run's."""
        value = self.value_fn if guided and self.value_fn is not None else (lambda texts: [0.0] * len(texts))
        return self.task.policy_value(self.policy, self.generator_for, value,
                                      self.temperature if temperature is None else temperature,
                                      legal_steps_only=rules and not self.allow_illegal_steps)


# greedy is cot_greedy keeping one child per step
GREEDY_KNOBS = {"width": 1}


def prepare_method(make_pv, method: str, knobs: dict[str, Any], rng: Any = None) -> tuple[Any, Any, Any, dict]:
    """(algorithm, policy/value, budget, search knobs) of one method, as `run_method` and `tsllm
    serve` call it: `make_pv(temperature, guided, rules)` builds the LLMPolicyValue (guided, for
    tree searches and best-of-N: with the value model; rules: under the task's rules).
    Greedy gets the policy alone (its accuracy is the policy's own); cot_sc the policy under the
    task's rules, as every method that samples, so no baseline lacks the legal-move mask;
    Budget limits among `knobs` (`max_tokens`, `max_expansions`, `max_value_calls`,
    `max_seconds`; per question) become the budget, the rest stay the algorithm's keyword
    arguments; `rng` goes to the algorithms that draw random numbers (None: their fixed seed)."""
    from tsllm.policy_value import apply_bridge_knobs
    from tsllm.search import cot_greedy, get_algorithm, takes_rng
    from tsllm.types import Budget

    if method == "greedy":
        algorithm, pv, knobs = cot_greedy, make_pv(0.0, False, False), {**GREEDY_KNOBS, **knobs}
    elif method == "cot_sc":
        algorithm, pv = get_algorithm("cot_sc"), make_pv(None, False, True)
    else:
        algorithm, pv = get_algorithm(method), make_pv(None, True, True)
    budget = Budget(**{name: knobs[name] for name in Budget.LIMITS if name in knobs})
    search_knobs = {name: value for name, value in apply_bridge_knobs(pv, knobs).items() if name not in Budget.LIMITS}
    if rng is not None and takes_rng(algorithm):
        search_knobs["rng"] = rng
    return algorithm, pv, budget, search_knobs


def run_method(env: Any, make_pv, problems: list[dict], method: str, knobs: dict[str, Any],
               progress: bool = True, rng: Any = None) -> dict[str, Any]:
    """Accuracy and tokens per question of one method (built by `prepare_method`, whose doc says
    what `make_pv`, `knobs` and `rng` are), over `problems` in chunks of 32 roots per call."""
    algorithm, pv, budget, search_knobs = prepare_method(make_pv, method, knobs, rng)
    knobs = {**GREEDY_KNOBS, **knobs} if method == "greedy" else knobs  # recorded as run
    outs, rows = [], []
    for chunk in chunks(problems, 32, method, progress):
        before = critic_tokens(pv)
        done = algorithm(env, pv, [env.initial_state(p) for p in chunk], budget=budget, **search_knobs)
        # one batched value call serves a whole chunk's roots, so its tokens are shared evenly
        share = (critic_tokens(pv) - before) / max(len(done), 1)
        outs += done
        rows += [{**question_result(env, o), "value_tokens": share} for o in done]
    return {**summarize(method, knobs, rows), "outputs": outs}


def critic_tokens(pv: Any) -> int:
    """Tokens the value model has run for this policy/value so far (0 when it has no counting critic)."""
    return getattr(getattr(pv, "value", None), "tokens_computed", 0)


def question_result(env: Any, out: Any) -> dict[str, Any]:
    """One question's outcome: its answer, whether it checks, tokens spent, tree nodes, and the
    reward of the path the method chose (None when that path is unfinished)."""
    end = out.best_path[-1]
    root = out.root
    return {"question": getattr(root, "question", getattr(root, "prompt", None)), "answer": out.answer,
            "correct": is_correct(env, out), "tokens": out.budget.tokens, "compute": out.budget.compute,
            "value_calls": out.budget.value_calls,
            "nodes": out.stats.get("nodes", 0),
            "reward": env.reward(end) if env.is_terminal(end) else None}


def summarize(method: str, knobs: dict[str, Any], per_question: list[dict[str, Any]]) -> dict[str, Any]:
    """A method's accuracy and tokens per question from its per-question results (which may come
    from several processes, each having run a share of the questions)."""
    n = max(len(per_question), 1)
    return {"method": method, "knobs": knobs, "accuracy": sum(q["correct"] for q in per_question) / n,
            "tokens_per_question": sum(q["tokens"] for q in per_question) / n,
            "compute_per_question": sum(q.get("compute", q["tokens"]) for q in per_question) / n,
            "value_calls_per_question": sum(q.get("value_calls", 0) for q in per_question) / n,
            "value_tokens_per_question": sum(q.get("value_tokens", 0) for q in per_question) / n,
            "per_question": per_question}


# Sampling methods a matched budget applies to, and the knob that bounds their sample count
VOTES_KNOBS = {"cot_sc": "k", "best_of_n": "n", "best_of_n_checker": "n"}
MAX_SAMPLES = 64  # a matched baseline draws at most this many samples per question
COST_LIMITS = {"tokens": "max_tokens", "compute": "max_compute"}  # cost unit -> the Budget limit on it


def uses_checker(knobs: dict[str, Any]) -> bool:
    """Whether a search with these knobs sees the env's reward at terminals (a checker)."""
    return bool(knobs.get("use_terminal_reward"))


def fair_baseline(method: str, knobs: dict[str, Any], default: str) -> str:
    """The sampling baseline of a search: sampling with the checker when the search sees one
    (the same information), else `default` (the task's: CoT-SC's vote, or best-of-N by the ORM)."""
    return "best_of_n_checker" if method not in VOTES_KNOBS and uses_checker(knobs) else default


def matched_knobs(method: str, knobs: dict[str, Any], search_knobs: dict[str, Any], search: dict[str, Any],
                  unit: str = "compute") -> dict[str, Any]:
    """A sampling baseline's knobs at a search's cost: per question it may spend what the search
    may (its own limit in `unit`, else its measured mean spend), and draws samples in order until
    the next would not fit, at most MAX_SAMPLES. So how many it keeps comes from its own measured
    cost per sample, never from another method's path length."""
    limit = COST_LIMITS[unit]
    cap = search_knobs.get(limit) or max(1, round(search[f"{unit}_per_question"]))
    return {**knobs, VOTES_KNOBS[method]: knobs.get(VOTES_KNOBS[method], MAX_SAMPLES), limit: cap}


def evaluate_methods(env: Any, make_pv, problems: list[dict], methods: list[str],
                     knobs: dict[str, dict[str, Any]], match_budget: bool = True, unit: str = "compute",
                     progress: bool = True) -> dict[str, dict[str, Any]]:
    """Every method in order; with `match_budget`, a sampling method that has no cost limit of
    its own gets the first tree search's (see `matched_knobs`; `unit`: tokens or compute)."""
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        method_knobs = dict(knobs.get(method, {}))
        if method in VOTES_KNOBS and match_budget and not any(k in method_knobs for k in COST_LIMITS.values()):
            tree = next((m for m in results if m != "greedy" and m not in VOTES_KNOBS), None)
            if tree is not None:
                method_knobs = matched_knobs(method, method_knobs, knobs.get(tree, {}), results[tree], unit)
        results[method] = run_method(env, make_pv, problems, method, method_knobs, progress)
    return results


def print_table(results: dict[str, dict[str, Any]], extra: tuple[str, ...] = ()) -> None:
    """Accuracy and tokens per question of each method, then the `extra` metrics it holds."""
    print(f"\n{'method':<20}{'accuracy':>10}{'tokens/q':>10}{'compute/q':>11}{'critic/q':>10}"
          + "".join(f"{m:>10}" for m in extra))
    for method, r in results.items():
        shown = ["-" if r.get(m) is None else f"{r[m]:.3f}" for m in extra]
        print(f"{method:<20}{r['accuracy']:>10.1%}{r['tokens_per_question']:>10.1f}"
              f"{r.get('compute_per_question', 0.0):>11.1f}{r.get('value_tokens_per_question', 0.0):>10.1f}"
              + "".join(f"{v:>10}" for v in shown))


def save_results(results: dict[str, dict[str, Any]], path: str | Path, meta: dict[str, Any]) -> Path:
    plain = {m: {k: v for k, v in r.items() if k != "outputs"} for m, r in results.items()}
    return write_json({**meta, "methods": json.loads(json.dumps(plain, default=str))}, path)
