"""Reading the toolkit's TOML configs: one reader and one typed coercion for every section."""
from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Mapping

from edge.errors import ConfigError


def read_toml(path) -> dict:
    """The TOML file as a dict; a missing or malformed file raises :class:`ConfigError` naming it."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def coerce(cls, d: Mapping, where: str, *, tuple_keys: tuple[str, ...] = ()) -> dict:
    """Check a TOML table against the dataclass ``cls``: unknown keys, and each value's type against the
    field's default (bool, int, float, str, tuple; ``tuple_keys`` are lists even where the default is
    None). Returns the keyword arguments for ``cls``; raises :class:`ConfigError` naming the key."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a table")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    base = cls()
    kw = {}
    for k, v in d.items():
        default = getattr(base, k)
        if isinstance(default, tuple) or (k in tuple_keys and v is not None):
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"{where}.{k}: expected a list, got {v!r}")
            try:
                v = tuple(int(x) for x in v)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{k}: expected a list of integers, got {v!r}") from None
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{where}.{k}: expected true/false, got {v!r}")
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise ConfigError(f"{where}.{k}: expected a string, got {v!r}")
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{where}.{k}: expected an integer, got {v!r}")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}.{k}: expected a number, got {v!r}")
            v = float(v)
        kw[k] = v
    return kw
