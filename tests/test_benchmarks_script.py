"""scripts/benchmarks.py: the smoke scale runs every claim end to end (tiny checkpoints trained by
the loop's stages, `tsllm eval` sweeps, the library points, `tsllm bench loop`) and writes a doc
with a header and the five claims, each with its command, seeds, wall time and a verdict; claim 5
can come from an earlier bench-loop JSON; the verdict rule's arithmetic."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmarks.py"
spec = importlib.util.spec_from_file_location("benchmarks_script", SCRIPT)
benchmarks = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = benchmarks  # dataclasses look their module up there
spec.loader.exec_module(benchmarks)

# one worker runs the module (--dist loadgroup), so the smoke run (the `smoke` fixture) is made once
pytestmark = pytest.mark.xdist_group("benchmarks_smoke")

VERDICT = re.compile(r"\*\*Verdict: (reproduced|refuted|inconclusive) at this scale\.\*\*")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("benchmarks")
    doc = out / "BENCHMARKS.md"
    assert benchmarks.main(["--scale", "smoke", "--out-dir", str(out), "--doc", str(doc), "--no-progress"]) == 0
    return out, doc.read_text()


def sections(doc: str) -> dict[int, str]:
    parts = re.split(r"^## Claim (\d): ", doc, flags=re.M)
    return {int(k): body for k, body in zip(parts[1::2], parts[2::2])}


def test_smoke_doc_has_a_header_and_five_claims_each_with_a_verdict(smoke):
    out, doc = smoke
    header = doc.split("## Claim")[0]
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC at commit \S+ by "
                     r"`python scripts/benchmarks.py --scale smoke", header)
    assert "smoke scale" in header and "the full regeneration is `python scripts/benchmarks.py`" in header
    found = sections(doc)
    assert sorted(found) == [1, 2, 3, 4, 5]
    for k, body in found.items():
        assert len(VERDICT.findall(body)) == 1, f"claim {k} has no single verdict"
        assert re.search(r"Seeds: \d+\. Wall time: \d+ s \(smoke scale\)", body), f"claim {k}"
        assert "Command(s):" in body and ("    tsllm eval --task" in body or "    tsllm bench loop" in body)
        saved = json.loads((out / f"claim{k}.json").read_text())
        assert saved["verdict"] == VERDICT.search(body).group(1) and saved["seconds"] >= 0


def test_smoke_claims_hold_their_numbers(smoke):
    out, doc = smoke
    found = sections(doc)
    claim1 = json.loads((out / "claim1.json").read_text())
    for task in ("game24", "prontoqa", "reach"):  # the method table of each task, every method swept
        points = json.loads((out / f"sweep_claim1_{task}.json").read_text())["points"]
        # reach's shipped search (DFS) reads the game's outcome, so its baseline is sampling that reads
        # it too, at the same compute caps, compared in both cost units
        checker = task == "reach"
        methods = {"dfs", "best_of_n_checker"} if checker else {"mcts_alpha", "bfs", "cot_sc", "best_of_n"}
        assert {p["method"] for p in points} == {"greedy", *methods}
        if checker:
            assert {p["value"] for p in points if p["method"] == "dfs"} == set(benchmarks.SCALES["smoke"].compute_caps)
            assert [p["unit"] for p in claim1["tasks"][task]["pairs"]] == ["tokens", "compute"]
        verdict = claim1["tasks"][task]["verdict"]  # each task's own verdict, under its heading
        pairs = 2 if checker else 4
        assert f"{task}: {verdict}\n\n| point |" in found[1] and f"{task}: {verdict} (of {pairs} pairs" in found[1]
    searched = benchmarks.SEARCH_TASK  # claims 2-4 run on the task whose search is far above greedy
    assert searched == "reach"
    rescale = json.loads((out / "claim2.json").read_text())["tasks"][searched]["points"]
    assert all(len(p["runs"]) == 2 for p in rescale if p["method"] != "greedy")  # claim 2 takes >= 2 seeds
    # ReSCALE's PUCT search has root Dirichlet noise; gumbel_mcts has its own Gumbel noise
    assert {p["knobs"].get("add_noise") for p in rescale if p["method"] == "mcts_alpha"} == {True}
    dora = json.loads((out / "claim3.json").read_text())
    rollouts = [(p["method"], p["knobs"]["num_rollouts"]) for p in dora["tasks"][searched]["points"]]
    assert rollouts == [("parallel_dora", 2), ("parallel_rebase", 2), ("parallel_rebase", 8)]
    assert "embeddings:" in found[3]
    noise = [p["value"] for p in json.loads((out / "claim4.json").read_text())["tasks"][searched]["points"]]
    assert noise == [0.0, 1.0]
    assert "| 1 | sampling |" in found[5] and "| 0 | search |" in found[5]


def test_claim_5_from_a_bench_loop_json(smoke, tmp_path):
    out, _ = smoke
    doc = tmp_path / "doc.md"
    assert benchmarks.main(["--scale", "smoke", "--claims", "5", "--loop-json", str(out / "bench_loop.json"),
                            "--out-dir", str(tmp_path), "--doc", str(doc)]) == 0
    found = sections(doc.read_text())
    made = json.loads((out / "bench_loop.json").read_text())
    assert f"    {made['command']}  # read from " in found[5] and VERDICT.search(found[5])
    assert f"Wall time: {made['seconds']:.0f} s" in found[5]  # the bench's own, not the reading's
    assert all("Not measured yet" in found[k] for k in (1, 2, 3, 4))
    assert not (tmp_path / "checkpoints").exists()  # claim 5 alone trains nothing


def test_bad_claims_flag_stops_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmarks.main(["--claims", "6", "--out-dir", str(tmp_path)])
    assert "--claims" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_verdict_rule():
    assert benchmarks.compare(0.9, 0.02, 0.5, 0.02) == "above"
    assert benchmarks.compare(0.5, 0.02, 0.9, 0.02) == "below"
    assert benchmarks.compare(0.55, 0.05, 0.5, 0.05) == "tied"  # 5 points apart, margin 14
    # seed spread and the binomial error of the questions both count
    assert benchmarks.standard_error(0.5, 0.0, 3, 100) == pytest.approx(0.05)
    assert benchmarks.standard_error(1.0, 0.3, 9, 100) == pytest.approx(0.1)


def row(tokens: float, accuracy: float, compute: float = 0.0, method: str = "") -> dict:
    return {"method": method, "tokens_per_question": {"mean": tokens}, "compute_per_question": {"mean": compute},
            "accuracy": {"mean": accuracy, "std": 0.0}, "runs": [{}]}


def test_a_search_pair_is_matched_in_the_unit_it_names():
    # sampling: 20% at 100 step tokens / 1000 compute, 60% at 400 / 4000; the search at 100 step
    # tokens but 4000 compute is far above sampling in step tokens and level in compute
    rows = [row(100, 0.2, 1000, "best_of_n_checker"), row(400, 0.6, 4000, "best_of_n_checker"),
            row(100, 0.6, 4000, "dfs")]
    by_tokens = benchmarks.search_pair(rows, "dfs", "best_of_n_checker", 1000, "tokens")
    by_compute = benchmarks.search_pair(rows, "dfs", "best_of_n_checker", 1000, "compute")
    assert (by_tokens["unit"], by_tokens["above"], by_tokens["matched_points"]) == ("tokens", 1, 1)
    assert (by_compute["unit"], by_compute["tied"], by_compute["above"]) == ("compute", 1, 0)


def test_matched_interpolates_the_baseline_in_log_tokens_and_refuses_outside_it():
    curve = [row(400, 0.6), row(100, 0.2)]
    accuracy, error = benchmarks.matched(curve, 200, 100)
    assert accuracy == pytest.approx(0.4)  # 200 is halfway from 100 to 400 in log tokens
    assert error == pytest.approx((0.04 + 0.24 ** 0.5 / 10) / 2)  # binomial errors at 20% and 60%, halfway
    assert benchmarks.matched(curve, 50, 100) is None and benchmarks.matched(curve, 800, 100) is None
    assert benchmarks.matched(curve, 102, 100)[0] == pytest.approx(0.2, abs=0.01)


def test_doc_only_rewrites_the_same_claims_from_their_json(smoke, tmp_path):
    out, doc = smoke
    again = tmp_path / "again.md"
    assert benchmarks.main(["--scale", "smoke", "--out-dir", str(out), "--doc", str(again), "--doc-only"]) == 0
    assert sections(again.read_text()) == sections(doc)
    assert str(out) not in doc and "$OUT/checkpoints/game24" in doc  # no machine paths in the doc


def test_a_task_can_measure_less_than_the_scale_and_the_doc_says_so():
    full = benchmarks.SCALES["full"]
    prontoqa, reach = full.for_task("prontoqa"), full.for_task("reach")
    assert prontoqa.test_questions < full.test_questions == reach.test_questions
    assert reach.votes[-1] > full.votes[-1] and prontoqa.seeds < full.seeds == reach.seeds
    assert "prontoqa: test_questions 32" in full.describe() and "warmstart.max_seconds=600" in full.describe()


def test_the_summary_counts_each_checkpoint_and_claim_once(smoke):
    out, doc = smoke
    trained = benchmarks.checkpoint_seconds(out)
    assert sorted(trained) == ["game24", "prontoqa", "reach"]  # the smoke run trained all three
    for task, seconds in trained.items():
        assert f"| checkpoints of {task} | - | {seconds:.0f} s |" in doc
    total = sum(trained.values()) + sum(json.loads((out / f"claim{k}.json").read_text())["seconds"]
                                        for k in benchmarks.CLAIMS)
    assert f"| all of the above | | {total:.0f} s (" in doc
