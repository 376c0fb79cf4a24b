"""What each round improves on: the whole training pool, fresh pools from a task that draws them,
replay with one row per (problem, path), the training search's own budget, and the RFT baseline
(`improve=sampling`: rollouts at the search's generated tokens per problem)."""

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.launch import LIBRARY_DEFAULTS
from tests.tasks.test_custom_task import NextNumberTask, problem
from tests.test_tracking import _run_files, offline_history
from tsllm import tasks
from tsllm.cli import main
from tsllm.config import ConfigError, load_config
from tsllm.loop import Loop, LoopConfig, distinct_paths, solved_problems
from tsllm.tasks.base import TaskSettings
from tsllm.training.targets import target_rows

TINY = ["rounds=2", "train_questions=4", "test_questions=3", "warmstart.max_seconds=4", "samples_per_question=2",
        "max_step_tokens=8", "search.knobs={num_simulations: 2, width: 2}", "value.num_train_epochs=1",
        "policy.num_train_epochs=1", "tracking.report_to=none",
        "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- pure logic

def test_replay_keeps_each_problem_and_path_once():
    rows = [{"question": "a", "steps": ["x"], "reward": 1.0, "source": "round 0"},
            {"question": "a", "steps": ["x"], "reward": 1.0, "source": "round 1"},  # the same path again
            {"question": "a", "steps": ["y"], "reward": 1.0, "source": "round 1"},
            {"question": "b", "steps": ["x"], "reward": -1.0, "source": "round 1"}]
    kept = distinct_paths(rows)
    assert [(r["question"], r["steps"], r["source"]) for r in kept] == \
        [("a", ["x"], "round 0"), ("a", ["y"], "round 1"), ("b", ["x"], "round 1")]
    assert solved_problems(rows) == 1


class CountingEnv:
    """States are (problem, steps taken); a rollout's single step says how long it was."""

    def initial_state(self, problem):
        return (problem, ())

    def step(self, state, step):
        return (state[0], state[1] + (step,))


PROMPT, CACHED = 10, 4  # each rollout's prompt tokens, and how many of them a cache served


class FixedLengthRollouts:
    """Every rollout of problem p generates lengths[p] tokens (compute: PROMPT - CACHED more); the
    n-th one of a problem ends in step n, except that problem 'same' always ends in the same step
    (duplicates are written once)."""

    def __init__(self, lengths):
        self.lengths, self.drawn, self.calls = lengths, {p: 0 for p in lengths}, []

    def length(self, question):  # a list: the n-th rollout's length, its last for the rest
        lengths = self.lengths[question]
        return lengths if isinstance(lengths, int) else lengths[min(self.drawn[question], len(lengths)) - 1]

    def rollout(self, states, n):
        self.calls.append(n)
        out = []
        for question, _ in states:
            rollouts = []
            for _ in range(n):
                self.drawn[question] += 1
                step = "s" if question == "same" else f"s{self.drawn[question]}"
                rollouts.append(SimpleNamespace(actions=[step], token_count=self.length(question),
                                                prompt_tokens=PROMPT, cached_tokens=CACHED))
            out.append(rollouts)
        return out


def sampler():
    loop = object.__new__(Loop)
    loop.env, loop.progress = CountingEnv(), False
    loop.task = SimpleNamespace(row=lambda end, source, tokens: {"question": end[0], "steps": list(end[1]),
                                                                 "source": source, "tokens": tokens})
    return loop


def test_sampling_spends_about_the_target_compute_per_problem():
    pv = FixedLengthRollouts({"short": 10, "long": 45, "same": 20, "huge": 500})
    problems = list(enumerate(["short", "long", "same", "huge"]))
    found, spent = sampler()._sample_to_budget(pv, problems, target=200, label="test")
    by_problem = {problems[i][1]: s for i, s in spent}
    for name, s in by_problem.items():
        cost = pv.lengths[name] + PROMPT - CACHED  # a rollout's compute: Budget.compute's unit
        assert s["rollouts"] == pv.drawn[name] and s["tokens"] == s["rollouts"] * pv.lengths[name]
        assert s["compute"] == s["rollouts"] * cost
        if cost < 200:  # within half a rollout of the target
            assert abs(s["compute"] - 200) <= cost / 2 + 1e-9, (name, s)
    assert by_problem["huge"] == {"tokens": 500, "compute": 506, "rollouts": 1}  # one rollout at least
    rows = {problems[i][1]: [r for j, r in found if j == i] for i in range(4)}
    assert len(rows["short"]) == by_problem["short"]["rollouts"] == 12
    assert len(rows["same"]) == 1  # one row per distinct end
    assert all(r["source"] == "sampling" for _, r in found)
    assert len(pv.calls) < 20  # batched: a pass asks for the whole shortfall, not one rollout at a time


def test_a_short_first_rollout_does_not_make_a_problem_overspend():
    """One 5-token win first, then 40-token rollouts: sizing the whole shortfall on the first
    rollout would draw 17 more (793 compute); a pass at most doubles the count drawn."""
    pv = FixedLengthRollouts({"lucky": [5, 40]})
    _, [(_, spent)] = sampler()._sample_to_budget(pv, [(0, "lucky")], target=200, label="test")
    assert abs(spent["compute"] - 200) <= 46 and spent["compute"] == 11 + 46 * (spent["rollouts"] - 1)


def test_the_rft_target_is_the_training_search_s_mean_over_the_whole_pool(tmp_path):
    """Training and evaluation budgets differ, so the training search is run to price a pool
    problem: on all of the pool (here 100 problems whose costs rise, so no prefix of the pool has
    the pool's mean), not on a subsample; unless this round's training search already ran here."""
    loop = object.__new__(Loop)
    loop.out = tmp_path
    loop.config = SimpleNamespace(search=SimpleNamespace(budget=lambda training: ({}, {"max_compute": 900 if training
                                                                                    else 400})))
    loop.pool = lambda k: list(range(100))
    searched = []

    def search(policy, value, problems, label, training=True):
        searched.extend(problems)
        return [SimpleNamespace(budget=SimpleNamespace(compute=10 * (p + 1))) for p in problems], None

    loop._search = search
    assert loop.search_compute(0, "policy", "value", {"search_compute_per_question": 123.0}) == 505.0
    assert searched == list(range(100))
    (tmp_path / "round_0" / "search").mkdir(parents=True)  # as the loop bench shares a search arm's round 0
    (tmp_path / "round_0" / "search" / "done.json").write_text('{"compute_per_question": 480.5}')
    assert loop.search_compute(0, "policy", "value", {"search_compute_per_question": 123.0}) == 480.5
    assert loop.search_compute(1, "policy", "value", {"search_compute_per_question": 123.0}) == 505.0
    assert searched == list(range(100)) * 2  # round 1 had no search to read: measured


# ----------------------------------------------------------------------------- config

def test_training_search_budget_lies_over_evaluation_s(tmp_path):
    cfg = load_config(LoopConfig, None, ["search.train_knobs={num_simulations: 12}", "search.max_tokens=900",
                                         "search.train_max_tokens=3000"])
    knobs = {"num_simulations": 6, "width": 8, "parallel_simulations": 3}
    assert cfg.search.budget(training=False) == (knobs, {"max_tokens": 900, "max_compute": None})
    assert cfg.search.budget(training=True) == ({**knobs, "num_simulations": 12},
                                                {"max_tokens": 3000, "max_compute": None})
    plain = load_config(LoopConfig, None, [])
    assert plain.search.budget(training=True) == plain.search.budget(training=False)
    assert plain.improve == "search" and plain.value_from_search is False
    # a later layer choosing another algorithm starts the training knobs afresh, as it does the knobs
    (tmp_path / "run.yaml").write_text("search:\n  train_knobs: {num_simulations: 12}\n")
    other = load_config(LoopConfig, tmp_path / "run.yaml", ["search.algorithm=bfs"])
    assert other.search.train_knobs == {}


@pytest.mark.parametrize("override, message", [
    (["search.train_knobs={bogus: 1}"], "config key 'search.train_knobs.bogus': mcts_alpha has no knob"),
    (["search.train_knobs={num_simulations: 0}"], "config key 'search.train_knobs.num_simulations': must be an int"),
    (["search.train_max_tokens=0"], "config key 'search.train_max_tokens': must be >= 1"),
    (["improve=rollouts"], "config key 'improve'"),
    (["value_from_search=maybe"], "config key 'value_from_search'"),
    (["policy.target=winners"], "config key 'policy.target'"),
    (["policy.target=visits", "improve=sampling"], "config key 'policy.target': visits learns from the training "
                                                   "search's trees, and improve=sampling keeps none"),
    (["policy.target=preferences", "improve=sampling"], "config key 'policy.target': preferences learns from"),
    (["policy.beta=0"], "config key 'policy.beta': must be a finite number > 0"),
    (["warmstart.beta=0.2"], "unknown config key 'warmstart.beta'"),  # the warm start trains no pairs
    (["value.continue_from_previous=maybe"], "config key 'value.continue_from_previous'"),
])
def test_improve_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LoopConfig, None, override)


# ----------------------------------------------------------------------------- real loops

class SuccessorTask(NextNumberTask):
    """tests/tasks/test_custom_task.py's "number after n" task with the same pool every round (the
    Task default), warm-started on other numbers' answers."""

    name = "successor"

    def warmstart_rows(self) -> list[dict]:
        return [{"question": p["question"], "steps": [f"Answer: {p['answer']}"], "reward": 1.0,
                 "task": self.name, "source": "warmstart"} for p in map(problem, range(1000, 1040))]


class FreshSuccessorTask(SuccessorTask):
    """A generator task: a new training pool every round, the held-out set fixed."""

    name = "fresh_successor"

    def pool(self, round: int) -> list[dict]:
        first = 100 * (round + 1)
        return [problem(n) for n in range(first, first + self.settings.train_questions)]


@pytest.fixture
def registered():
    for cls in (SuccessorTask, FreshSuccessorTask):
        tasks.register(cls)
    yield
    for cls in (SuccessorTask, FreshSuccessorTask):
        tasks.unregister(cls.name)


def test_the_default_pool_is_the_same_every_round():
    task = SuccessorTask(TaskSettings(train_questions=5))
    assert task.pool(0) == task.pool(3) == task.train_problems()[:5] == task.problems()[0]


def test_rft_loop_samples_fresh_pools_at_the_search_s_tokens_and_replays(tmp_path, registered):
    out = tmp_path / "run"
    assert main(["run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", "task=fresh_successor",
                 "improve=sampling", "value_from_search=true", *TINY,
                 "search.knobs={num_simulations: 2, width: 2, use_terminal_reward: true}"]) == 0
    for k in (0, 1):  # round k samples and improves on pool k
        wanted = [str(n) for n in range(100 * (k + 1), 100 * (k + 1) + 4)]
        assert sorted({r["question"] for r in read_jsonl(out / f"round_{k}" / "sample" / "trajectories.jsonl")}) \
            == wanted
        improved = read_jsonl(out / f"round_{k}" / "sampling" / "trajectories.jsonl")
        assert {r["question"] for r in improved} == set(wanted) and {r["source"] for r in improved} == {"sampling"}
        assert not (out / f"round_{k}" / "search").exists()
    for k in (0, 1, 2):  # the held-out set never moves
        evaluated = json.loads((out / f"round_{k}" / "eval" / "results.json").read_text())
        assert [q["question"] for q in evaluated["methods"]["greedy"]["per_question"]] == ["500", "501", "502"]

        # the search sees terminal rewards, so its baseline is sampling with the same checker, given the
        # search's mean compute per question (and again its mean step tokens) as its budget
        methods = evaluated["methods"]
        assert list(methods) == ["greedy", "search", "baseline", "baseline_tokens"]
        search = methods["search"]
        assert methods["baseline"]["method"] == methods["baseline_tokens"]["method"] == "best_of_n_checker"
        compute, tokens = (max(1, round(search[f"{u}_per_question"])) for u in ("compute", "tokens"))
        assert methods["baseline"]["knobs"] == {"n": 64, "max_compute": compute}
        assert methods["baseline_tokens"]["knobs"] == {"n": 64, "max_tokens": tokens}
        assert all(q["compute"] <= methods["baseline"]["knobs"]["max_compute"]
                   for q in methods["baseline"]["per_question"])

    # value_from_search: round 1's value model also reads round 0's improve trajectories
    assert json.loads((out / "round_1" / "value" / "done.json").read_text())["data_files"] == \
        ["round_0/sample/trajectories.jsonl", "round_1/sample/trajectories.jsonl",
         "round_0/sampling/trajectories.jsonl"]
    rows = read_jsonl(out / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    for k in (0, 1):
        done = json.loads((out / f"round_{k}" / "sampling" / "done.json").read_text())
        evaluated = json.loads((out / f"round_{k}" / "eval" / "done.json").read_text())
        # same budget for training and evaluation: the held-out search's compute is the target
        assert done["target_compute"] == evaluated["search_compute_per_question"]
        assert rows[k]["improve"] == "sampling" and rows[k]["train_problems"] == 4
        assert rows[k]["improve_tokens_per_question"] == done["tokens_per_question"]
        assert rows[k]["improve_compute_per_question"] == done["compute_per_question"]
        assert rows[k]["train_solved"] == done["solved"]
        policy = json.loads((out / f"round_{k}" / "policy" / "done.json").read_text())
        assert rows[k]["policy_problems"] == policy["problems"]
    # replay: round 1's policy data holds round 0's solved problems too, each path once
    replayed = [r for j in (0, 1) for r in read_jsonl(out / f"round_{j}" / "sampling" / "trajectories.jsonl")
                if r["reward"] > 0]
    distinct = {(r["question"], json.dumps(r["steps"])) for r in replayed}
    assert rows[1]["policy_rows"] == len(distinct)
    assert rows[1]["policy_problems"] == len({q for q, _ in distinct}) >= rows[0]["policy_problems"]
    if distinct:
        data = read_jsonl(out / "round_1" / "policy" / "policy_data.jsonl")
        assert len({(r["question"], json.dumps(r["steps"])) for r in data}) == len(data) == len(distinct)


def test_bench_loop_runs_its_arms_from_one_warm_start(tmp_path, capsys, registered, monkeypatch):
    out = tmp_path / "bench"
    searched_for = []  # the label of every search run, to see which stages searched
    search = Loop._search
    monkeypatch.setattr(Loop, "_search", lambda self, policy, value, problems, label, **kw:
                        searched_for.append(label) or search(self, policy, value, problems, label, **kw))
    # training's search budget differs from evaluation's, so the RFT arm measures the training search
    tiny = [*TINY[1:], "rounds=1", "task=successor", "search.train_knobs={num_simulations: 3}"]
    arms = ["--arms", "search,advantages,sampling"]
    assert main(["bench", "loop", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", *arms, *tiny]) == 0
    printed = capsys.readouterr().out
    assert "last round greedy: search loop" in printed and ", advantages loop" in printed
    result = json.loads((out / "bench_loop.json").read_text())
    assert (out / "bench_loop.png").stat().st_size > 0
    assert [(r["round"], r["mode"]) for r in result["table"]] == \
        [(0, "search"), (0, "advantages"), (0, "sampling"), (1, "search"), (1, "advantages"), (1, "sampling")]
    assert result["command"] == "tsllm bench loop " + " ".join(shlex.quote(a) for a in [*LIBRARY_DEFAULTS, *arms,
                                                                                         *tiny])
    assert result["seconds"] > 0
    shared = ["warmstart", "round_0/sample", "round_0/value", "round_0/eval"]
    # the search arm kept no trees, so only the RFT arm takes its round-0 search (for its compute)
    assert result["shared_warm_start"] == {"0": {"advantages": shared, "sampling": [*shared, "round_0/search"]}}
    # the advantages arm learnt from its search's trees: the rows the targets module gives, in the policy's folder
    trees = read_jsonl(out / "advantages" / "round_0" / "search" / "trees.jsonl")
    assert len(trees) == 4 and not (out / "search" / "round_0" / "search" / "trees.jsonl").exists()
    rows = target_rows("advantages", trees)
    policy = json.loads((out / "advantages" / "round_0" / "policy" / "done.json").read_text())
    assert policy["target"] == "advantages" and policy["rows"] == len(rows)
    assert rows and read_jsonl(out / "advantages" / "round_0" / "policy" / "policy_data.jsonl") == rows
    search, sampling = (result["runs"][m] for m in ("search", "sampling"))
    # round 0 is shared: the same numbers, and the sampling run's stages name its own models
    # (relative to the run folder, so the copy is self-contained) and no model of the search run
    assert search[0]["greedy_accuracy"] == sampling[0]["greedy_accuracy"]
    assert search[0]["search_accuracy"] == sampling[0]["search_accuracy"]
    assert json.loads((out / "sampling" / "warmstart" / "done.json").read_text())["policy"] == "warmstart/model"
    assert json.loads((out / "sampling" / "round_0" / "value" / "done.json").read_text())["value"] == \
        "round_0/value/model"
    assert not [p for p in (out / "sampling").glob("**/done.json") if str(out / "search") in p.read_text()]
    assert (out / "search" / "round_0" / "search" / "done.json").is_file()
    assert (out / "sampling" / "round_0" / "sampling" / "done.json").is_file()
    assert search[0]["improve"] == "search" and sampling[0]["improve"] == "sampling"
    searched = json.loads((out / "search" / "round_0" / "search" / "done.json").read_text())
    found = read_jsonl(out / "search" / "round_0" / "search" / "trajectories.jsonl")
    assert search[0]["train_problems"] == 4 and search[0]["train_solved"] == searched["solved"] == \
        len({r["question"] for r in found if r["reward"] > 0})
    assert search[0]["improve_tokens_per_question"] == searched["tokens_per_question"]
    assert [r["train_solved"] for r in result["table"]] == [search[0]["train_solved"],
                                                            result["runs"]["advantages"][0]["train_solved"],
                                                            sampling[0]["train_solved"], None, None, None]
    # the RFT run's target is what the training search spent per pool problem: read from the search
    # arm's round 0 (the same policy, value and knobs), the whole pool, not the held-out search's
    target = json.loads((out / "sampling" / "round_0" / "sampling" / "done.json").read_text())["target_compute"]
    assert target == search[0]["improve_compute_per_question"] != search[0]["search_compute_per_question"]
    assert searched_for.count("search round 0") == 2  # the search arm's and the advantages arm's
    assert "measure search round 0" not in searched_for
    assert sampling[0]["improve_tokens_per_question"] > 0


def test_a_tracked_loop_holds_its_rounds_and_both_trainers_curves_in_one_offline_run(tmp_path, registered,
                                                                                    wandb_env, capsys):
    out = tmp_path / "run"
    assert main(["run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", "task=successor", *TINY,
                 "rounds=1", "tracking.report_to=wandb", "warmstart.logging_steps=1", "value.logging_steps=1",
                 "policy.logging_steps=1"]) == 0
    printed = capsys.readouterr()
    assert "no W&B login found" in printed.err and f"wandb sync {out / 'wandb'}" in printed.err
    [run_file] = _run_files(out, (out / "wandb_run_id.txt").read_text().strip())  # one run per loop
    rows, axes = offline_history(run_file)
    rounds = [r for r in rows if "greedy_accuracy" in r]
    assert [r["round"] for r in rounds] == [0, 1] and axes["greedy_accuracy"] == "round"
    trained = json.loads((out / "round_0" / "policy" / "done.json").read_text()).get("rows")
    for stage in ("warmstart", "value") + (("policy",) if trained else ()):  # the policy trainer's, the value's
        curve = [r for r in rows if f"{stage}/loss" in r]
        assert curve and all(r[f"{stage}/step"] >= 1 for r in curve), stage
        assert axes[f"{stage}/loss"] == f"{stage}/step"
