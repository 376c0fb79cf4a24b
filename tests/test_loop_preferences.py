"""The loop's policy stage with `policy.target: preferences` (step DPO on the search's sibling pairs)
on the reach config with its counts shrunk, the stage keeping the policy when a round has no pair,
and `value.continue_from_previous` starting round 1's value model from round 0's weights."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tsllm.cli import main
from tsllm.config import load_config
from tsllm.loop import Loop
from tsllm.loop_config import LoopConfig
from tsllm.models.tiny import load_causal_lm
from tsllm.training.targets import target_rows

# one worker runs the module, so the module's one loop run (the `run` fixture) is made once
pytestmark = pytest.mark.xdist_group("loop_preferences")

REACH = str(Path(__file__).resolve().parents[1] / "configs" / "reach" / "tiny.yaml")
SHRUNK = ["rounds=1", "train_questions=4", "test_questions=3", "warmstart.max_seconds=4",
          "warmstart.num_train_epochs=1", "samples_per_question=2", "value.num_train_epochs=1",
          "policy.num_train_epochs=1", "tracking.report_to=none", "policy.target=preferences",
          "tiny={hidden_size: 32, num_layers: 1, num_heads: 1, intermediate_size: 64}"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One round of the reach loop learning from step preferences (the DFS of the shipped config
    with the game's outcome at terminals: a checked loss beside an open move is a pair)."""
    out = tmp_path_factory.mktemp("preferences") / "run"
    assert main(["run", "--config", REACH, "--output-dir", str(out), "--no-progress", *SHRUNK]) == 0
    return out


def loop_on(folder: Path, *overrides: str) -> Loop:
    return Loop(load_config(LoopConfig, REACH, [*SHRUNK, f"output_dir={folder}", *overrides]), progress=False)


def test_the_policy_stage_trains_step_dpo_on_the_search_s_sibling_pairs(run):
    trees = read_jsonl(run / "round_0" / "search" / "trees.jsonl")
    rows = target_rows("preferences", trees)
    assert rows, "the shrunk search found no pair: the test would show nothing"
    policy = run / "round_0" / "policy"
    assert read_jsonl(policy / "policy_data.jsonl") == rows  # inspectable, and what was trained
    done = json.loads((policy / "done.json").read_text())
    assert (done["target"], done["rows"], done["policy"]) == ("preferences", len(rows), "round_0/policy/model")
    metrics = json.loads((policy / "metrics.json").read_text())
    assert metrics["config"]["beta"] == 0.1 and metrics["global_step"] > 0
    trained, _ = load_causal_lm(policy / "model")
    warm, _ = load_causal_lm(run / "warmstart" / "model")
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), warm.state_dict().values()))
    assert [r["round"] for r in read_jsonl(run / "rounds.jsonl")] == [0, 1]


def test_a_round_without_pairs_keeps_the_policy_and_says_so(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "round_0" / "policy")
    trees = copy / "round_0" / "search" / "trees.jsonl"
    # every searched state has at most one child: no sibling to prefer a step over
    trees.write_text("".join(json.dumps({**r, "tree": {k: v for k, v in r["tree"].items() if k != "children"}}) + "\n"
                             for r in read_jsonl(trees)))
    done = loop_on(copy).train_policy(0, str(copy / "warmstart" / "model"))
    assert done["rows"] == 0 and done["policy"] == "warmstart/model" and done["skipped"]
    assert "round_0/policy: no search preferences rows to learn from; the policy carries over" in \
        capsys.readouterr().err
    assert not (copy / "round_0" / "policy" / "model").exists()


class FirstWeights(TrainerCallback):
    """Keeps the model's weights as training starts."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_round_1_s_value_model_starts_from_round_0_s_when_continued(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "round_1" / "sample").mkdir(parents=True)
    shutil.copy(copy / "round_0" / "sample" / "trajectories.jsonl", copy / "round_1" / "sample")
    policy = str(copy / "round_0" / "policy" / "model")
    seen = FirstWeights()
    monkeypatch.setattr(Loop, "curve", lambda self, stage, k: [seen])
    done = loop_on(copy, "value.continue_from_previous=true").train_value(1, policy)
    assert done["started_from"] == "round_0/value/model"
    # it learnt rounds before from the start: round 1's samples and round 0's search are what is new
    assert done["data_files"] == ["round_1/sample/trajectories.jsonl", "round_0/search/trajectories.jsonl"]
    previous = load_file(copy / "round_0" / "value" / "model" / "model.safetensors")
    assert set(previous) <= set(seen.weights) and "score.weight" in previous  # the head too, not a fresh one
    assert all(torch.equal(previous[k], seen.weights[k]) for k in previous)
    # off (the default), round 1 starts from the current policy again, on all the data, and round 0 always did
    assert loop_on(copy).value_start(1, policy) == policy
    shutil.rmtree(copy / "round_1" / "value")
    assert loop_on(copy).train_value(1, policy)["data_files"] == [
        "round_0/sample/trajectories.jsonl", "round_1/sample/trajectories.jsonl", "round_0/search/trajectories.jsonl"]
    assert json.loads((run / "round_0" / "value" / "done.json").read_text())["started_from"] == "warmstart/model"
