import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tsllm.config import ConfigError, bad, load_config, parse_overrides, to_dict


@dataclass
class Train:
    lr: float = 1e-3
    epochs: int = 1
    use_lora: bool = True

    def validate(self):
        if self.lr <= 0:
            raise bad("train.lr", f"must be > 0, got {self.lr}")


@dataclass
class Cfg:
    task: Literal["game24", "gsm8k"] = "game24"
    model: Path | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    train: Train = field(default_factory=Train)


def test_defaults_file_and_overrides_layer(tmp_path):
    assert load_config(Cfg) == Cfg()
    path = tmp_path / "c.yaml"
    path.write_text("task: gsm8k\ntrain:\n  lr: 2\n  epochs: 3\n")
    cfg = load_config(Cfg, path, ["train.epochs=5", "seeds=[1, 2]", "model=out/m", "train.use_lora=false"])
    assert cfg.task == "gsm8k" and cfg.train.lr == 2.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 5 and cfg.seeds == [1, 2] and cfg.model == Path("out/m")
    assert cfg.train.use_lora is False
    assert to_dict(cfg)["model"] == "out/m"


@pytest.mark.parametrize("overrides, message", [
    (["train.lrr=1"], "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    (["zzz=1"], "unknown config key 'zzz'; valid keys"),
    (["train.epochs=two"], "config key 'train.epochs': expected int, got 'two'"),
    (["train.epochs=true"], "config key 'train.epochs': expected int"),
    (["task=chess"], "config key 'task': must be one of ['game24', 'gsm8k']"),
    (["seeds=[1, x]"], r"config key 'seeds\[1\]': expected int"),
    (["train.lr=-1"], "config key 'train.lr': must be > 0"),
    (["train=3"], "config key 'train': is a section: set its keys (e.g. train.lr=...), not 3"),
    (["noequals"], "is not key=value"),
])
def test_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message if "\\" in message else re.escape(message)):
        load_config(Cfg, None, overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    bad_yaml = tmp_path / "b.yaml"
    bad_yaml.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, bad_yaml)
    listy = tmp_path / "l.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Cfg, listy)


def test_parse_overrides_nests_and_types():
    assert parse_overrides(["a.b.c=1", "a.d=x", "f="]) == {"a": {"b": {"c": 1}, "d": "x"}, "f": ""}
    assert load_config(Cfg, None, ["train.lr=3e-4"]).train.lr == 3e-4  # YAML 1.1 reads this as a string
    with pytest.raises(ConfigError, match="expected float, got 'fast'"):
        load_config(Cfg, None, ["train.lr=fast"])


def test_null_and_blank_overrides_differ():
    assert parse_overrides(["model=null", "name="]) == {"model": None, "name": ""}
    assert load_config(Cfg, None, ["model=out/m"]).model == Path("out/m")
    assert load_config(Cfg, None, ["model=null"]).model is None


@dataclass
class Search:
    algorithm: str = "a"
    knobs: dict = field(default_factory=lambda: {"x": 1, "y": 2}, metadata={"reset_with": "algorithm"})


@dataclass
class Outer:
    search: Search = field(default_factory=Search)


def test_a_mapping_merges_key_by_key_until_its_choice_changes(tmp_path):
    assert load_config(Outer, None, ["search.knobs.y=5"]).search.knobs == {"x": 1, "y": 5}
    assert load_config(Outer, None, ["search.algorithm=b", "search.knobs.z=0"]).search.knobs == {"z": 0}
    assert load_config(Outer, None, ["search.algorithm=a", "search.knobs.z=0"]).search.knobs == {"x": 1, "y": 2, "z": 0}
    path = tmp_path / "c.yaml"
    path.write_text("search: {algorithm: b, knobs: {w: 1}}\n")
    assert load_config(Outer, path, ["search.knobs.v=2"]).search.knobs == {"w": 1, "v": 2}
