"""
Typed settings: frozen dataclasses filled from TOML tables.

Each subsystem declares its settings as a frozen dataclass whose fields have
simple annotated types (C{int}, C{float}, C{bool}, C{str}, C{Optional[...]},
C{List[str]}, C{Tuple[str, ...]}) and defaults.  L{from_table} builds one
from a TOML table, naming the bad key and why when it refuses, so that a
broken configuration stops the start with a message a person can act on.

A dataclass may validate further in C{__post_init__} by raising
L{ConfigError}; L{from_table} prefixes the section to its message.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Type, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and why."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


def from_table(cls: Type[T], table: Mapping[str, Any] | None, section: str) -> T:
    """
    Build settings C{cls} from TOML C{table} (C{None}: all defaults).

    Unknown keys, wrong types and values refused by C{__post_init__} raise
    L{ConfigError} naming C{section.key}.  Keys may use dashes or
    underscores (C{silence-timeout} and C{silence_timeout} are the same).
    """
    table = dict(table or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for raw_key, value in table.items():
        name = raw_key.replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown setting (known: {known})", f"{section}.{raw_key}")
        values[name] = coerce(hints[name], value, f"{section}.{raw_key}")
    try:
        return cls(**values)
    except ConfigError as error:
        if error.key and not error.key.startswith(section + "."):
            raise ConfigError(str(error).split(": ", 1)[-1], f"{section}.{error.key}") from None
        raise


_SECRET_KEY_WORDS = ("password", "passphrase", "secret", "token", "private_key")


def _shown(value: Any, key: str) -> str:
    """How a refused value appears in a message: never the value of a secret."""
    name = key.rsplit(".", 1)[-1].lower()
    if any(word in name for word in _SECRET_KEY_WORDS) and not name.endswith("_file"):
        return f"{type(value).__name__} (value hidden)"
    return repr(value)


def coerce(annotation: Any, value: Any, key: str) -> Any:
    """Check C{value} against C{annotation}; convert lists to tuples for frozen settings."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"expected {_describe(annotation)}, got {_shown(value, key)}", key)
    if origin in (list, tuple, typing.List, typing.Tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {_shown(value, key)}", key)
        item_type = args[0] if args else Any
        items = [coerce(item_type, item, f"{key}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple or annotation is tuple else items
    if origin in (dict, typing.Dict) or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_shown(value, key)}", key)
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_shown(value, key)}", key)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected a whole number, got {_shown(value, key)}", key)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {_shown(value, key)}", key)
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {_shown(value, key)}", key)
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_shown(value, key)}", key)
        return from_table(annotation, value, key)
    if isinstance(annotation, type) and issubclass(annotation, __import__("enum").Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in annotation)
            raise ConfigError(f"expected one of {choices}, got {_shown(value, key)}", key) from None
    raise ConfigError(f"unsupported setting type {annotation!r}", key)


def _describe(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)) for a in args]
    return " or ".join(names) + " or nothing"


def positive(value: float, key: str) -> None:
    """Refuse zero and negative values for C{key}."""
    if value <= 0:
        raise ConfigError(f"must be greater than 0, got {_shown(value, key)}", key)


def at_least(value: float, minimum: float, key: str) -> None:
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {_shown(value, key)}", key)
