"""TOML configuration, validated into typed dataclasses before anything starts.

Every process reads one section of a TOML file (`[node]`, `[gateway]`, `[prusa_connect]`, `[timelapse]`,
`[tracker]`, `[proxy]`) into its own frozen dataclass with `load_section`. The loader walks
the dataclass's type hints, so the dataclass *is* the schema:

- an unknown key, a missing required key or a value of the wrong type is a `ConfigError`
  whose `.path` names the key, e.g. `node.cameras[1].fps`, and says the type expected; the
  value itself is shown (shortened) only for keys that cannot hold a secret: a misplaced
  token or API key never reaches a log or a terminal through an error message;
- numbers may carry bounds with `bounded(default, lo, hi)`;
- a dataclass may check itself in `__post_init__` by raising `ConfigError("key", "why")` (or
  ValueError); the loader prefixes the path of the table it was building.

Supported field types: bool, int, float, str, Path, Literal[...], X | None, list[X],
tuple[X, ...], dict[str, X], dict[str, Any] (passed through as is) and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

T = TypeVar("T")

SECTIONS = frozenset({"node", "gateway", "prusa_connect", "tracker", "timelapse", "proxy", "demo"})


def bounded(default: Any = dataclasses.MISSING, lo: float | None = None, hi: float | None = None,
            **kwargs: Any) -> Any:
    """A dataclass field whose number must lie in [lo, hi]."""
    metadata = {"lo": lo, "hi": hi}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def check_unique(values: Sequence[Any], path: str, section: str = "") -> None:
    """Raise a ConfigError at `path[i]` for the first value that repeats an earlier one.

    `path` names the list and, after a '|', the key inside each item; `section` is only for
    the message. check_unique(ids, "cameras|id", "node") reports
    `cameras[2].id: duplicate 0 (first at node.cameras[0].id)`.
    """
    table, _, key = path.partition("|")
    suffix = f".{key}" if key else ""
    prefix = f"{section}." if section else ""
    first: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in first:
            shown = "value" if is_secret_key(key or table) else repr(value)
            raise ConfigError(f"{table}[{i}]{suffix}", f"duplicate {shown} "
                              f"(first at {prefix}{table}[{first[value]}]{suffix})")
        first[value] = i


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file as a dict; a missing or unparsable file is a ConfigError naming it."""
    file = Path(path)
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError("", f"config file {file} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{file} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {file}: {exc}") from exc


def load_section(path: str | Path | None, section: str, cls: type[T]) -> T:
    """Build `cls` from `[section]` of the TOML file at `path` (all defaults when path is None).

    Top-level tables other than the known sections are rejected, so a misspelt section name
    is an error, not a silently ignored block.
    """
    data: Mapping[str, Any] = {} if path is None else read_toml(path)
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(key, f"unknown section; expected one of {', '.join(sorted(SECTIONS))}")
    table = data.get(section, {})
    if not isinstance(table, Mapping):
        raise ConfigError(section, "must be a table")
    return build(cls, table, section)


def build(cls: type[T], table: Mapping[str, Any], path: str) -> T:
    """Build the dataclass `cls` from a mapping, checking every key and value."""
    if not isinstance(table, Mapping):
        raise ConfigError(path, f"expected a table, got {_kind(table, path)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(_join(path, key), f"unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(key_path, "required key is missing")
            continue
        value = convert(hints[name], table[name], key_path)
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if lo is not None and value is not None and value < lo:
            raise ConfigError(key_path, f"must be >= {lo}, got {_shown(value, key_path)}")
        if hi is not None and value is not None and value > hi:
            raise ConfigError(key_path, f"must be <= {hi}, got {_shown(value, key_path)}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(_join(path, exc.path), exc.message) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, str(exc)) from None


def convert(hint: Any, value: Any, path: str) -> Any:
    """Check `value` against the type `hint`; return it converted (Path, tuple, dataclass)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # `X | None`: X's own error, with its own key path
            return convert(options[0], value, path)
        errors = []
        for option in options:
            try:
                return convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(path, " or ".join(errors))
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in args)}, "
                                    f"got {_shown(value, path)}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_kind(value, path)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(path, f"expected a list of {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(convert(a, v, f"{path}[{i}]") for i, (a, v) in pairs)
        item = args[0] if args else Any
        items = [convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table, got {_kind(value, path)}")
        item = args[1] if args else Any
        return {str(k): convert(item, v, _join(path, str(k))) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_kind(value, path)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {_kind(value, path)}")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(path, f"expected a number, got {_kind(value, path)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_kind(value, path)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(path, f"expected a file path string, got {_kind(value, path)}")
        return Path(value).expanduser()
    raise ConfigError(path, f"unsupported field type {hint!r} (a bug in camfabric)")


def _join(path: str, key: str) -> str:
    if not path:
        return key
    if not key:
        return path
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


# Key names that may hold a secret (a Prusa Connect token, a Gemini API key, a password):
# their values are never repeated in an error. `*_file`/`*_dir`/`*_env` keys name where a
# secret lives, not the secret, and `api_key_env`-style names are safe to show.
SECRET_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential",
                "auth", "key")
SAFE_SUFFIXES = ("_file", "_dir", "_env", "_path")
MAX_SHOWN = 40


def is_secret_key(path: str) -> bool:
    """True when the last key of `path` (e.g. `tracker.gemini.api_key`) may hold a secret."""
    name = path.rsplit(".", 1)[-1].split("[", 1)[0].lower()
    if name.endswith(SAFE_SUFFIXES):
        return False
    return any(word in name for word in SECRET_WORDS)


def _shown(value: Any, path: str) -> str:
    """`value` as an error may show it: never for a secret-bearing key, shortened otherwise."""
    if is_secret_key(path):
        return f"a {type(value).__name__} (value not shown: the key may hold a secret)"
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}… ({len(text)} characters)"


def _kind(value: Any, path: str = "") -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if is_secret_key(path):
        return _shown(value, path)
    return f"{type(value).__name__} {_shown(value, path)}"
