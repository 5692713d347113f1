"""YAML configs with `base:` inheritance, validated into frozen dataclasses.

A config file is a YAML mapping. An optional top-level `base:` (a path or a
list of paths, relative to the file that names it) is loaded first and the
file's own keys are deep-merged over it (mappings merge, everything else
replaces). `--set a.b=value` overrides are applied last; `value` is parsed
as YAML (`5` -> int, `1e-3` -> float, `[1, 2]` -> list, `null` -> None).

The merged mapping is validated against a (nested) frozen dataclass schema:
unknown keys and wrong types raise `ConfigError` naming the dotted key and the
file (or `--set`) that supplied it. Usage::

    cfg = load_config("configs/kg/atth_wn18rr.yaml", KGConfig, ["train.epochs=5"])
    print(dump_config(cfg))
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

import yaml

from geofm.errors import UserError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "Spec",
    "load_yaml_tree",
    "parse_override",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "check_config",
    "check_sequence",
    "dump_config",
    "load_config",
]


class ConfigError(UserError, ValueError):
    """A config file, override or value that does not fit the schema."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A registry choice: `{"name": ..., "kwargs": {...}}` (see DESIGN.md)."""

    name: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- loading ---


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {err}") from None
    if data is None:  # an empty (or comments-only) file would silently run every default
        raise ConfigError(f"{path}: the config file is empty; write the settings to change (a file may "
                          "hold just `base: <file>`)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(
    dst: dict[str, Any],
    src: Mapping[str, Any],
    origins: dict[str, str],
    src_origins: Mapping[str, str],
    default_origin: str,
    prefix: str = "",
) -> None:
    """Deep-merge `src` into `dst` in place; `origins[dotted key]` = file that set it last."""
    for key, val in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(val, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], val, origins, src_origins, default_origin, dotted + ".")
            continue
        dst[key] = _deepcopy(val)
        for k in [k for k in origins if k.startswith(dotted + ".")]:
            del origins[k]
        origins[dotted] = src_origins.get(dotted, default_origin)
        if isinstance(val, dict):
            for k, v in _flat_keys(val, dotted + "."):
                origins[k] = src_origins.get(k, default_origin)


def _flat_keys(tree: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out = []
    for key, val in tree.items():
        out.append((f"{prefix}{key}", val))
        if isinstance(val, dict):
            out += _flat_keys(val, f"{prefix}{key}.")
    return out


def _deepcopy(val: Any) -> Any:
    if isinstance(val, dict):
        return {k: _deepcopy(v) for k, v in val.items()}
    if isinstance(val, list):
        return [_deepcopy(v) for v in val]
    return val


def load_yaml_tree(path: str | Path, _stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Load `path` with its `base:` chain resolved.

    Returns (merged mapping, origins) where origins maps each dotted key to the
    file that set it last.
    """
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"circular `base:` inheritance: {chain}")
    raw = _read_yaml(path)
    bases = raw.pop("base", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: `base:` must be a path or a list of paths")
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for base in bases:
        base_tree, base_origins = load_yaml_tree(path.parent / base, (*_stack, path))
        _merge(merged, base_tree, origins, base_origins, str(path.parent / base))
    _merge(merged, raw, origins, {}, str(path))
    return merged, origins


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` into (["a","b","c"], yaml-typed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE (e.g. train.epochs=5)")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {text!r}: empty key component")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from None
    return parts, parsed


def apply_overrides(tree: dict[str, Any], overrides: list[str], origins: dict[str, str] | None = None) -> None:
    """Apply `--set` overrides to a raw mapping in place."""
    for item in overrides:
        parts, value = parse_override(item)
        node = tree
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
        if origins is not None:
            dotted = ".".join(parts)
            for k in [k for k in origins if k == dotted or k.startswith(dotted + ".")]:
                del origins[k]
            origins[dotted] = f"--set {item}"


# ------------------------------------------------------------- validation ---


def _where(key: str, origins: Mapping[str, str]) -> str:
    """" (from FILE:LINE or --set ...)" of `key`, an enclosing key, or else a key under it."""
    probe = key
    while probe:
        if origins.get(probe):
            return f" (from {origins[probe]})"
        probe = probe.rpartition(".")[0]
    below = [origins[k] for k in origins if k.startswith(key + ".") and origins[k]]
    return f" (from {below[0]})" if below else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, origins: Mapping[str, str]) -> Any:
    """Check/convert one value against a type hint; raise ConfigError naming `key`."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"config key {key!r}{_where(key, origins)}: {msg}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar from Python code
        value = value.item()
    if tp is str and isinstance(value, Path):  # a config built in Python may hold paths
        value = str(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, origins)
            except ConfigError as err:
                errors.append(str(err))
        raise fail(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise fail(f"expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key + ".", origins)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(f"expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise fail(f"expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail(f"expected str, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail(f"expected a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise fail(f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]", origins) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]", origins) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise fail(f"expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _convert(v, val_tp, f"{key}.{k}", origins) for k, v in value.items()}
    raise fail(f"unsupported schema type {_type_name(tp)}")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, origins: Mapping[str, str]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = prefix + str(unknown[0])
        raise ConfigError(
            f"unknown config key {key!r}{_where(key, origins)}; "
            f"known keys of {prefix.rstrip('.') or 'the top level'}: {sorted(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            value = data[name]
            default = f.default if f.default is not dataclasses.MISSING else None
            if default is None and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            if dataclasses.is_dataclass(default) and isinstance(value, dict):
                value = _deep_update(to_dict(default), value)  # partial override of a default
            kwargs[name] = _convert(value, hints[name], prefix + name, origins)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {prefix + name!r}")
    return cls(**kwargs)


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> T:
    """Validate a raw mapping into dataclass `cls` (nested dataclasses allowed)."""
    return _build(cls, data, "", origins or {})


def check_sequence(value: Any, name: str, item: type | tuple[type, ...] | None = None) -> list[Any]:
    """``value`` as a list; TypeError naming ``name`` when it is a bare string (whose
    characters would be iterated), not a list/tuple, or (with ``item``) holds another type."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a list, got the single string {value!r}: wrap it in a list")
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    if item is not None:
        for i, v in enumerate(value):
            if not isinstance(v, item) or (item is int and isinstance(v, bool)):
                kinds = "/".join(t.__name__ for t in (item if isinstance(item, tuple) else (item,)))
                raise TypeError(f"{name}[{i}] must be {kinds}, got {type(v).__name__}")
    return list(value)


def check_config(cfg: Any, cls: type, what: str) -> None:
    """Entry-point check of a config built in Python (which skips `load_config`'s checks):
    TypeError unless ``cfg`` is a ``cls``; ConfigError naming the key when a value does not
    match its field's type (e.g. a bare string where a list of names belongs). what: the
    function's name, for the message."""
    if not isinstance(cfg, cls):
        raise TypeError(f"{what}: expected a {cls.__name__} (e.g. geofm.config.load_config(PATH, {cls.__name__})), "
                        f"got {type(cfg).__name__}")
    try:
        from_dict(cls, to_dict(cfg))
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from None


def to_dict(cfg: Any) -> Any:
    """A dataclass config (or any nesting of them) as plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML (loads back to an equal config)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def load_config(path: str | Path, cls: type[T], overrides: list[str] | None = None) -> T:
    """Load a YAML file (with `base:` chain), apply `--set` overrides, validate into `cls`."""
    tree, origins = load_yaml_tree(path)
    apply_overrides(tree, check_sequence(overrides or [], "overrides", str), origins)
    return from_dict(cls, tree, origins)
