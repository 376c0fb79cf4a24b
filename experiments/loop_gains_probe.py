"""Does the policy get better by learning what its own search found? One probe run of the loop
with an oracle-free warm start (experiments/oracle_free.py), a training pool searched whole each
round (fresh problems each round for PrOntoQA), replay of earlier rounds' solved paths, and the
improve step either the value-guided search or, for the RFT baseline, plain sampling from the
current policy at the search's generated tokens per problem.

    OMP_NUM_THREADS=2 python experiments/loop_gains_probe.py --task prontoqa --out out/lg/p1
    python experiments/loop_gains_probe.py --task prontoqa --out out/lg/p1-rft --improve sampling \\
        --warm-from out/lg/p1/warmstart/model --match-tokens out/lg/p1/results.json
    python experiments/loop_gains_probe.py --task game24 --out out/lg/g1 --pool 0 --rounds 1

Round k, with policy_k (round 0: the warm start):
  value    rollouts of policy_k on the round's pool -> value_k (backbone policy_k; earlier rounds' replayed)
  eval     policy_k greedy (no mask) and the search (value_k, legal-move mask) on the held-out problems
  improve  search | sampling on the pool -> correct paths; policy data = all rounds', deduplicated
  policy   SFT of policy_k on the policy data -> policy_k+1
and a last eval of the final policy. Every number goes to <out>/results.json after each stage, with
process CPU seconds beside wall seconds (wall time on a shared machine is inflated).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import oracle_free  # this folder's; the probe runs as `python experiments/loop_gains_probe.py`

from tsllm import tasks
from tsllm.atomic import write_jsonl
from tsllm.envs import game24, prontoqa
from tsllm.models.tiny import TinyModelConfig


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Clock:
    """Wall and CPU seconds of one stage, recorded into `into[name]`."""

    def __init__(self, into: dict, name: str):
        self.into, self.name = into, name

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def __exit__(self, *exc):
        self.into[f"{self.name}_wall_s"] = round(time.perf_counter() - self.wall, 1)
        self.into[f"{self.name}_cpu_s"] = round(cpu_seconds() - self.cpu, 1)


# ------------------------------------------------------------------------------- problems


class Problems:
    """Held-out set, per-round training pools and the warm-start rows of one task, disjoint."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        if args.task == "prontoqa":
            depth = {"min_depth": args.min_depth, "max_depth": args.max_depth, "distractors": args.distractors}
            self.test = prontoqa.generate(args.test, seed=args.seed + 10_000, **depth)
            # fresh problems every round, from seeds no other set uses
            self.pools = [prontoqa.generate(args.pool, seed=args.seed + 1 + 100 * k, **depth)
                          for k in range(args.rounds)]
        else:
            train, self.test = game24.split(seed=args.seed, test_size=args.test)
            self.gold, pool = train[:args.gold_puzzles], train[args.gold_puzzles:]
            self.pools = [pool[:args.pool] if args.pool else pool] * args.rounds  # the whole pool every round

    def warm_rows(self) -> list[dict]:
        a = self.args
        if a.task == "prontoqa":
            taken = {p["question"] + " " + p["query"] for p in self.test + [p for pool in self.pools for p in pool]}
            problems = prontoqa.generate(a.warm_problems, seed=a.seed + 20_000, min_depth=a.min_depth,
                                         max_depth=a.max_depth, distractors=a.distractors)
            return oracle_free.prontoqa_random_chaining(problems, a.warm_plays, a.stop_probability,
                                                        exclude=taken, seed=a.seed)
        rows = oracle_free.game24_random_play(a.warm_plays, exclude=[p["numbers"] for p in self.test], seed=a.seed)
        env = game24.Game24Env(strict=True)
        for p in self.gold:  # gold solutions of a small set kept out of the pool
            steps = p["solution"].split("\n")
            rows.append({"question": env.question_text(p), "gold": p["numbers"], "steps": steps, "reward": 1.0,
                         "task": "game24", "source": "gold"})
        return rows


def make_env(task: str):
    return oracle_free.ProntoQARulesEnv(strict=True) if task == "prontoqa" else game24.Game24Env(strict=True)


# ------------------------------------------------------------------------------- the probe


class Probe:
    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.env = make_env(args.task)
        self.problems = Problems(args)
        self.tiny = TinyModelConfig(num_layers=args.layers, hidden_size=args.hidden,
                                    intermediate_size=2 * args.hidden, max_position_embeddings=args.context)
        self.results: dict[str, Any] = {"args": vars(args), "rounds": []}
        self.match = json.loads(Path(args.match_tokens).read_text())["rounds"] if args.match_tokens else None

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")

    # --- models ---------------------------------------------------------------------
    def train(self, base: str | None, files: list[str], output: Path, **settings) -> dict:
        from tsllm.training.policy_trainer import PolicyTrainConfig, train_policy

        model = {"base_model": base} if base else {"tiny": self.tiny}
        metrics = train_policy(PolicyTrainConfig(data_files=files, task=self.args.task, output_dir=str(output),
                                                 max_length=self.args.context, seed=self.args.seed,
                                                 **model, **settings), formats=tasks)
        return {"eval_loss_before": metrics["eval_loss_before"], "eval_loss_after": metrics["eval_loss"],
                "steps": metrics["global_step"], "examples": metrics["train_examples"]}

    def warm_start(self) -> str:
        """Random legal play, trained in segments until the held-out loss falls by less than
        `--warm-tolerance` (relative) over a segment: the warm start is done learning what it can."""
        a, record = self.args, self.results.setdefault("warmstart", {})
        if a.warm_from:
            record["from"] = a.warm_from
            return a.warm_from
        with Clock(record, "total"):
            rows = self.problems.warm_rows()
            data = write_jsonl(rows, self.out / "warmstart" / "trajectories.jsonl")
            record.update(rows=len(rows), correct_by_chance=sum(r["reward"] > 0 for r in rows),
                          problems=len({r["question"] for r in rows}), segments=[])
            base, loss = None, None
            for segment in range(a.warm_segments):
                folder = self.out / "warmstart" / f"segment_{segment}"
                metrics = self.train(base, [str(data)], folder, use_lora=False, min_reward=None,
                                     learning_rate=a.warm_lr if segment == 0 else a.warm_lr / 2,
                                     lr_scheduler_type="cosine", warmup_ratio=0.05, per_device_train_batch_size=8,
                                     num_train_epochs=a.warm_epochs if segment == 0 else a.warm_epochs / 2,
                                     eval_fraction=0.05)
                record["segments"].append(metrics)
                self.save()
                base, previous, loss = str(folder / "model"), loss, metrics["eval_loss_after"]
                if previous is not None and previous - loss < a.warm_tolerance * previous:
                    break
            record["policy"] = base
        self.save()
        return base

    def policy_value(self, policy: str, value: str | None, temperature: float, guided: bool):
        from tsllm.policy_value import LLMPolicyValue

        if getattr(self, "_policy", None) != policy:
            from tsllm.generation.hf import HFGenerator

            self._generator, self._policy = HFGenerator(policy, max_batch_size=256), policy
        if guided and value and getattr(self, "_value_path", None) != value:
            from tsllm.models.value import ValueFunction

            self._value, self._value_path = ValueFunction(value), value
        value_fn = self._value if guided and value else (lambda texts: [0.0] * len(texts))
        steps = self.args.step_tokens
        return LLMPolicyValue(self.env, self._generator, value_fn, temperature=temperature, max_step_tokens=steps,
                              rollout_tokens=self.args.rollout_tokens, seed=self.args.seed,
                              legal_steps_only=guided)

    # --- stages ---------------------------------------------------------------------
    def rollouts(self, policy: str, problems: list[dict], n: int) -> list[dict]:
        pv = self.policy_value(policy, None, 1.0, guided=False)
        rows = []
        for i in range(0, len(problems), 64):
            states = [self.env.initial_state(p) for p in problems[i:i + 64]]
            for state, outs in zip(states, pv.rollout(states, n)):
                for r in outs:
                    end = state
                    for step in r.actions:
                        end = self.env.step(end, step)
                    rows.append(self.row(end, "sample", r.token_count))
        return rows

    def row(self, end, source: str, tokens: int) -> dict:
        reward = self.env.reward(end) if self.env.is_terminal(end) else -1.0  # no answer: wrong
        gold = list(end.gold) if isinstance(end.gold, tuple) else end.gold
        return {"question": end.question, "gold": gold, "steps": list(end.steps), "reward": reward,
                "task": self.args.task, "source": source, "tokens": tokens}

    def search(self, policy: str, value: str, problems: list[dict]) -> list:
        from tsllm.search import get_algorithm

        algorithm, pv = get_algorithm(self.args.algorithm), self.policy_value(policy, value, 1.0, guided=True)
        outs = []
        for i in range(0, len(problems), 64):
            outs += algorithm(self.env, pv, [self.env.initial_state(p) for p in problems[i:i + 64]],
                              **self.knobs())
        return outs

    def knobs(self) -> dict:
        return json.loads(self.args.knobs)

    def train_value(self, k: int, policy: str, files: list[str]) -> str:
        from tsllm.training.value_trainer import ValueTrainConfig, train_value

        folder = self.out / f"round_{k}" / "value"
        train_value(ValueTrainConfig(data_files=files, base_model=policy, task=self.args.task, output_dir=str(folder),
                                     num_train_epochs=2, learning_rate=5e-4, per_device_train_batch_size=32,
                                     max_length=self.args.context,
                                     seed=self.args.seed, resume=False), formats=tasks)
        return str(folder / "model")

    def evaluate(self, policy: str, value: str, record: dict) -> None:
        from tsllm.evaluate import run_method

        def make_pv(temperature, guided):
            return self.policy_value(policy, value, 1.0 if temperature is None else temperature, guided)

        test = self.problems.test
        with Clock(record, "eval_greedy"):
            greedy = run_method(self.env, make_pv, test, "greedy", {}, progress=False)
        with Clock(record, "eval_search"):
            search = run_method(self.env, make_pv, test, self.args.algorithm, self.knobs(), progress=False)
        record.update(greedy=round(100 * greedy["accuracy"], 2), search=round(100 * search["accuracy"], 2),
                      greedy_tokens=round(greedy["tokens_per_question"]),
                      search_tokens=round(search["tokens_per_question"]))
        if self.args.task == "prontoqa":  # where the gains are: accuracy by depth
            by_depth: dict[int, list[bool]] = {}
            for p, q in zip(test, greedy["per_question"]):
                by_depth.setdefault(p["depth"], []).append(q["correct"])
            record["greedy_by_depth"] = {d: round(100 * sum(v) / len(v), 1) for d, v in sorted(by_depth.items())}

    def improve(self, k: int, policy: str, value: str, pool: list[dict], rollout_rows: list[dict],
                record: dict) -> list[dict]:
        """Correct paths found on the pool this round (the search's, or plain samples' for RFT)."""
        if self.args.improve == "search":
            outs = self.search(policy, value, pool)
            rows = []
            for out in outs:
                ends = {c.path[-1] for c in out.candidates if self.env.is_terminal(c.path[-1])}
                rows += [self.row(end, "search", 0) for end in sorted(ends, key=lambda s: s.steps)]
            record["improve_tokens_per_problem"] = round(sum(o.budget.tokens for o in outs) / len(outs))
            record["improve_paths"] = len(rows)
        else:  # RFT: as many samples per problem as the search's generated tokens per problem buy
            target = self.match[k]["improve_tokens_per_problem"] if self.match else self.args.sample_tokens
            per_rollout = sum(r["tokens"] for r in rollout_rows) / max(len(rollout_rows), 1)
            n = max(1, round(target / max(per_rollout, 1.0)))
            rows = self.rollouts(policy, pool, n)
            record.update(improve_samples_per_problem=n,
                          improve_tokens_per_problem=round(sum(r["tokens"] for r in rows) / len(pool)),
                          improve_paths=len(rows))
        correct = [r for r in rows if r["reward"] > 0]
        record["pool_solved"] = len({r["question"] for r in correct})
        write_jsonl(rows, self.out / f"round_{k}" / "improve.jsonl")
        return correct

    def reuse_round0(self, record: dict, value_files: list[str]) -> tuple[str, list[dict]]:
        """Round 0's samples, value model and held-out numbers from an earlier probe with the same
        warm start (what this run would compute again, seed for seed), so an RFT run only pays
        for what differs: its improve step and after."""
        earlier = Path(self.args.reuse_round0)
        results = json.loads((earlier / "results.json").read_text())
        if results["warmstart"].get("policy", results["warmstart"].get("from")) != self.args.warm_from:
            raise SystemExit(f"--reuse-round0 {earlier} started from another warm start than --warm-from")
        keep = ("value_wall_s", "value_cpu_s", "sample_correct", "greedy", "search", "greedy_tokens", "search_tokens",
                "greedy_by_depth", "eval_greedy_wall_s", "eval_greedy_cpu_s", "eval_search_wall_s", "eval_search_cpu_s")
        record.update({key: results["rounds"][0][key] for key in keep}, reused_from=str(earlier))
        samples = earlier / "round_0" / "samples.jsonl"
        value_files.append(str(samples))
        rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
        return str(earlier / "round_0" / "value" / "model"), rows

    # --- the run --------------------------------------------------------------------
    def run(self) -> None:
        a = self.args
        start_wall, start_cpu = time.perf_counter(), cpu_seconds()
        policy = self.warm_start()
        value, value_files, solved = "", [], {}
        for k in range(a.rounds + 1):
            record: dict[str, Any] = {"round": k}
            self.results["rounds"].append(record)
            if k == a.rounds:  # the final policy, judged with the last value model
                self.evaluate(policy, value, record)
                break
            pool = self.problems.pools[k]
            if k == 0 and a.reuse_round0:
                value, rollout_rows = self.reuse_round0(record, value_files)
            else:
                with Clock(record, "value"):
                    rollout_rows = self.rollouts(policy, pool, a.value_samples)
                    value_files.append(str(write_jsonl(rollout_rows, self.out / f"round_{k}" / "samples.jsonl")))
                    value = self.train_value(k, policy, value_files)
                record["sample_correct"] = sum(r["reward"] > 0 for r in rollout_rows)
                self.evaluate(policy, value, record)
            self.save()
            with Clock(record, "improve"):
                correct = self.improve(k, policy, value, pool, rollout_rows, record)
            if a.search_value_data and a.improve == "search":
                value_files.append(str(self.out / f"round_{k}" / "improve.jsonl"))
            for r in correct:  # replay: every round's solved paths, once per problem and path
                solved.setdefault((r["question"], tuple(r["steps"])), r)
            record["policy_rows"], record["policy_problems"] = len(solved), len({q for q, _ in solved})
            self.save()
            if solved:
                data = write_jsonl(list(solved.values()), self.out / f"round_{k}" / "policy_data.jsonl")
                with Clock(record, "policy"):
                    record["policy_train"] = self.train(policy, [str(data)], self.out / f"round_{k}" / "policy",
                                                        use_lora=False, learning_rate=a.policy_lr,
                                                        num_train_epochs=a.policy_epochs, per_device_train_batch_size=8,
                                                        lr_scheduler_type="cosine", eval_fraction=0.05)
                policy = str(self.out / f"round_{k}" / "policy" / "model")
            self.save()
            print(json.dumps(record), flush=True)
        self.results["total_wall_s"] = round(time.perf_counter() - start_wall, 1)
        self.results["total_cpu_s"] = round(cpu_seconds() - start_cpu, 1)
        self.save()
        print(json.dumps({k: v for k, v in self.results.items() if k != "args"}, indent=1), flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["prontoqa", "game24"], default="prontoqa")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pool", type=int, default=256, help="training problems per round (game24: 0 = the whole pool)")
    p.add_argument("--test", type=int, default=256, help="held-out problems")
    p.add_argument("--min-depth", type=int, default=1)
    p.add_argument("--max-depth", type=int, default=5)
    p.add_argument("--distractors", type=int, default=3, help="prontoqa: rules that do not change the answer")
    p.add_argument("--improve", choices=["search", "sampling"], default="search")
    p.add_argument("--algorithm", default="bfs")
    p.add_argument("--knobs", default='{"beam_width": 2, "width": 4, "max_depth": 16}', help="search knobs (JSON)")
    p.add_argument("--match-tokens", help="a search probe's results.json: sample its improve tokens per problem")
    p.add_argument("--sample-tokens", type=int, default=2000, help="tokens per problem, no --match-tokens")
    p.add_argument("--value-samples", type=int, default=2, help="rollouts per pool problem for the value model")
    p.add_argument("--search-value-data", action="store_true", help="also train the value on search paths")
    p.add_argument("--warm-from", help="reuse this warm-start policy folder")
    p.add_argument("--reuse-round0", help="an earlier probe (same --warm-from): reuse its round-0 value and eval")
    p.add_argument("--warm-problems", type=int, default=2000, help="prontoqa: problems played at random")
    p.add_argument("--warm-plays", type=int, default=1, help="random plays per problem (game24: per multiset)")
    p.add_argument("--stop-probability", type=float, default=0.2)
    p.add_argument("--gold-puzzles", type=int, default=0, help="game24: gold traces of N, not in the pool")
    p.add_argument("--warm-epochs", type=float, default=4.0)
    p.add_argument("--warm-lr", type=float, default=2e-3)
    p.add_argument("--warm-segments", type=int, default=3)
    p.add_argument("--warm-tolerance", type=float, default=0.01)
    p.add_argument("--policy-lr", type=float, default=5e-4)
    p.add_argument("--policy-epochs", type=float, default=3.0)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--context", type=int, default=1152, help="model positions = SFT max_length")
    p.add_argument("--step-tokens", type=int, default=40, help="tokens per step (a line)")
    p.add_argument("--rollout-tokens", type=int, default=448, help="tokens per sampled path (16 lines of prontoqa)")
    return p.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("TSLLM_PROGRESS", "0")
    Probe(parse_args()).run()
