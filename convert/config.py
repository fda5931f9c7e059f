"""Reading the toolkit's TOML configs: one reader, one typed coercion for every section, one fold grammar."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from edge.errors import ConfigError


def shipped_configs_dir() -> Path:
    """The configs that ship with the toolkit: ``convert/configs/`` in an installed wheel (package data built
    from the repository's ``configs/``), else ``<repo root>/configs`` in a checkout."""
    here = Path(__file__).resolve().parent / "configs"
    if here.is_dir():
        return here
    from edge.paths import repo_root

    return repo_root() / "configs"


def _shipped_fallback(p: Path) -> Path | None:
    """For a relative ``configs/NAME.toml`` that is not in the current folder: the shipped one, if any."""
    if p.is_absolute() or p.parent != Path("configs"):
        return None
    q = shipped_configs_dir() / p.name
    return q if q.is_file() else None


def read_toml(path) -> dict:
    """The TOML file as a dict; a missing or malformed file raises :class:`ConfigError` naming it. A relative
    ``configs/NAME.toml`` not in the current folder is read from :func:`shipped_configs_dir` (what a wheel
    install carries; ``ecgret-convert init`` copies them here to edit), with a note on stderr."""
    p = Path(path)
    if not p.exists() and (q := _shipped_fallback(p)) is not None:
        import sys

        print(
            f"ecgret-convert: {p} not in {Path.cwd()}; using the shipped {q} (ecgret-convert init copies "
            "the configs here to edit)",
            file=sys.stderr,
        )
        p = q
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: config file not found (ecgret-convert init writes the shipped configs to ./configs)"
        ) from None
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


def parse_folds(spec: str, option: str = "--folds") -> tuple[int, ...]:
    """A fold list as every command and config takes it: ``"1-9"``, ``"1,2,3"`` or both mixed (``"1-3,5"``), in
    that order. Folds are 0 to 1000 (what a bundle's manifest may hold, :data:`edge.schema.FOLD_RANGE`). Raises
    :class:`ConfigError` naming ``option``."""
    from edge.schema import FOLD_RANGE, printable

    lo, hi = FOLD_RANGE
    out: list[int] = []
    try:
        for part in str(spec).split(","):
            a, _, b = part.partition("-")
            first, last = int(a), int(b) if b else int(a)
            if not (lo <= first <= hi and lo <= last <= hi):
                raise ConfigError(f"{option} {printable(repr(spec), 80)}: folds are {lo} to {hi}")
            out.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"{option} {printable(repr(spec), 80)}: expected e.g. 1-9, 1,2,3 or 1-3,5") from None
    return tuple(out)
