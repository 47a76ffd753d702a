"""Frozen-dataclass configs: strict loading from dicts/files, dotted overrides, JSON round-trip.

Every config in noisecraft is a frozen dataclass with simple field types (int, float, bool, str,
None-able versions of these, tuples of them, and nested config dataclasses). `from_dict` rejects
unknown fields and wrong types with a `ConfigError` naming the field and the expected type.

A tagged section is a field whose class another field names: `field(metadata={"tagged_by": "model",
"classes": fn})` with fn() -> {tag: class}. `RunConfig.network` is one: {"model": "dit", "network": {...}}
builds the network section as a DiTConfig; an absent section is that class's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from noisecraft.errors import ConfigError

_SCALARS = (bool, int, float, str)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp, where: str):
    """Check `value` against the annotation `tp`; allow int->float and list->tuple."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        present = [a for a in args if a is not type(None)]
        if len(present) == 1 and dataclasses.is_dataclass(present[0]):  # an optional section: its own error
            return _coerce(value, present[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table/object, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp in _SCALARS:
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")


def from_dict(cls, data: dict, where: str | None = None):
    """Build the dataclass `cls` from `data`, strictly (unknown fields and wrong types raise)."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table/object, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items() if k not in _tagged(fields)}
    for name, f in _tagged(fields).items():
        kwargs[name] = _tagged_section(f, data, kwargs, fields, where)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None


def _tagged(fields: dict) -> dict:
    return {name: f for name, f in fields.items() if "tagged_by" in f.metadata}


def _tagged_section(f, data: dict, kwargs: dict, fields: dict, where: str):
    """The tagged field `f` built as the class its tag names (that class's defaults when absent from data)."""
    tag_field = f.metadata["tagged_by"]
    tag = kwargs.get(tag_field, fields[tag_field].default)
    classes = f.metadata["classes"]()
    if tag not in classes:
        raise ConfigError(f"{where}.{tag_field}: unknown {tag_field} {tag!r}; allowed: {', '.join(sorted(classes))}")
    cls, value, where = classes[tag], data.get(f.name), f"{where}.{f.name}"
    value = {} if value is None else value
    if isinstance(value, cls):
        return value
    names = {x.name for x in dataclasses.fields(cls) if x.init}
    unknown = sorted(set(value) - names) if isinstance(value, dict) else []
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for {tag_field} {tag!r} ({cls.__name__}); "
                          f"allowed: {', '.join(sorted(names))}")
    return from_dict(cls, value, where)


def to_dict(cfg) -> dict:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_file(path: str | Path) -> dict:
    """Read a .json, .toml or .yaml/.yml config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("YAML configs need PyYAML: pip install 'noisecraft[config]'") from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path}: unknown extension {suffix!r}; allowed: .json, .toml, .yaml, .yml")
    except ConfigError:
        raise
    except Exception as e:  # parse errors of any of the three formats
        raise ConfigError(f"config file {path} could not be parsed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a table/object")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 3e-4). Values are parsed as JSON, else kept as strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str], rewrite=None) -> dict:
    """Apply dotted `key=value` overrides to a nested dict (a copy is returned). rewrite(path, data, text), if
    given, may map a path to another before it is set (run configs: the network aliases of
    `runconfig.apply_run_overrides`)."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        if rewrite is not None:
            path = rewrite(path, data, text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data
