"""The value trainer in two real processes: `torchrun --nproc_per_node 2` over gloo (DDP) gives
exactly the optimizer steps the config implies, and DeepSpeed ZeRO-2 runs for real (not silently
DDP) and trains the same model.

Steps per epoch, defined in tsllm/training/value_trainer.py: each process gets
B = ceil(N / (world * per_device_train_batch_size)) batches and steps every `accumulation` batches plus
once on a final partial group: ceil(B / accumulation). Here N = 23, world = 2, batch 2,
accumulation 4: B = ceil(23 / 4) = 6 and ceil(6 / 4) = 2 steps per epoch (floor division would
say 1), so 3 epochs make 6 steps.

The first DeepSpeed run on a machine compiles a communication op (~100 s on 2 cores, then cached
under ~/.cache/torch_extensions); later runs take ~15 s.
"""

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from tests.launch import TORCHRUN, run_launcher
from tsllm.atomic import write_jsonl
from tsllm.models.value import ValueFunction
from tsllm.tasks.warmstart import game24_contrast_trajectories

pytestmark = pytest.mark.all_cores  # two processes: alone on the machine (tests/conftest.py)
REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Input: 4 4 6 8\n", "Input: 4 4 6 8\n4 + 4 = 8 (left: 6 8 8)\n", "Input: 1 1 1 1\n"]
N, WORLD, BATCH, ACCUMULATION, EPOCHS = 23, 2, 2, 4, 3
STEPS_PER_EPOCH = math.ceil(math.ceil(N / (WORLD * BATCH)) / ACCUMULATION)


def launch(tmp_path: Path, name: str, *overrides: str) -> dict:
    rows = game24_contrast_trajectories(12, seed=0)[:N]  # 23 distinct trajectories
    write_jsonl(rows, tmp_path / "train.jsonl")
    write_jsonl(game24_contrast_trajectories(14, seed=0)[24:], tmp_path / "eval.jsonl")
    config = {"tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64},
              "data_files": [str(tmp_path / "train.jsonl")], "eval_files": [str(tmp_path / "eval.jsonl")],
              "output_dir": str(tmp_path / name), "num_train_epochs": EPOCHS, "per_device_train_batch_size": BATCH,
              "gradient_accumulation_steps": ACCUMULATION, "learning_rate": 3e-3, "logging_steps": 1,
              "max_length": 160}
    (tmp_path / "value.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(WORLD),  # standalone: a free port
               str(REPO / "recipes" / "train_value.py"), "--config", str(tmp_path / "value.yaml"), *overrides]
    stdout, _ = run_launcher(command, tmp_path, env)
    printed = json.loads(stdout.strip().splitlines()[-1])  # rank 0's one JSON line
    saved = json.loads((tmp_path / name / "metrics.json").read_text())
    assert printed["global_step"] == saved["global_step"]
    return saved


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> dict:
    return launch(tmp_path_factory.mktemp("ddp"), "ddp")


def test_two_process_ddp_takes_the_steps_the_config_implies(ddp):
    assert ddp["distributed_type"] == "MULTI_CPU" and ddp["world_size"] == WORLD
    assert STEPS_PER_EPOCH == 2 and ddp["batches_per_epoch"] == 6
    assert ddp["steps_per_epoch"] == STEPS_PER_EPOCH and ddp["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert [p["step"] for p in ddp["train_loss_curve"]] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert ddp["train_examples"] == N and ddp["eval_examples"] == 4
    assert len(ValueFunction(Path(ddp["model_dir"]))(TEXTS)) == 3


needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed not installed (DS_BUILD_OPS=0 pip install deepspeed)")


@needs_deepspeed
def test_two_process_deepspeed_zero2_runs_deepspeed_and_matches_ddp(tmp_path, ddp):
    metrics = launch(tmp_path, "zero2", f"deepspeed={REPO / 'configs' / 'deepspeed' / 'zero2.json'}")
    assert metrics["distributed_type"] == "DEEPSPEED" and metrics["zero_stage"] == 2  # not a silent DDP run
    assert metrics["world_size"] == WORLD and metrics["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert metrics["engine_global_steps"] == metrics["global_step"]  # DeepSpeed stepped when Accelerate did
    # Same data order, optimizer, clipping and schedule: the same model up to float reordering.
    zero2 = ValueFunction(Path(metrics["model_dir"]))(TEXTS)
    assert zero2 == pytest.approx(ValueFunction(Path(ddp["model_dir"]))(TEXTS), abs=1e-6)
    assert [p["loss"] for p in metrics["train_loss_curve"]] == pytest.approx(
        [p["loss"] for p in ddp["train_loss_curve"]], rel=1e-5)


@needs_deepspeed
def test_two_process_deepspeed_zero3_with_lora_saves_a_merged_model(tmp_path):
    """ZeRO-3 partitions the weights themselves: saving gathers them and folds the adapters."""
    metrics = launch(tmp_path, "zero3", f"deepspeed={REPO / 'configs' / 'deepspeed' / 'zero3.json'}",
                     "use_lora=true", "save_steps=2")
    assert metrics["distributed_type"] == "DEEPSPEED" and metrics["zero_stage"] == 3
    assert metrics["engine_global_steps"] == metrics["global_step"] == EPOCHS * STEPS_PER_EPOCH
    checkpoint = tmp_path / "zero3" / "checkpoints" / f"checkpoint-{EPOCHS * STEPS_PER_EPOCH}"
    assert (checkpoint / "adapter_model.safetensors").is_file()  # checkpoints keep the adapter only
    assert not (Path(metrics["model_dir"]) / "adapter_config.json").exists()
    values = ValueFunction(Path(metrics["model_dir"]))(TEXTS)
    assert len({round(v, 6) for v in values}) == 3
