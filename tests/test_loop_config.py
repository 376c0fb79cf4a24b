"""The loop's config tree: one override changes one value, every bad value stops the run at load
naming its key, the trainers' sections share their vocabulary, and docs/CONFIG.md is current."""

import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from tsllm.cli import main as tsllm_main
from tsllm.config import ConfigError, load_config, to_dict
from tsllm.loop import check_output_dir
from tsllm.loop_config import (
    LOOP_FILLED,
    LoopConfig,
    PolicySection,
    ValueSection,
    WarmStartSection,
    algorithm_knobs,
    trainer_settings,
)
from tsllm.training.policy_trainer import PolicyTrainConfig
from tsllm.training.value_trainer import ValueTrainConfig

REPO = Path(__file__).resolve().parents[1]


def tsllm_run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tsllm.cli", "run", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_no_config_is_the_main_job_and_an_override_keeps_the_other_knobs():
    out = tsllm_run("--print-config", "search.knobs.prior_weight=0.5", "search.knobs.max_depth=6")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved == {**to_dict(load_config(LoopConfig, "configs/reach/tiny.yaml")),
                        "search": resolved["search"]}
    assert resolved["task"] == "reach" and resolved["output_dir"] == "runs/reach-tiny"
    assert resolved["search"]["knobs"] == {"use_terminal_reward": True, "prior_weight": 0.5, "max_depth": 6}
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        tsllm_main(["run", "--help"])
    assert "runs/reach-tiny" in help_text.getvalue()


BAD_OVERRIDES = {"search.knobs.num_simulation=4": "search.knobs.num_simulation", "value.lrr=1": "value.lrr",
                 "rounds=two": "rounds", "search.algorithm=nope": "search.algorithm"}


def test_bad_config_stops_the_real_cli_at_once_naming_the_key(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    runs = {override: subprocess.Popen(  # all at once: each spends its seconds importing
        [sys.executable, "-m", "tsllm.cli", "run", "--output-dir", str(tmp_path / key), override],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for override, key in BAD_OVERRIDES.items()}
    for override, proc in runs.items():
        _, stderr = proc.communicate(timeout=120)
        key = BAD_OVERRIDES[override]
        assert proc.returncode == 2, (override, stderr)
        assert f"'{key}'" in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
        assert not (tmp_path / key).exists()  # nothing was started


def test_print_config_of_a_shipped_file_matches_the_loaded_config():
    out = tsllm_run("--print-config", "--config", "configs/prontoqa/tiny.yaml", "rounds=1")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed == to_dict(load_config(LoopConfig, REPO / "configs/prontoqa/tiny.yaml", ["rounds=1"]))
    assert printed["task"] == "prontoqa" and printed["max_step_tokens"] == 96


@pytest.mark.parametrize("override, message", [
    (["search.knobs.num_simulation=4"], r"'search.knobs.num_simulation': mcts_alpha has no knob .*num_simulations"),
    (["search.knobs.width=0"], r"'search.knobs.width': must be an integer >= 1, got 0"),
    (["search.knobs.num_simulations=-2"], r"'search.knobs.num_simulations': must be an integer >= 1"),
    (["search.knobs.c_init=.nan"], r"'search.knobs.c_init': must be a finite number"),
    (["search.knobs.add_noise=3"], r"'search.knobs.add_noise': must be true or false"),
    (["search.max_tokens=-1"], r"'search.max_tokens': must be >= 1 or null"),
    (["search.train_knobs.move_cutoff=1.5"], r"'search.train_knobs.move_cutoff': must be in \[0, 1\), got 1.5"),
    (["search.algorithm=parallel_rebase", "search.knobs.rule=dora"], r"'search.knobs.rule': parallel_rebase has no"),
    (["generator.foo=1"], r"unknown config key 'generator.foo'; valid keys: \[.*'dtype'"),
    (["generator.gpu_memory_utilization=0.5"], r"'generator.gpu_memory_utilization': only the vllm backend"),
    (["temperature=.nan"], r"'temperature': must be a finite number >= 0, got nan"),
    (["temperature=-1"], r"'temperature': must be a finite number >= 0"),
    (["train_questions=-3"], r"'train_questions': must be >= 1"),
    (["test_questions=5000"], r"'test_questions': Game24 has 1362 puzzles .* choose 1..1361, got 5000"),
    (["value.warmup_ratio=2"], r"config key 'value.warmup_ratio': must be in \[0, 1\)"),
    (["policy.lora_r=0"], r"config key 'policy.lora_r': must be > 0"),
    (["warmstart.warmup_ratio=2"], r"config key 'warmstart.warmup_ratio': must be in \[0, 1\)"),
    (["value.deepspeed=/no/such.json"], r"config key 'value.deepspeed': /no/such.json does not exist"),
    (["tiny.hidden_size=66"], r"config key 'tiny.hidden_size': hidden_size=66 must be divisible by num_heads=4"),
    (["tiny.num_layers=x"], r"config key 'tiny.num_layers': expected int"),
    (["tiny.num_kv_heads=3"], r"config key 'tiny.num_kv_heads': num_kv_heads=3 must be >= 1 and divide num_heads=4"),
    (["tiny.tokenizer=bpe", "tiny.vocab_size=100"], r"config key 'tiny.vocab_size': vocab_size=100 must be >= 259"),
    (["tiny.tokenizer=sentencepiece"], r"config key 'tiny.tokenizer': must be one of \['char', 'bpe'\]"),
    (["tiny.architecture=gpt2"], r"config key 'tiny.architecture': must be one of \['llama', 'qwen2'\]"),
    (["tracking=none"], r"'tracking': is a section: set its keys \(e.g. tracking.report_to=...\)"),
    (["tracking.report_to=tensorboard"], r"'tracking.report_to': must be one of \['wandb', 'none'\]"),
    (["value.max_length=1.5"], r"'value.max_length': expected int, got '1.5' \(float\)"),
])
def test_every_bad_value_fails_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LoopConfig, None, override)


def test_overrides_change_one_value_and_keep_its_siblings():
    cfg = load_config(LoopConfig, None, ["tiny.hidden_size=64", "warmstart.learning_rate=1e-3"])
    assert cfg.tiny.num_layers == 2 and cfg.tiny.hidden_size == 64  # the loop's 2 layers, not the class's 4
    assert cfg.warmstart.max_seconds == 900.0 and cfg.warmstart.learning_rate == 1e-3  # the safety cap stays
    assert load_config(LoopConfig, None, ["search.knobs.width=4"]).search.knobs == {
        "num_simulations": 6, "width": 4, "parallel_simulations": 3}


def test_choosing_another_algorithm_drops_the_default_knobs(tmp_path):
    bfs = load_config(LoopConfig, None, ["search.algorithm=bfs", "search.knobs.beam_width=2"])
    assert bfs.search.knobs == {"beam_width": 2}
    path = tmp_path / "c.yaml"
    path.write_text("search: {algorithm: dfs, knobs: {width: 3}}\n")
    assert load_config(LoopConfig, path, ["search.knobs.max_answers=2"]).search.knobs == {
        "width": 3, "max_answers": 2}  # the file's knobs, then the override's, none of mcts_alpha's
    same = tmp_path / "same.yaml"
    same.write_text("search: {algorithm: mcts_alpha, knobs: {width: 3}}\n")
    assert load_config(LoopConfig, same).search.knobs["num_simulations"] == 6  # same algorithm: merged


def test_knobs_come_from_the_signature_partials_included():
    assert {"num_simulations", "width", "parallel_simulations"} <= set(algorithm_knobs("mcts_alpha"))
    rebase = algorithm_knobs("parallel_rebase")
    assert "num_rollouts" in rebase and "rule" not in rebase and "embed" not in rebase
    assert not {"budget", "rng", "max_tokens"} & set(algorithm_knobs("bfs"))


@pytest.mark.parametrize("section, trainer", [(ValueSection, ValueTrainConfig), (PolicySection, PolicyTrainConfig),
                                              (WarmStartSection, PolicyTrainConfig)])
def test_training_sections_are_the_trainers_fields(section, trainer):
    mine, theirs = typing.get_type_hints(section), typing.get_type_hints(trainer)
    # the loop reads these; the trainer never sees them
    own = {PolicySection: {"target"}, ValueSection: {"continue_from_previous"}}.get(section, set())
    assert set(section.loop_keys) == own
    stage_sets = {PolicySection: {"min_reward"}, WarmStartSection: {"beta", "nll_weight"}}.get(section, set())
    assert set(mine) - own == set(theirs) - LOOP_FILLED - stage_sets
    assert all(mine[name] == theirs[name] for name in set(mine) - own)
    assert set(trainer_settings(section())) == set(mine) - own


def test_every_loop_key_has_help():
    def walk(cls, prefix=""):
        for f in dataclasses.fields(cls):
            if cls not in (ValueSection, PolicySection, WarmStartSection):  # theirs: the trainers' help
                assert f.metadata.get("help"), f"{prefix}{f.name} has no help string"
            hint = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")

    walk(LoopConfig)


def test_config_json_holds_the_resolved_values(tmp_path):
    cfg = load_config(LoopConfig, None, [f"output_dir={tmp_path}", "search.knobs.width=4"])
    check_output_dir(cfg)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["search"]["knobs"] == {"num_simulations": 6, "width": 4, "parallel_simulations": 3}
    assert saved["warmstart"]["max_seconds"] == 900.0 and saved["value"]["max_length"] == 512
    assert saved["tiny"]["num_layers"] == 2 and saved["tracking"]["report_to"] == "wandb"


def test_every_shipped_config_loads_and_prints():
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        if path.parent.name in ("game24", "prontoqa"):  # the GPU configs need real paths: test_loop_tasks.py
            cfg = load_config(LoopConfig, path)
            assert yaml.safe_load(yaml.safe_dump(to_dict(cfg))) == to_dict(cfg)


def test_config_reference_is_current():
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs" / "CONFIG.md").read_text() == module.render(), \
        "docs/CONFIG.md is stale: run python scripts/config_reference.py"


def test_a_budget_past_the_models_context_stops_the_real_cli_before_the_warm_start(tmp_path):
    out = tsllm_run("--config", "configs/prontoqa/tiny.yaml", "--output-dir", str(tmp_path / "run"),
                    "max_step_tokens=4096")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config key 'max_step_tokens'" in out.stderr
    assert "2048 positions (tiny.max_position_embeddings)" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    (["max_step_tokens=200"], r"'max_step_tokens': .*512 positions.*max_step_tokens \* \(max_steps \+ 1\) = 200 \* 5"),
    (["max_step_tokens=600"], r"'max_step_tokens': .*max_step_tokens = 600 leaves no room for a prompt"),
    (["warmstart.max_length=600"], r"'warmstart.max_length': the policy's context is 512 positions.*= 600"),
    (["policy.max_length=1024", "tiny.max_position_embeddings=1024", "max_step_tokens=300"],
     r"'max_step_tokens'.*1024 positions.*300 \* 5"),
])
def test_token_budgets_are_checked_against_the_context(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LoopConfig, None, override)


def test_value_budget_is_checked_against_the_value_models_own_context(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    with pytest.raises(ConfigError, match=r"'value.max_length': 512 exceeds the value model's context of 256"):
        load_config(LoopConfig, None, [f"value_backbone={tmp_path}"])
    assert load_config(LoopConfig, None, [f"value_backbone={tmp_path}", "value.max_length=256"]).value.max_length == 256


def test_a_section_carries_its_trainers_help_and_refuses_defaults_for_fields_it_lacks():
    from tsllm.loop_config import trainer_section

    @dataclasses.dataclass
    class Trainer:
        learning_rate: float = dataclasses.field(default=1e-3, metadata={"help": "step size"})
        data_files: list[str] = dataclasses.field(default_factory=list)

    section = trainer_section("Section", Trainer, {"learning_rate": 5e-4}, "doc")
    (only,) = dataclasses.fields(section)
    assert only.name == "learning_rate" and only.metadata["help"] == "step size" and section().learning_rate == 5e-4
    with pytest.raises(TypeError, match=r"defaults for \['lr'\], which Trainer does not have"):
        trainer_section("Section", Trainer, {"lr": 5e-4}, "doc")
