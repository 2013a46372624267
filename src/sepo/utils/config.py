"""Dataclass configs from YAML / dicts, validated up front with one-line actionable messages.

Every config in sepo is a dataclass whose docstring documents each field. :func:`from_dict` rejects
unknown fields (suggesting the closest valid name), checks types (``int``, ``float``, ``bool``, ``str``,
``Optional``, ``Literal``, ``list``, nested dataclasses) and turns ``ValueError`` raised by a
``__post_init__`` into a :class:`~sepo.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from sepo.errors import ConfigError

__all__ = ["from_dict", "to_dict", "load_yaml", "save_yaml", "merge_overrides"]


def _check(value: Any, tp: Any, name: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check(value, arg, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}: {value!r} is not a valid value ({'; '.join(errors) or 'None not allowed'})")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__} {value!r}")
        (arg, *_) = get_args(tp) or (Any,)
        return [_check(v, arg, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where=name)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads 1e-4 as a string
                except ValueError:
                    pass
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict | None, *, where: str | None = None):
    """Build dataclass ``cls`` from ``data``, validating names, types and values."""
    where = where or cls.__name__
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; valid fields: {', '.join(sorted(fields))}"
        raise ConfigError(f"{where}: unknown field {k!r}{hint}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path, cls=None, *, overrides: dict | None = None):
    """Read a YAML file (a mapping) and optionally build ``cls`` from it, with ``overrides`` applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of field: value")
    if overrides:
        data = merge_overrides(data, overrides)
    return from_dict(cls, data, where=path.name) if cls is not None else data


def merge_overrides(data: dict, overrides: dict) -> dict:
    """Shallow-merge ``overrides`` into ``data``; dotted keys reach nested maps.

    An explicit ``None`` (YAML ``null``, ``--set FIELD=null``) sets the field to ``None``: it is a value of
    many fields (e.g. ``kl_truncation_steps: null`` = the whole path). Callers holding "flag not given" as
    ``None`` drop those entries before merging."""
    out = dict(data)
    for k, v in overrides.items():
        head, _, rest = k.partition(".")
        if rest:
            out[head] = merge_overrides(dict(out.get(head) or {}), {rest: v})
        else:
            out[k] = v
    return out


def save_yaml(path: str | Path, obj) -> None:
    from sepo.utils.io import write_text

    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    write_text(path, yaml.safe_dump(data, sort_keys=False))
