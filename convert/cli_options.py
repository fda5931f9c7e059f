"""What the ``ecgret-convert`` commands share: the options and the argument several of them take, defined once,
option values a user can get wrong, and the one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import click

from edge.errors import ConfigError, EcgretError

from .config import parse_folds


def path_option(*decls: str, help: str, kind: str = "any", exists: bool = False, **kw):
    """An option naming a path, default None: ``kind`` ``"file"`` or ``"folder"`` refuses the other kind, ``exists``
    refuses a path that is not there; ``kw``: click's other settings (``envvar``, ...)."""
    path = click.Path(exists=exists, file_okay=kind != "folder", dir_okay=kind != "file")
    return click.option(*decls, type=path, default=None, help=help, **kw)


def choice_option(name: str, choices: Sequence[str], help: str):
    """An option taking one of ``choices``, the first by default (shown in the help)."""
    return click.option(name, type=click.Choice(choices), default=choices[0], show_default=True, help=help)


def count_option(*decls: str, help: str):
    """An option counting something (a whole number, at least 1), default None: the command's own."""
    return click.option(*decls, type=click.IntRange(min=1), default=None, help=help)


bundle_argument = click.argument("bundle", type=click.Path(exists=True, file_okay=False))
subset_data_option = path_option(
    "--data",
    "data_dir",
    kind="folder",
    exists=True,
    help="The PTB-XL subset folder the bundle's archive came from (default: the shared data).",
)


def folds_option(spec: str | None, option: str = "--folds") -> tuple[int, ...] | None:
    """The folds an option names (:func:`convert.config.parse_folds`); None when it is not given. A malformed
    list is a usage error (exit 2) naming the option."""
    if spec is None:
        return None
    try:
        return parse_folds(spec, option)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


def click_error(e: EcgretError) -> NoReturn:
    """A toolkit error as click's one-line error (exit 1)."""
    raise click.ClickException(str(e)) from None


@contextmanager
def click_errors() -> Iterator[None]:
    """A toolkit error raised inside the block as click's one-line error (exit 1, :func:`click_error`)."""
    try:
        yield
    except EcgretError as e:
        click_error(e)


def error_line(line: str) -> None:
    """Print ``ecgret-convert: error: LINE`` on stderr (no exit)."""
    click.echo(f"ecgret-convert: error: {line}", err=True)


def exit_error(e: EcgretError) -> NoReturn:
    """A toolkit error as ``ecgret-convert: error: ...`` on stderr, exit 1."""
    error_line(str(e))
    sys.exit(1)
