"""The AlphaZero-style iteration loop (docs/ARCHITECTURE.md section 1).

Round k, with policy_k (round 0: the warm-started policy) and pool_k, the round's training
problems (`Task.pool(k)`: the same every round unless the task draws fresh ones):
  sample  N trajectories per pool_k problem with policy_k            -> trajectories.jsonl
  value   train value_k on every sampled trajectory so far (and, with
          value_from_search, on earlier rounds' improve trajectories),
          from value_k-1 with value.continue_from_previous (then on
          round k's new data only)                                   -> model/
  eval    policy_k greedy, the configured search (policy_k, value_k)
          and CoT-SC at about the search's token budget, on held-out  -> results.json
  improve `search` (improve=search): the search at its training budget
          (search.train_knobs / train_max_tokens) on all of pool_k;
          or `sampling` (improve=sampling, the RFT baseline): rollouts
          of policy_k per problem until each has spent about the
          compute the training search spends per problem              -> trajectories.jsonl
  policy  LoRA SFT of policy_k on the correct improve trajectories of
          rounds 0..k (replay), one row per distinct (problem, path)  -> model/ (policy_k+1)
          (policy.target=paths); or on a tree target's weighted step
          rows from rounds 0..k's search trees (trees.jsonl,
          tsllm/training/targets.py), or step DPO on their sibling
          pairs (policy.target=preferences)                           -> policy_data.jsonl
After the last round a final `eval` measures the last policy, so rounds.jsonl holds rounds+1 rows.
Each row also says how many pool problems the improve stage solved (`train_solved`), how many
distinct problems the policy's data holds (`policy_problems`), the improve mode and its step
tokens and compute per problem (`improve_tokens_per_question`, `improve_compute_per_question`).

Every stage writes under <output_dir>/round_<k>/<stage>/ through a temporary sibling folder that
is renamed into place with its done.json last, so a stage is either complete or absent. On
restart complete stages are skipped; an interrupted training stage keeps its temporary folder so
the trainer resumes from its own checkpoints; other interrupted stages start over. A killed run
therefore resumes where it stopped and neither loses nor duplicates trajectories.

Under `torchrun --nproc_per_node N` or `accelerate launch --multi_gpu --num_processes N` the same
loop runs in N processes: sample, search and eval give each rank problems[rank::N] (its own
generator), every rank writes its part into the stage's temporary folder, and the main process
merges the parts in problem order into the files a one-process run writes and computes the
metrics over all problems. The training stages run on every rank through the trainers
(Accelerate / TRL: DDP or DeepSpeed). Only the main process creates, fills and renames stage
folders; the others wait at barriers (tsllm/distributed.py), so a killed multi-process run resumes
like a single one. Everything task-specific (problems, env, warm-start rows, policy/value bridge,
which trajectories the policy learns from, extra metrics) is the run's `Task` (tsllm/tasks/).

The loop receives a built `LoopConfig` (tsllm/loop_config.py) and never parses files or the command line itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from tsllm import distributed as dist
from tsllm import tasks  # the rows' prompt formats, passed to the trainers
from tsllm.atomic import write_jsonl
from tsllm.config import ConfigError, as_read_now, to_dict
from tsllm.evaluate import chunks
from tsllm.loop_config import LoopConfig, trainer_settings
from tsllm.progress import show_progress
from tsllm.tasks import get_task
from tsllm.tasks.base import TaskSettings, prompt_template
from tsllm.tracking import log_series
from tsllm.training.targets import TREE_TARGETS, target_rows, tree_record

# A safety stop for a policy whose rollouts generate (almost) nothing: sampling passes per chunk.
MAX_SAMPLING_PASSES = 64

# ------------------------------------------------------------------------------- stages

def run_stage(folder: Path, work: Callable[[Path], dict], resumable: bool = False) -> dict:
    """Run `work(tmp)` unless `folder` is complete; `work` writes into `tmp`, which becomes
    `folder` once done.json is in it. Returns the stage's done.json content.

    With several processes every rank calls this and runs `work`; the main process alone
    decides whether the stage is complete, prepares `tmp`, writes done.json and renames, and
    its result (what `work` returned there) is what every rank gets back."""
    done = folder / "done.json"
    if dist.broadcast(done.is_file()):
        return json.loads(done.read_text())
    tmp = folder.with_name(folder.name + ".tmp")
    if dist.is_main():
        if tmp.exists() and not resumable:
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    start = time.perf_counter()
    result = work(tmp)
    result = {**result, "seconds": time.perf_counter() - start, "world_size": dist.world_size()}
    dist.barrier()  # every rank has finished writing into tmp
    if dist.is_main():
        (tmp / "done.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        if folder.exists():  # a leftover without done.json: never complete, safe to replace
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        # one line per stage: a log without progress bars still says what ran and for how long
        print(f"tsllm: {folder.parent.name}/{folder.name} done in {result['seconds']:.0f} s", file=sys.stderr)
    return dist.broadcast(result)  # the others wait here until the folder is in place


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------- the loop

class Loop:
    """Runs the rounds of `config`; `tracker` receives one row per round (see tsllm.tracking)."""

    def __init__(self, config: LoopConfig, tracker: Any = None, progress: bool = True):
        self.config, self.tracker = config, tracker
        self.progress = show_progress(progress) and dist.is_main()  # on a terminal, one set of bars, not one per rank
        self.out = Path(config.output_dir)
        self.device = dist.device()
        self.task = get_task(config.task)(TaskSettings.of(config), self.device)
        self.env = self.task.env
        # the trainers render prompts as the env does (prompt_format chat: the env's template is the chat one)
        self.template = prompt_template(self.task.settings)
        self.test = self.task.test_problems()
        self._pools: dict[int, list] = {}
        self._generator = None
        self._generator_policy: str | None = None

    def pool(self, k: int) -> list:
        """Round k's training problems (the task's; asked once per round)."""
        if k not in self._pools:
            self._pools[k] = self.task.pool(k)
        return self._pools[k]

    # --- models -------------------------------------------------------------------------
    def generator(self, policy: str):
        """One generator per process for the run; a new policy is loaded into it (vLLM keeps
        its engine). The HF backend runs on this process's device unless the config says. Under a
        launcher each vLLM engine runs inside its own rank's process ("external_launcher", as
        TRL's colocated vLLM does), so it uses that rank's device instead of all ranks starting
        engine processes on the first GPU (checked with 2 processes on CPU)."""
        from tsllm.generation import make_generator

        if self._generator is None:
            extra = self.config.generator.kwargs()
            if self.config.backend == "hf":
                extra.setdefault("device", self.device)
            elif dist.world_size() > 1:
                extra.setdefault("distributed_executor_backend", "external_launcher")
            self._generator = make_generator(self.config.backend, policy, **extra)
        elif self._generator_policy != policy:
            self._generator.update_weights(policy)
        self._generator_policy = policy
        return self._generator

    def policy_value(self, policy: str, value: str | None, temperature: float | None = None,
                     rules: bool = True):
        from tsllm.models.value import ValueFunction

        value_fn = ValueFunction(value, device=self.device) if value else (lambda texts: [0.0] * len(texts))
        temp = self.config.temperature if temperature is None else temperature
        return self.task.policy_value(policy, self.generator, value_fn, temp,
                                      legal_steps_only=rules and self.config.search.legal_steps_only)

    def curve(self, stage: str, k: int) -> list:
        """The trainer callback that sends stage `stage`'s training curve of round `k` to the
        tracker (the loop's W&B run: `<stage>/loss` against `<stage>/step`)."""
        from tsllm.training.callbacks import ReportLogs

        if self.tracker is None or not dist.is_main():
            return []
        return [ReportLogs(lambda values, step: log_series(self.tracker, stage, {**values, "round": k}, step))]

    def warm_start(self) -> str:
        cfg = self.config
        if cfg.base_model:
            return cfg.base_model

        def work(tmp: Path) -> dict:
            from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy

            rows = self.task.warmstart_rows()
            if dist.is_main():
                write_jsonl(rows, tmp / "trajectories.jsonl")
            dist.barrier()
            settings = {**trainer_settings(cfg.warmstart), "seed": cfg.seed}
            metrics = train_policy(PolicyTrainConfig(tiny=cfg.tiny, data_files=[str(tmp / "trajectories.jsonl")],
                                                     task=self.task.name, output_dir=str(tmp),
                                                     template=self.template, **settings),
                                   formats=tasks, callbacks=self.curve("warmstart", 0))
            return {"policy": "warmstart/model", "loss": metrics["eval_loss"],
                    "trainer_processes": metrics["world_size"]}

        # resumable: a killed warm start keeps its folder, and the trainer resumes from its checkpoints
        return self.model_path(run_stage(self.out / "warmstart", work, resumable=True)["policy"])

    # --- stages -----------------------------------------------------------------------
    def sample(self, k: int, policy: str) -> dict:
        def work(tmp: Path) -> dict:
            pv = self.policy_value(policy, None)
            mine = self._rollout_rows(pv, dist.shard(self.pool(k)), self.config.samples_per_question,
                                      f"sample round {k}")
            rows = dist.merge_parts(tmp, "trajectories", mine)
            if rows is None:  # not the main process: its part is written
                return {}
            write_jsonl(rows, tmp / "trajectories.jsonl")
            return {"trajectories": len(rows), "correct": sum(r["reward"] > 0 for r in rows)}

        return run_stage(self.out / f"round_{k}" / "sample", work)

    def _rollout_rows(self, pv, problems: list[tuple[int, dict]], n: int, label: str) -> list[tuple[int, dict]]:
        """(problem index, trajectory row) for n rollouts of each (index, problem)."""
        rows = []
        for chunk in chunks(problems, 32, label, self.progress):
            states = [self.env.initial_state(p) for _, p in chunk]
            for (index, _), state, rollouts in zip(chunk, states, pv.rollout(states, n)):
                for r in rollouts:
                    end = state
                    for step in r.actions:
                        end = self.env.step(end, step)
                    rows.append((index, self.task.row(end, "sample", r.token_count)))
        return rows

    def train_value(self, k: int, policy: str) -> dict:
        def work(tmp: Path) -> dict:
            from tsllm.training.value_trainer import ValueTrainConfig, train_value

            # continued from round k-1's model, which learnt the data before, it trains on what is new
            first = k if self.config.value.continue_from_previous and k > 0 else 0
            files = [str(self.out / f"round_{j}" / "sample" / "trajectories.jsonl") for j in range(first, k + 1)]
            if self.config.value_from_search:  # rounds before k: this round's improve stage comes later
                files += [str(self.improve_folder(j) / "trajectories.jsonl") for j in range(max(first - 1, 0), k)]
            settings = {**trainer_settings(self.config.value), "seed": self.config.seed}
            backbone = self.value_start(k, policy)
            metrics = train_value(ValueTrainConfig(data_files=files, base_model=backbone, task=self.config.task,
                                                   output_dir=str(tmp), template=self.template, **settings),
                                  formats=tasks, callbacks=self.curve("value", k))
            return {"value": f"round_{k}/value/model", "loss": metrics["train_loss"],
                    "started_from": self.stored_path(backbone),
                    "data_files": [str(Path(f).relative_to(self.out)) for f in files],
                    "eval_mse": metrics["eval_mse"], "eval_sign_acc": metrics["eval_sign_acc"],
                    "trainer_processes": metrics["world_size"], "distributed_type": metrics["distributed_type"]}

        return run_stage(self.out / f"round_{k}" / "value", work, resumable=True)

    def value_start(self, k: int, policy: str) -> str:
        """The model round k's value training starts from: round k-1's value model with
        value.continue_from_previous (a value model loads whole, head included), else
        value_backbone, else the current policy (a causal LM: its body, a fresh head)."""
        if self.config.value.continue_from_previous and k > 0:
            return str(self.out / f"round_{k - 1}" / "value" / "model")
        return self.config.value_backbone or policy

    def _search(self, policy: str, value: str, problems: list[dict], label: str, training: bool = True):
        from tsllm.search import get_algorithm
        from tsllm.types import Budget

        s = self.config.search
        algorithm = get_algorithm(s.algorithm)
        from tsllm.policy_value import apply_bridge_knobs

        knobs, limits = s.budget(training)
        pv = self.policy_value(policy, value)
        knobs = apply_bridge_knobs(pv, knobs)
        outs = []
        for chunk in chunks(problems, 32, label, self.progress):
            states = [self.env.initial_state(p) for p in chunk]
            outs += algorithm(self.env, pv, states, budget=Budget(**limits), **knobs)
        return outs, pv

    def improve_folder(self, k: int) -> Path:
        """Where round k's policy data is written: the `search` or `sampling` stage."""
        return self.out / f"round_{k}" / self.config.improve

    def search(self, k: int, policy: str, value: str) -> dict:
        def work(tmp: Path) -> dict:
            mine = dist.shard(self.pool(k))
            outs, _ = self._search(policy, value, [p for _, p in mine], f"search round {k}")
            found, spent, trees = [], [], []
            keep_trees = self.config.policy.target in TREE_TARGETS  # only a tree target reads them
            for (index, _), out in zip(mine, outs):
                spent.append((index, {"tokens": out.budget.tokens, "compute": out.budget.compute}))
                if keep_trees:
                    if out.tree is None:
                        raise ConfigError(f"config key 'policy.target': {self.config.policy.target} learns from "
                                          f"the search's trees, and {self.config.search.algorithm} keeps none")
                    trees.append((index, tree_record(self.env, out.root, out.tree, out.root.question,
                                                     self.task.name)))
                seen = set()
                for cand in out.candidates:  # every complete path the search found, once
                    end = cand.path[-1]
                    if end in seen or not self.env.is_terminal(end):
                        continue
                    seen.add(end)
                    found.append((index, self.task.row(end, "search", 0)))
            rows, budgets = dist.merge_parts(tmp, "trajectories", found), dist.merge_parts(tmp, "tokens", spent)
            records = dist.merge_parts(tmp, "trees", trees) if keep_trees else None
            if rows is None:
                return {}
            write_jsonl(rows, tmp / "trajectories.jsonl")
            if keep_trees:
                write_jsonl(records, tmp / "trees.jsonl")
            return {"trajectories": len(rows), "correct": sum(r["reward"] > 0 for r in rows),
                    "solved": solved_problems(rows), "problems": len(budgets), **per_question(budgets)}

        return run_stage(self.out / f"round_{k}" / "search", work)

    def search_compute(self, k: int, policy: str, value: str, evaluated: dict) -> float:
        """Compute per problem (policy tokens processed: `Budget.compute`) the training search
        spends in round k: the held-out search's when training and evaluation share a budget (same
        policy, value and knobs), else this round's training search's when one ran in this folder
        (the loop bench shares round 0's), else measured by running the training search on the whole pool,
        each rank its share (what it finds is dropped: the RFT data must come from sampling
        alone). Not a subsample: a search that stops at its first win spends anywhere from one
        path to its whole cap per problem, so a few dozen problems can miss the mean by a fifth."""
        s = self.config.search
        if s.budget(training=True) == s.budget(training=False):
            return evaluated["search_compute_per_question"]
        shared = self.out / f"round_{k}" / "search" / "done.json"
        if shared.is_file():  # `tsllm bench loop` gave this arm a search arm's round 0, run with these models
            return json.loads(shared.read_text())["compute_per_question"]
        outs, _ = self._search(policy, value, [p for _, p in dist.shard(self.pool(k))], f"measure search round {k}")
        spent, searched = dist.sum_over_ranks([sum(out.budget.compute for out in outs), len(outs)])
        return spent / searched

    def sampling(self, k: int, policy: str, compute_per_question: float) -> dict:
        """The RFT baseline's improve stage: rollouts of `policy` (under the task's rules, as the
        search) on every pool problem until the problem has spent about `compute_per_question`,
        the training search's cost in the same unit."""
        def work(tmp: Path) -> dict:
            pv = self.policy_value(policy, None)
            mine = dist.shard(self.pool(k))
            found, spent = self._sample_to_budget(pv, mine, compute_per_question, f"sampling round {k}")
            rows, budgets = dist.merge_parts(tmp, "trajectories", found), dist.merge_parts(tmp, "tokens", spent)
            if rows is None:
                return {}
            write_jsonl(rows, tmp / "trajectories.jsonl")
            return {"trajectories": len(rows), "correct": sum(r["reward"] > 0 for r in rows),
                    "solved": solved_problems(rows), "problems": len(budgets), "target_compute": compute_per_question,
                    "rollouts_per_question": sum(b["rollouts"] for b in budgets) / len(budgets),
                    **per_question(budgets)}

        return run_stage(self.out / f"round_{k}" / "sampling", work)

    def _sample_to_budget(self, pv, problems: list[tuple[int, Any]], target: float, label: str):
        """(index, row) of each distinct rollout end, and (index, {tokens, compute, rollouts}) per
        problem. A problem draws more rollouts while one more, of its mean compute so far, would
        bring its compute closer to `target` (so it stops within half a rollout of it, and draws one at least);
        each pass asks for the whole rollouts the shortfall holds but at most doubles the problem's
        count, batched over the chunk's problems."""
        found, spent = [], []
        for chunk in chunks(problems, 32, label, self.progress):
            states = [self.env.initial_state(p) for _, p in chunk]
            used, tokens, drawn = [0] * len(chunk), [0] * len(chunk), [0] * len(chunk)
            seen: list[set] = [set() for _ in chunk]
            rows: list[list[dict]] = [[] for _ in chunk]
            for _ in range(MAX_SAMPLING_PASSES):
                want = {}
                for i in range(len(chunk)):
                    if not drawn[i]:
                        want[i] = 1
                        continue
                    mean = max(1.0, used[i] / drawn[i])  # this problem's rollouts: lengths differ by problem
                    if used[i] + mean / 2 < target:
                        # floor, and at most as many as drawn so far: a mean of few rollouts may be
                        # far off (one 1-move win), so the estimate firms up before most are drawn
                        want[i] = max(1, min(drawn[i], int((target - used[i]) / mean)))
                if not want:
                    break
                for n in sorted(set(want.values())):
                    batch = [i for i, m in want.items() if m == n]
                    for i, rollouts in zip(batch, pv.rollout([states[i] for i in batch], n)):
                        for r in rollouts:
                            used[i] += r.token_count + r.prompt_tokens - r.cached_tokens  # Budget.compute's unit
                            tokens[i] += r.token_count
                            drawn[i] += 1
                            end = states[i]
                            for step in r.actions:
                                end = self.env.step(end, step)
                            if end not in seen[i]:
                                seen[i].add(end)
                                rows[i].append(self.task.row(end, "sampling", r.token_count))
            for i, (index, _) in enumerate(chunk):
                found += [(index, row) for row in rows[i]]
                spent.append((index, {"tokens": tokens[i], "compute": used[i], "rollouts": drawn[i]}))
        return found, spent

    def trees_file(self, k: int) -> Path:
        """Round k's search trees (tsllm/training/targets.py), refused by name when that round's
        search ran with a target that keeps none (a run resumed with another policy.target)."""
        path = self.out / f"round_{k}" / "search" / "trees.jsonl"
        if not path.is_file():
            raise ConfigError(f"config key 'policy.target': {self.config.policy.target} reads {path}, which round "
                              f"{k}'s search did not write (it ran with policy.target=paths); start a new run")
        return path

    def train_policy(self, k: int, policy: str) -> dict:
        def work(tmp: Path) -> dict:
            from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy

            target = self.config.policy.target
            if target == "paths":  # replay: every round's improve data so far, each (problem, path) once
                files = [self.improve_folder(j) / "trajectories.jsonl" for j in range(k + 1)]
                chosen = self.task.policy_rows(distinct_paths([r for f in files for r in read_jsonl(f)]))
            else:  # the same replay for a tree target: every round's trees so far
                chosen = target_rows(target, [r for j in range(k + 1) for r in read_jsonl(self.trees_file(j))])
            data = {"target": target, "rows": len(chosen), "problems": len({r["question"] for r in chosen})}
            if not chosen:  # the improve stage found nothing to learn from: keep the policy
                skipped = f"no {self.config.improve} {target} rows to learn from"
                if dist.is_main():
                    print(f"tsllm: round_{k}/policy: {skipped}; the policy carries over", file=sys.stderr)
                return {"policy": self.stored_path(policy), "loss": None, **data, "skipped": skipped}
            if dist.is_main():
                write_jsonl(chosen, tmp / "policy_data.jsonl")
            dist.barrier()
            files = [str(tmp / "policy_data.jsonl")]
            settings = {**trainer_settings(self.config.policy), "seed": self.config.seed,
                        "min_reward": None}  # the task chose the rows
            metrics = train_policy(PolicyTrainConfig(base_model=policy, data_files=files, task=self.task.name,
                                                     output_dir=str(tmp), template=self.template, **settings),
                                   formats=tasks, callbacks=self.curve("policy", k))
            return {"policy": f"round_{k}/policy/model",
                    "loss": metrics["eval_loss"] if metrics["eval_loss"] is not None else metrics["train_loss"],
                    "trainer_processes": metrics["world_size"], **data}

        return run_stage(self.out / f"round_{k}" / "policy", work, resumable=True)  # as the warm start

    def evaluate(self, k: int, policy: str, value: str) -> dict:
        """Greedy, the configured search, and its fair baseline at its cost: sampling with the
        checker when the search sees terminal rewards, else the task's (CoT-SC; best-of-N by the
        ORM for rlhf), matched in compute; a checker baseline also runs matched in step tokens.
        The baseline's budget is the search's mean over ALL held-out questions, so a sharded run
        sizes it as a one-process run does."""
        def work(tmp: Path) -> dict:
            from tsllm.evaluate import fair_baseline, matched_knobs, run_method, save_results, summarize

            s, task = self.config.search, self.task
            search_knobs, limits = s.budget(training=False)
            search_knobs = {**limits, **search_knobs}
            baseline = fair_baseline(s.algorithm, search_knobs, task.baseline)
            runs = {"greedy": ("greedy", {}), "search": (s.algorithm, search_knobs),
                    "baseline": (baseline, dict(task.baseline_knobs) if baseline == task.baseline else {})}
            if baseline == "best_of_n_checker":
                runs["baseline_tokens"] = (baseline, {})
            mine = dist.shard(self.test)
            results: dict[str, dict] = {}
            for name, (method, knobs) in runs.items():
                if name.startswith("baseline"):
                    unit = "tokens" if name == "baseline_tokens" else "compute"
                    knobs = dist.broadcast(matched_knobs(method, knobs, search_knobs, results["search"], unit)
                                           if dist.is_main() else None)
                    runs[name] = (method, knobs)
                mine_results = run_method(self.env, lambda temp, guided, rules: self.policy_value(
                    policy, value if guided else None, temperature=temp, rules=rules), [p for _, p in mine],
                    method, knobs, progress=self.progress)["per_question"]
                merged = dist.merge_parts(tmp, f"eval_{name}", list(zip((i for i, _ in mine), mine_results)))
                if merged is not None:
                    results[name] = summarize(method, knobs, merged)
            if not dist.is_main():
                return {}
            save_results(results, tmp / "results.json", {"round": k, "policy": policy, "value": value})
            metrics = {"baseline_method": baseline,
                       "search_nodes_per_question": sum(q["nodes"] for q in results["search"]["per_question"])
                       / len(self.test)}
            for name, result in results.items():
                metrics.update({f"{name}_accuracy": result["accuracy"],
                                f"{name}_compute_per_question": result["compute_per_question"]})
                metrics.update({f"{name}_{key}": v for key, v in task.method_metrics(result).items()})
                if name != "search":
                    metrics[f"{name}_tokens_per_question"] = result["tokens_per_question"]
            metrics["tokens_per_question"] = results["search"]["tokens_per_question"]
            return metrics

        return run_stage(self.out / f"round_{k}" / "eval", work)

    # --- model paths in stage results ---------------------------------------------------
    # Stages record the models they write relative to the run folder, so a run folder moved or
    # copied elsewhere resumes from its own models; a model outside it (base_model) is absolute.
    def model_path(self, stored: str) -> str:
        return stored if Path(stored).is_absolute() else str(self.out / stored)

    def stored_path(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.out))
        except ValueError:
            return str(Path(path).resolve())

    # --- the run ------------------------------------------------------------------------
    def run(self) -> list[dict]:
        cfg, rows = self.config, []
        start = time.perf_counter()
        policy, value = self.warm_start(), ""
        for k in range(cfg.rounds + 1):
            round_start = time.perf_counter()
            if k == cfg.rounds:  # the final evaluation of the last policy, with the last value model
                stages = {"eval": self.evaluate(k, policy, value)}
            else:
                stages = {"sample": self.sample(k, policy)}
                stages["value"] = self.train_value(k, policy)
                value = self.model_path(stages["value"]["value"])
                stages["eval"] = self.evaluate(k, policy, value)
                if cfg.improve == "search":
                    stages["search"] = self.search(k, policy, value)
                else:
                    # a complete stage (on resume) needs no target; every rank takes the main's view
                    pending = dist.broadcast(not (self.out / f"round_{k}" / "sampling" / "done.json").is_file())
                    target = self.search_compute(k, policy, value, stages["eval"]) if pending else None
                    stages["sampling"] = self.sampling(k, policy, target)
                stages["policy"] = self.train_policy(k, policy)
            row = {"round": k, **{key: v for key, v in stages["eval"].items() if key != "seconds"},
                   "value_loss": stages.get("value", {}).get("loss"),
                   "policy_loss": stages.get("policy", {}).get("loss"),
                   "wall_seconds": sum(s.get("seconds", 0.0) for s in stages.values()),
                   "elapsed_this_run": time.perf_counter() - round_start,
                   **{f"{name}_seconds": s.get("seconds") for name, s in stages.items()}}
            if cfg.improve in stages:  # .get: stages completed by an older version lack the newer counts
                improved, trained = stages[cfg.improve], stages["policy"]
                row.update({"improve": cfg.improve, "train_problems": improved.get("problems"),
                            "train_solved": improved.get("solved"),
                            "improve_tokens_per_question": improved["tokens_per_question"],
                            "improve_compute_per_question": improved.get("compute_per_question"),
                            "policy_problems": trained.get("problems"), "policy_rows": trained.get("rows"),
                            f"{cfg.improve}_train_correct": improved["correct"],
                            f"{cfg.improve}_train_trajectories": improved["trajectories"],
                            "sample_correct": stages["sample"]["correct"]})
            rows.append(row)
            if self.tracker is not None:
                self.tracker.log(row, step=k)
            if k < cfg.rounds:
                policy = self.model_path(stages["policy"]["policy"])
        self.total_seconds = time.perf_counter() - start
        return rows


def per_question(budgets: list[dict]) -> dict[str, float]:
    """Mean step tokens and compute per problem of an improve stage's per-problem spends."""
    return {f"{unit}_per_question": sum(b[unit] for b in budgets) / len(budgets) for unit in ("tokens", "compute")}


def distinct_paths(rows: list[dict]) -> list[dict]:
    """`rows` with each (question, steps) once, the first kept (rounds are read in order)."""
    seen, out = set(), []
    for row in rows:
        key = (row["question"], json.dumps(row["steps"]))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def solved_problems(rows: list[dict]) -> int:
    """Distinct problems with at least one correct trajectory among `rows`."""
    return len({r["question"] for r in rows if r["reward"] > 0})


def check_output_dir(config: LoopConfig, mode: Literal["refuse", "resume", "overwrite"] = "refuse") -> None:
    """Refuse an output dir that holds a different config's run unless told to resume or
    overwrite; record this run's config in it."""
    out = Path(config.output_dir)
    saved = out / "config.json"
    current = to_dict(config)
    stages = [p for p in (out.glob("round_*") if out.is_dir() else []) if p.name.split("_")[-1].isdigit()]
    stages += [out / "warmstart"] if (out / "warmstart").exists() else []
    if not saved.is_file() and stages and mode != "overwrite":
        raise ConfigError(f"output dir {out} holds stage folders ({', '.join(sorted(p.name for p in stages))}) "
                          "but no config.json, so which run wrote them is unknown; pass --overwrite to start "
                          "over there, or choose another --output-dir")
    if saved.is_file():
        previous = as_read_now(type(config), json.loads(saved.read_text()))
        # the run folder is the run's identity: the same run named by another path (relative or
        # absolute, or after a move) is the same run
        same = {k: v for k, v in previous.items() if k != "output_dir"} == \
            {k: v for k, v in current.items() if k != "output_dir"}
        if mode == "overwrite":
            shutil.rmtree(out)
        elif not same and mode != "resume":
            changed = sorted(k for k in set(previous) | set(current)
                             if k != "output_dir" and previous.get(k) != current.get(k))
            raise ConfigError(f"output dir {out} holds a run with a different config (keys {changed}); "
                              "pass --resume to continue it with this config, --overwrite to start over, "
                              "or choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    blocked = [p.name for p in [out / "warmstart", *(out / f"round_{k}" for k in range(config.rounds + 1))]
               if p.exists() and not p.is_dir()]
    if blocked:  # found now, not after the warm start has run
        raise ConfigError(f"output dir {out} holds files where the run's stage folders go ({blocked}); "
                          "remove them or choose another --output-dir")
    saved.write_text(json.dumps(current, indent=1) + "\n")
