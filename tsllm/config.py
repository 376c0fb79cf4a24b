"""Typed configs: dataclasses loaded from YAML with `key=value` overrides, validated at start.

    cfg = load_config(LoopConfig, "configs/reach/tiny.yaml", ["search.knobs.width=4"])

Built on OmegaConf structured configs (what torchtune and Hydra build on): the dataclass is the
schema, and the YAML file and then the overrides are deep-merged onto its defaults, so one dotted
override changes one value and keeps its siblings. OmegaConf checks keys and types (`int`,
`float`, `bool`, `str`, `Literal[...]`, unions, optional nested dataclasses); this module turns its
errors into one `ConfigError` naming the full key and the fix, builds the dataclasses (so their
own `__post_init__` runs), and calls each dataclass's `validate(self)` for the checks types cannot
say (ranges, paths), which raise through `bad(key, why)`. Override values are read as YAML, so
`lr=3e-4`, `use_lora=false` and `seeds=[1,2]` mean what they look like.

A mapping field whose values belong to a sibling choice (the search knobs belong to the search
algorithm) declares it with `metadata={"reset_with": "<sibling>"}`: a layer (file or overrides)
that changes the sibling starts that mapping afresh instead of inheriting the knobs of the
algorithm it replaces.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem; the message names the key and what to do."""


def bad(key: str, why: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {why}")


# ------------------------------------------------------------------------------ reading layers

def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file `path`, or a ConfigError saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML scalars/lists, `c=` as ''."""
    dotlist = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. search.knobs.num_simulations=8)")
        dotlist.append(item if raw else f"{key}=''")  # OmegaConf reads a bare `c=` as null
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as e:
        raise ConfigError(f"overrides {list(items)}: {_first_line(e)}") from None


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, recursively for nested mappings (plain dicts, no schema)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------- loading

def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """The config from YAML file `path` (or the defaults when None) with overrides applied."""
    layers = [read_yaml(path)] if path is not None else []
    return from_layers(cls, [*layers, parse_overrides(overrides or [])])


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, refusing unknown keys and wrong types."""
    return from_layers(cls, [data], prefix)


def from_layers(cls: type[T], layers: list[dict[str, Any]], prefix: str = "") -> T:
    """`layers` deep-merged in order onto `cls`'s defaults, type-checked, built and validated."""
    try:
        tree = OmegaConf.structured(cls)
        for layer in layers:
            _reset_replaced(cls, tree, layer, prefix)
            tree = OmegaConf.merge(tree, layer)
        data = OmegaConf.to_container(tree, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise _translate(e, cls, prefix) from None
    return build(cls, data, prefix)


def _reset_replaced(cls: type, tree: DictConfig, layer: dict[str, Any], prefix: str = "") -> None:
    """Empty each `reset_with` mapping whose sibling `layer` changes, and refuse a scalar where a
    section goes (OmegaConf's own message for that names no key)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sibling = f.metadata.get("reset_with")
        if sibling and sibling in layer and layer[sibling] != tree.get(sibling):
            tree[f.name] = {}
        sub, value = _dataclass_in(hints[f.name]), layer.get(f.name)
        if sub is None or f.name not in layer or value is None:
            continue
        if not isinstance(value, dict):
            first = dataclasses.fields(sub)[0].name
            raise bad(prefix + f.name, f"is a section: set its keys (e.g. {prefix}{f.name}.{first}=...), "
                                       f"not {value!r}")
        if isinstance(tree.get(f.name), DictConfig):
            _reset_replaced(sub, tree[f.name], value, f"{prefix}{f.name}.")


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Dataclass `cls` from checked plain `data`, nested dataclasses first; any error in a
    constructor or `validate()` comes out as a ConfigError naming the section."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_in(hints[name])
        kwargs[name] = build(sub, value, f"{prefix}{name}.") if sub is not None and isinstance(value, dict) else value
    try:
        obj = cls(**kwargs)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a constructor's own check, e.g. an inconsistent model shape
        # a message that opens with "<field>=" is about that field: name it, not just the section
        named = re.match(r"(\w+)=", str(e))
        key = prefix + named[1] if named and named[1] in data else prefix.rstrip(".") or cls.__name__
        raise bad(key, str(e)) from None
    return obj


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass in annotation `tp` (`X` or `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if len(inner) == 1 else None
    return None


def _first_line(e: Exception) -> str:
    return str(e).split("\n")[0].strip()


_TYPE_NAMES = {"Integer": "int", "Float": "float", "Boolean": "bool", "String": "str", "Path": "Path"}


def _translate(e: OmegaConfBaseException, cls: type, prefix: str) -> ConfigError:
    """OmegaConf's multi-line error as one line in this module's words."""
    key = prefix + (e.full_key or "")
    why = _first_line(e)
    if isinstance(e, ConfigKeyError) and " not in " in why:
        return ConfigError(f"unknown config key '{key}'{_suggest(cls, e.full_key or '', prefix)}")
    why = re.sub(r"^Value '(.*)' of type '(\w+)' could not be converted to (\w+)$",
                 lambda m: f"expected {_TYPE_NAMES.get(m[3], m[3])}, got {m[1]!r} ({m[2]})", why)
    why = re.sub(r"^Invalid value '(.*)', expected one of (.*)$", r"must be one of \2, got '\1'", why)
    if not e.full_key:  # a merge error names no key: a scalar where a section goes, or the reverse
        return ConfigError(f"config: {why} (a section takes a mapping of its keys)")
    return bad(key, why)


def _suggest(cls: type, full_key: str, prefix: str) -> str:
    """'; did you mean ...' or '; valid keys: [...]' for unknown `full_key` inside `cls`."""
    *parents, name = full_key.split(".")
    node: Any = cls
    for part in parents:
        node = _dataclass_in(typing.get_type_hints(node).get(part)) if dataclasses.is_dataclass(node) else None
    if node is None:
        return ""
    names = [f.name for f in dataclasses.fields(node)]
    where = prefix + "".join(p + "." for p in parents)
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys: {sorted(names)}"


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (Paths as strings) for saving next to a run and comparing on resume."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def as_read_now(cls: type, saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier version, as this version reads it: a key added since takes
    its default, so an upgrade that adds keys does not make every earlier run (or checkpoint)
    another one. A saved config this version cannot read (a key since removed) is returned as it is."""
    try:
        return to_dict(from_dict(cls, saved))
    except ConfigError:
        return saved


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML, keys in the dataclasses' order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


def help_of(f: dataclasses.Field) -> str:
    """A field's help string (`field(metadata={"help": ...})`, as TRL and transformers write it)."""
    return f.metadata.get("help", "")
