"""What the ``ecgret-convert`` commands share: option values a user can get wrong, and the one-line errors."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from edge.errors import ConfigError, EcgretError

from .config import parse_folds

subset_data_option = click.option(
    "--data",
    "data_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False),
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


def error_line(line: str) -> None:
    click.echo(f"ecgret-convert: error: {line}", err=True)


def exit_error(e: EcgretError) -> NoReturn:
    """A toolkit error as ``ecgret-convert: error: ...`` on stderr, exit 1."""
    error_line(str(e))
    sys.exit(1)
