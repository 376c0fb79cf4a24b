"""One trainer vocabulary: the value and policy trainers' configs name the same thing the same way
(transformers' TrainingArguments names), and every key says what it is for."""

import dataclasses
import typing

import pytest

from tsllm.config import ConfigError
from tsllm.training.args import TrainArgs
from tsllm.training.policy_trainer import PolicyTrainConfig
from tsllm.training.value_trainer import ValueTrainConfig

CONFIGS = (ValueTrainConfig, PolicyTrainConfig)
# Names the trainers used before they shared TrainArgs, each with the one name it became.
RENAMED = {"lr": "learning_rate", "epochs": "num_train_epochs", "num_epochs": "num_train_epochs",
           "per_device_batch_size": "per_device_train_batch_size", "train_files": "data_files",
           "backbone": "base_model", "log_every_steps": "logging_steps", "stop_after_steps": "max_steps",
           "save_every_steps": "save_steps", "keep_checkpoints": "save_total_limit"}


def names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_both_trainers_share_one_vocabulary():
    value, policy = names(ValueTrainConfig), names(PolicyTrainConfig)
    assert issubclass(ValueTrainConfig, TrainArgs) and issubclass(PolicyTrainConfig, TrainArgs)
    assert value & policy == names(TrainArgs)  # what both have comes from the base, nothing else
    for name in names(TrainArgs):  # ... with one type for one name
        assert typing.get_type_hints(ValueTrainConfig)[name] == typing.get_type_hints(PolicyTrainConfig)[name]
    assert not (value | policy) & set(RENAMED), "an old name is back"
    assert set(RENAMED.values()) - {"save_steps", "save_total_limit"} <= names(TrainArgs)
    assert {"learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "logging_steps",
            "output_dir", "data_files", "base_model", "seed", "lr_scheduler_type", "warmup_ratio", "max_seconds",
            "deepspeed", "mixed_precision", "eval_fraction"} <= names(TrainArgs)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_key_has_a_help_string_and_one_default(cls):
    for f in dataclasses.fields(cls):
        assert len(f.metadata.get("help", "")) > 5, f"{cls.__name__}.{f.name} has no help"
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    # A default changed by a trainer keeps the base's help text (written once).
    for f in dataclasses.fields(cls):
        if f.name in names(TrainArgs):
            assert f.metadata["help"] == TrainArgs.__dataclass_fields__[f.name].metadata["help"]


def test_trainer_defaults_differ_only_where_they_say_so():
    assert ValueTrainConfig.__dataclass_fields__["lr_scheduler_type"].default == "cosine"
    assert PolicyTrainConfig.__dataclass_fields__["use_lora"].default is True
    # Both build from defaults alone (a config tree can hold them) and check themselves in validate().
    assert ValueTrainConfig().data_files == [] and ValueTrainConfig().data_files is not ValueTrainConfig().data_files
    for cls in CONFIGS:
        with pytest.raises(ConfigError, match="'base_model': set exactly one of"):
            cls().validate()


@pytest.mark.parametrize("cls", CONFIGS)
def test_settings_are_checked_without_a_model_or_data(cls):
    """What a loop section sets can be checked at load, before the loop fills in model and data."""
    cls().validate_settings()  # the defaults are valid settings
    for key, value, message in (("learning_rate", -1.0, "must be > 0"), ("warmup_ratio", 1.5, "in \\[0, 1\\)"),
                                ("max_steps", 0, "or -1"), ("lr_scheduler_type", "cosin", "unknown schedule"),
                                ("deepspeed", "nowhere.json", "does not exist")):
        with pytest.raises(ConfigError, match=f"config key '{key}': .*{message}"):
            cls(**{key: value}).validate_settings()
