"""`tsllm eval --sweep ... --seeds N`: budget points of several methods over seeds on a real (tiny,
random) policy and value model, written as JSON, a table and the accuracy-vs-tokens PNG; seed 0
is plain `tsllm eval`; bad sweep specs stop in one line before any model loads."""

import json
import statistics

import pytest

from tests.test_evaluate import models  # noqa: F401  (the tiny policy/value checkpoint fixture)
from tsllm.cli import main

SWEEPS = ["mcts_alpha.num_simulations=1,2,3,4", "cot_sc.k=1,2,3,4", "best_of_n.n=1,2,3,4"]


def test_sweep_writes_every_point_and_seed_with_their_spread(models, tmp_path, capsys):  # noqa: F811
    policy, value = models
    out = tmp_path / "sweep.json"
    argv = ["eval", "--policy", str(policy), "--value", str(value), "--test-questions", "2", "--methods", "greedy",
            "--set", "mcts_alpha.width=2", "--max-step-tokens", "8", "--seeds", "2", "--out", str(out)]
    for spec in SWEEPS:
        argv += ["--sweep", spec]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["questions"] == 2 and result["seeds"] == 2
    points = result["points"]
    swept = [(p["method"], p["value"]) for p in points if p["knob"] is not None]
    assert [p["method"] for p in points][0] == "greedy"  # --methods first, then the swept methods
    assert swept == [(s.split(".")[0], v) for s in SWEEPS for v in (1, 2, 3, 4)]
    for p in points:
        seeds = [r["seed"] for r in p["runs"]]
        assert seeds == ([0] if p["method"] == "greedy" else [0, 1])  # greedy is deterministic: one run
        if p["knob"] is not None:
            assert p["knobs"][p["knob"]] == p["value"]
        for r in p["runs"]:
            assert len(r["correct"]) == len(r["tokens"]) == 2
            assert r["accuracy"] == sum(r["correct"]) / 2 and r["tokens_per_question"] == sum(r["tokens"]) / 2
        for key in ("accuracy", "tokens_per_question"):
            values = [r[key] for r in p["runs"]]
            assert p[key] == pytest.approx({"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                                            "std": statistics.stdev(values) if len(values) > 1 else 0.0})
    # votes cost tokens: more sampled paths, more tokens per question
    cot = [p["tokens_per_question"]["mean"] for p in points if p["method"] == "cot_sc"]
    assert cot == sorted(cot) and cot[0] < cot[-1]
    # the seeds draw different samples
    assert any(p["runs"][0]["tokens"] != p["runs"][1]["tokens"] for p in points if p["method"] != "greedy")
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    table = capsys.readouterr().out
    for spec in SWEEPS:
        method, knob = spec.split("=")[0].split(".")
        assert all(f"{method} {knob}={v}" in table for v in (1, 2, 3, 4))


def test_seed_zero_of_a_sweep_is_plain_eval_and_other_seeds_differ(tmp_path):
    plain, swept = tmp_path / "eval.json", tmp_path / "sweep.json"
    base = ["eval", "--task", "toy", "--test-questions", "6", "--methods", "cot_sc,mcts_alpha",
            "--set", "mcts_alpha.add_noise=true", "--set", "mcts_alpha.temperature=1.0", "--set", "cot_sc.k=3"]
    assert main([*base, "--out", str(plain)]) == 0
    assert main([*base, "--seeds", "3", "--out", str(swept)]) == 0
    plain_methods = json.loads(plain.read_text())["methods"]
    for point in json.loads(swept.read_text())["points"]:
        first = point["runs"][0]
        expected = plain_methods[point["method"]]["per_question"]
        assert first["correct"] == [q["correct"] for q in expected]
        assert first["tokens"] == [q["tokens"] for q in expected]
        # cot_sc samples (the policy's stream), mcts_alpha draws root noise and moves (the search's rng)
        assert len({json.dumps(r["correct"]) + json.dumps(r["tokens"]) for r in point["runs"]}) > 1, point["method"]


def test_a_search_that_draws_nothing_random_runs_once_per_point(models, tmp_path):  # noqa: F811
    policy, value = models
    out = tmp_path / "sweep.json"
    assert main(["eval", "--task", "reach", "--policy", str(policy), "--value", str(value), "--test-questions", "4",
                 "--methods", "best_of_n_checker", "--set", "best_of_n_checker.n=2",
                 "--set", "dfs.use_terminal_reward=true",
                 "--sweep", "dfs.max_expansions=1,3", "--seeds", "2", "--max-step-tokens", "8",
                 "--out", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    # DFS over scored legal moves samples nothing and takes no rng: one run stands for every seed
    assert [len(p["runs"]) for p in points if p["method"] == "dfs"] == [1, 1]
    assert all(p["runs"][0]["deterministic"] for p in points if p["method"] == "dfs")
    assert [len(p["runs"]) for p in points if p["method"] == "best_of_n_checker"] == [2]  # sampling: each seed


@pytest.mark.parametrize("args, message", [
    (["--sweep", "mcts_gamma.num_simulations=2,4"], "--sweep mcts_gamma.num_simulations=2,4: unknown method"),
    (["--sweep", "mcts_alpha.num_sims=2,4"], "mcts_alpha has no knob 'num_sims'"),
    (["--sweep", "mcts_alpha.num_simulations="], "no values"),
    (["--sweep", "mcts_alpha.num_simulations=2,many"], "'many' is not a number"),
    (["--sweep", "mcts_alpha.num_simulations=2,0"], "num_simulations must be an integer >= 1, got 0"),
    (["--sweep", "cot_sc.k=1.5"], "k must be an integer >= 1"),
    (["--sweep", "mcts_alpha=2,4"], "write METHOD.KNOB=V1,V2"),
    (["--sweep", "cot_sc.k=1,2", "--sweep", "cot_sc.k=4"], "one knob per method"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--seeds", "2", "--trees", "trees"], "--trees draws the trees of one evaluation"),
])
def test_bad_sweeps_stop_in_one_line_before_models_load(models, args, message, capsys, monkeypatch):  # noqa: F811
    import tsllm.models.value
    import tsllm.sweep

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the sweep was checked")

    monkeypatch.setattr(tsllm.models.value, "ValueFunction", no_work)
    monkeypatch.setattr(tsllm.sweep, "run_sweep", no_work)
    policy, value = models
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--policy", str(policy), "--value", str(value), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsllm: "), err
    assert message in err, err


def test_a_swept_method_joins_the_methods_and_keeps_its_set_knobs():
    from tsllm.sweep import parse_sweeps, plan

    sweeps = parse_sweeps(["bfs.beam_width=1,3", "cot_sc.max_tokens=10,20.5"], seeds=1)
    points = plan({"greedy": {}, "bfs": {"width": 2}, "cot_sc": {}}, sweeps)
    assert [(p.method, p.knobs) for p in points] == [
        ("greedy", {}), ("bfs", {"width": 2, "beam_width": 1}), ("bfs", {"width": 2, "beam_width": 3}),
        ("cot_sc", {"max_tokens": 10}), ("cot_sc", {"max_tokens": 20.5})]  # budget limits sweep too


def test_at_cost_reads_a_curve_linearly_in_log_cost_and_only_where_it_spent():
    from tsllm.sweep import at_cost

    curve = [(400.0, 0.6, 1.0), (100.0, 0.2, 0.0)]  # unsorted on purpose
    assert at_cost(curve, 200.0) == pytest.approx((0.4, 0.5))  # halfway from 100 to 400 in log cost
    assert at_cost(curve, 100.0) == pytest.approx((0.2, 0.0)) and at_cost(curve, 400.0) == pytest.approx((0.6, 1.0))
    assert at_cost(curve, 50.0) is None and at_cost(curve, 800.0) is None
    assert at_cost(curve, 96.0) == pytest.approx((0.2, 0.0))  # within 5% of the cheapest point
    assert at_cost([], 10.0) is None
