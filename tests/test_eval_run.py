"""`tsllm eval --run`: a real tiny loop run (the loop tests' TINY settings) evaluated by naming its
folder reproduces the loop's own eval stage; explicit flags win over the run; a folder that is not
a run, or a round without models, stops in one line before any model loads."""

import json
import re
from pathlib import Path

import pytest

from tests.launch import LIBRARY_DEFAULTS
from tests.test_loop import TINY
from tsllm.cli import main
from tsllm.config import to_dict
from tsllm.loop import LoopConfig

# one worker runs the module (--dist loadgroup), so its loop run (the `tiny_run` fixture) is made once
pytestmark = pytest.mark.xdist_group("eval_run")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One round of the embedded Game24 loop (warm start, sample, value, eval, search, policy, final eval)."""
    out = tmp_path_factory.mktemp("eval_run") / "run"
    assert main(["run", *LIBRARY_DEFAULTS, "--output-dir", str(out), "--no-progress", *TINY]) == 0
    return out


def per_question(result: dict) -> dict[str, list]:
    return {m: [(q["question"], q["answer"], q["tokens"], q["correct"]) for q in r["per_question"]]
            for m, r in result["methods"].items()}


def test_eval_of_a_run_reproduces_the_loops_own_evaluation(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--run", str(tiny_run), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    final = json.loads((tiny_run / "round_1" / "eval" / "results.json").read_text())  # the last round's eval
    assert result["run"] == str(tiny_run) and result["round"] == 1 and result["task"] == "game24"
    assert list(result["methods"]) == ["greedy", "mcts_alpha", "cot_sc"]  # greedy, the run's search, its baseline
    # same problems, models, knobs and budgets (the loop names its results by role)
    roles = {"greedy": "greedy", "mcts_alpha": "search", "cot_sc": "baseline"}
    assert per_question(result) == {m: per_question(final)[role] for m, role in roles.items()}
    search = dict(LoopConfig().search.knobs, **json.loads((tiny_run / "config.json").read_text())["search"]["knobs"])
    assert result["methods"]["mcts_alpha"]["knobs"] == search
    err = capsys.readouterr().err
    assert f"round 1: task game24, policy {tiny_run / 'warmstart' / 'model'}" in err  # round 0 kept its policy
    assert f"value {tiny_run / 'round_0' / 'value' / 'model'}" in err  # the final eval uses the last value


def test_flags_given_win_over_the_run(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--run", str(tiny_run), "--round", "0", "--methods", "greedy,mcts_alpha",
                 "--set", "mcts_alpha.num_simulations=1", "--test-questions", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    round_0 = json.loads((tiny_run / "round_0" / "eval" / "results.json").read_text())
    assert result["round"] == 0 and result["value"] == str(tiny_run / "round_0" / "value" / "model")
    assert list(result["methods"]) == ["greedy", "mcts_alpha"]
    assert result["methods"]["mcts_alpha"]["knobs"]["num_simulations"] == 1  # --set over the run's 2
    assert result["methods"]["mcts_alpha"]["knobs"]["width"] == 2  # the run's, not the default
    # the first two of the same held-out split (same seed), decoded by the same round-0 policy
    assert per_question(result)["greedy"] == per_question(round_0)["greedy"][:2]


def not_a_run(root: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (eval arguments, what the one-line error must say); folders made under `root`."""
    (root / "plain").mkdir()
    (root / "a_file").write_text("x")
    bare = root / "bare"  # a run's config.json, no stage yet
    bare.mkdir()
    config = to_dict(LoopConfig(output_dir=str(bare), rounds=1))
    (bare / "config.json").write_text(json.dumps(config))
    warm = root / "warm"  # the warm start is done, round 0's value is not
    (warm / "warmstart").mkdir(parents=True)
    (warm / "config.json").write_text(json.dumps({**config, "output_dir": str(warm)}))
    (warm / "warmstart" / "done.json").write_text(json.dumps({"policy": "warmstart/model"}))
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    return {
        "no config.json": (["--run", str(root / "plain")], r"--run: .*plain has no config.json, so it is not a run"),
        "a file": (["--run", str(root / "a_file")], r"--run: .*a_file is not a folder"),
        "unreadable config": (["--run", str(root / "broken")], r"--run: .*config.json cannot be read as JSON"),
        "no models yet": (["--run", str(bare)], r"--run: .*bare has no policy model yet"),
        "round past the run": (["--run", str(warm), "--round", "2"], r"--round: the run .* has rounds 0..1"),
        "round without a policy": (["--run", str(warm), "--round", "1"],
                                   r"--run: round 1 of .* has no policy model \(round_0/policy is not complete\)"),
        "round without a value": (["--run", str(warm)],
                                  r"--run: round 0 of .* has no value model \(round_0/value is not complete\)"),
        "--round alone": (["--round", "1", "--policy", str(root)], r"--round: needs --run"),
    }


@pytest.mark.parametrize("case", ["no config.json", "a file", "unreadable config", "no models yet",
                                  "round past the run", "round without a policy", "round without a value",
                                  "--round alone"])
def test_a_folder_that_is_not_a_run_stops_in_one_line_before_any_model_loads(case, tmp_path, capsys, monkeypatch):
    import tsllm.cli

    def no_task(*args, **kwargs):
        raise AssertionError("the task (and its models) was built before --run was checked")

    monkeypatch.setattr(tsllm.cli, "eval_task", no_task)
    args, message = not_a_run(tmp_path)[case]
    with pytest.raises(SystemExit) as stop:
        main(["eval", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsllm: "), err
    assert re.search(message, err), err


def test_a_round_without_a_value_still_runs_greedy_and_cot_sc(tmp_path, monkeypatch):
    """Only value-guided methods need the round's value model (resolution only: no model is loaded)."""
    from argparse import Namespace

    from tsllm.eval_run import resolve_eval_args

    not_a_run(tmp_path)
    args = Namespace(**{name: None for name in ("task", "seed", "test_questions", "data", "split", "prompt_field",
                                                "reward_model", "max_response_tokens", "backend", "max_step_tokens",
                                                "temperature", "prompt_format", "system_prompt", "round",
                                                "policy", "value")},
                     run=str(tmp_path / "warm"), methods="greedy,cot_sc", set=[], lenient=False,
                     allow_illegal_steps=False)
    assert "round 0" in resolve_eval_args(args)
    assert args.policy == str(tmp_path / "warm" / "warmstart" / "model") and args.value is None
    assert args.task == "game24" and args.test_questions == LoopConfig().test_questions and args.set == []


def test_a_sweep_over_a_run_writes_json_table_and_png(tiny_run, tmp_path, capsys):
    """The must-show of `eval --run`: the run's models and knobs, 4 budget points of 3 methods, 2 seeds."""
    out = tmp_path / "sweep.json"
    sweeps = ["mcts_alpha.num_simulations=1,2,3,4", "cot_sc.k=1,2,3,4", "best_of_n.n=1,2,3,4"]
    argv = ["eval", "--run", str(tiny_run), "--test-questions", "2", "--seeds", "2", "--out", str(out)]
    for spec in sweeps:
        argv += ["--sweep", spec]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    swept = [p for p in result["points"] if p["knob"] is not None]
    assert [(p["method"], p["knob"], p["value"]) for p in swept] == [
        (s.split(".")[0], s.split(".")[1].split("=")[0], v) for s in sweeps for v in (1, 2, 3, 4)]
    assert all([r["seed"] for r in p["runs"]] == [0, 1] for p in swept)
    run_knobs = json.loads((tiny_run / "config.json").read_text())["search"]["knobs"]
    for p in swept:
        if p["method"] == "mcts_alpha":  # the run's knobs, the swept one replaced
            assert {k: p["knobs"][k] for k in run_knobs if k != p["knob"]} == {
                k: v for k, v in run_knobs.items() if k != p["knob"]}
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    table = capsys.readouterr().out
    assert all(f"{s.split('=')[0].replace('.', ' ')}={v}" in table for s in sweeps for v in (1, 2, 3, 4))


def test_a_method_only_swept_still_takes_the_run_knobs(tiny_run, tmp_path):
    """`--methods greedy --sweep mcts_alpha...`: the swept search is the run's, knobs and all (it once
    ran with the algorithm's defaults, e.g. without the run's terminal rewards)."""
    out = tmp_path / "sweep.json"
    assert main(["eval", "--run", str(tiny_run), "--test-questions", "2", "--methods", "greedy",
                 "--sweep", "mcts_alpha.num_simulations=1,2", "--out", str(out)]) == 0
    run_knobs = json.loads((tiny_run / "config.json").read_text())["search"]["knobs"]
    swept = [p for p in json.loads(out.read_text())["points"] if p["method"] == "mcts_alpha"]
    assert [p["value"] for p in swept] == [1, 2]
    for p in swept:
        assert {k: p["knobs"][k] for k in run_knobs if k != "num_simulations"} == {
            k: v for k, v in run_knobs.items() if k != "num_simulations"}
