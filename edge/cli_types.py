"""The options the ``ecgret`` verbs share, each defined once so that it means the same thing on every verb
(``--seconds``, ``--leads``, ``--save``, ``--report``, ``--no-overlay``, ``--baud``, ``--board``, ``--json``,
``--top-k``, ``--fs``, ``--bundle``/``--allow-unsigned``, ``--threads``), and the click types that validate
their values (a bad value is a usage error, exit 2).

Click code only; the command modules of :mod:`edge.cli` use it.
"""

from __future__ import annotations

import math
import os

import click

from firmware_bridge.info import BOARDS, Board
from firmware_bridge.info import MAX_FS as MAX_BOARD_FS
from firmware_bridge.info import MAX_SECONDS as MAX_RECORDING_S
from firmware_bridge.info import MIN_FS as MIN_BOARD_FS

from .io_limits import MAX_FS, MIN_DURATION_S

__all__ = [
    "RATE",
    "SECONDS",
    "LEADS",
    "CHANNELS",
    "SPEED",
    "BAUD",
    "seconds_option",
    "leads_option",
    "save_option",
    "report_option",
    "overlay_option",
    "baud_option",
    "board_option",
    "json_option",
    "top_k_option",
    "count_option",
    "fs_option",
    "deprecated_alias",
    "bundle_option",
    "threads_option",
    "ENV_BUNDLE",
    "ENV_PORT",
]

ENV_BUNDLE = "ECGRET_BUNDLE"
ENV_PORT = "ECGRET_PORT"


class _Float(click.ParamType):
    """A finite float within [lo, hi] (``lo_open``: lo itself refused), named ``what`` in the message."""

    def __init__(self, name: str, what: str, lo: float, hi: float, lo_open: bool = False, unit: str = ""):
        self.name, self.what, self.lo, self.hi, self.lo_open, self.unit = name, what, lo, hi, lo_open, unit

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            x = value
        else:
            try:
                x = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        ok = math.isfinite(x) and (x > self.lo if self.lo_open else x >= self.lo) and x <= self.hi
        if not ok:
            lo = f"more than {self.lo:g}" if self.lo_open else f"at least {self.lo:g}"
            self.fail(f"{value}: {self.what} must be {lo} and at most {self.hi:g}{self.unit}", param, ctx)
        return x


RATE = _Float("hz", "a sampling rate", 0.0, MAX_FS, lo_open=True, unit=" Hz")  # no file can state more
BOARD_RATE = _Float("hz", "a board's sampling rate", MIN_BOARD_FS, MAX_BOARD_FS, unit=" Hz")
SECONDS = _Float("seconds", "a recording", MIN_DURATION_S, MAX_RECORDING_S, unit=" s")
SPEED = _Float("x", "the playback speed (0: as fast as it is read)", 0.0, 1000.0)
BAUD = click.IntRange(50, 12_000_000)


class _LeadSet(click.ParamType):
    """``--leads``: a named set (12, limb6, 3, I, II) or a comma list of lead names -> tuple of leads."""

    name = "set"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from .errors import ConfigError
        from .leads import parse_lead_set

        try:
            return parse_lead_set(str(value).strip())
        except ConfigError as e:
            self.fail(str(e), param, ctx)


class _Channels(click.ParamType):
    """``--channels``: comma-separated channel names a board does not tell (checked like a board's own)."""

    name = "names"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from firmware_bridge.info import check_channel_names

        from .termtext import printable

        names = tuple(c.strip() for c in str(value).split(","))
        try:
            return check_channel_names(names)
        except ValueError as e:
            self.fail(printable(e), param, ctx)


LEADS = _LeadSet()
CHANNELS = _Channels()


def _report_path(ctx, param, value):
    """The report must be writable where it is asked for, before any work: its folder exists, and the name is a new
    file or an earlier report (:func:`edge.report.refuse_target`)."""
    if value is None:
        return None
    from .report import refuse_target
    from .termtext import printable

    name = printable(value) if value else "''"
    why = refuse_target(value)
    if why:
        raise click.BadParameter(f"{name}: {why}", ctx=ctx, param=param)
    folder = os.path.dirname(os.path.abspath(value)) or "."
    if not os.path.isdir(folder):
        raise click.BadParameter(f"{name}: the folder {printable(folder)} does not exist", ctx=ctx, param=param)
    return value


def fs_option(
    help: str = "Sampling rate in Hz of files that do not state one (CSV/NPY); must agree with one that does.",
):
    """``--fs HZ`` (:data:`RATE`, default None: the file states it)."""
    return click.option("--fs", type=RATE, default=None, metavar="HZ", help=help)


def seconds_option(default: float = 10.0, help: str = "Seconds of each recording (2 s to 1 h)."):
    """``--seconds`` (:data:`SECONDS`: a reader's minimum duration up to a board's longest recording)."""
    return click.option("--seconds", type=SECONDS, default=default, show_default=True, help=help)


def leads_option(
    help: str = "Leads actually recorded: a set (12, limb6, 3 = I,II,V2, I, II) or a list like "
    "I,II,V2; the others are treated as missing.",
):
    """``--leads SET`` (:data:`LEADS`, passed as ``leads``: a tuple of canonical lead names, or None)."""
    return click.option("--leads", "leads", type=LEADS, default=None, metavar="SET", help=help)


def count_option(*decls: str, default: int, help: str, at_least: int = 0):
    """An option that counts something: a whole number of at least ``at_least``, its default shown."""
    return click.option(*decls, type=click.IntRange(min=at_least), default=default, show_default=True, help=help)


def top_k_option(f):
    """``--top-k N`` (at least 1, default 10): how many similar cases an answer lists."""
    return count_option(
        "--top-k",
        at_least=1,
        default=10,
        help="Similar cases to retrieve (at most the archive's size; a larger value says so).",
    )(f)


def json_option(f):
    """``--json`` (passed as ``as_json``): NDJSON on stdout instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object per line (NDJSON) on stdout instead of text."
    )(f)


def _path_option(name: str, dest: str, metavar: str, help: str, folder: bool = False, callback=None):
    """An optional path (a folder with ``folder``, else a file), passed as ``dest``; default None."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    return click.option(name, dest, type=kind, default=None, callback=callback, metavar=metavar, help=help)


def report_option(f):
    """``--report FILE.html`` (passed as ``report_path``; its folder must exist, checked before any work)."""
    return _path_option(
        "--report",
        "report_path",
        "FILE.html",
        "Also write the answers as one self-contained HTML page.",
        callback=_report_path,
    )(f)


def save_option(f):
    """``--save DIR`` (passed as ``save_dir``): keep each acquisition (:mod:`edge.save`)."""
    return _path_option(
        "--save",
        "save_dir",
        "DIR",
        "Keep each acquisition as a WFDB record plus its result JSON in DIR (never over an existing file).",
        folder=True,
    )(f)


def overlay_option(f):
    """``--overlay/--no-overlay`` (default on): search the locally enrolled cases too."""
    return click.option(
        "--overlay/--no-overlay", default=True, show_default=True, help="Search the locally enrolled cases too."
    )(f)


def baud_option(f):
    """``--baud BPS`` (:data:`BAUD`; default None: the board's own, :data:`firmware_bridge.boards.DEFAULT_BAUD`)."""
    return click.option(
        "--baud",
        type=BAUD,
        default=None,
        metavar="BPS",
        help="Serial baud rate (default per board: native 230400, cyton 115200, ascii 115200; a "
        "pseudo-terminal ignores it).",
    )(f)


def board_option(
    help: str = "Board protocol: native (ecgret framed), cyton (OpenBCI), ascii (one number per "
    "sample and channel, e.g. Arduino + AD8232).",
):
    """``--board`` (one of :data:`firmware_bridge.info.BOARDS`, default native)."""
    return click.option("--board", type=click.Choice(BOARDS), default=Board.NATIVE.value, show_default=True, help=help)


def deprecated_alias(old: str, new: str, type=None):
    """A hidden option ``old`` (its value passed as ``old`` without dashes) that warns it is deprecated in
    favour of ``new``; the command takes its value when ``new`` is not given."""

    def cb(ctx, param, value):
        if value is not None:
            click.echo(f"ecgret: warning: {old} is deprecated; use {new}", err=True)
        return value

    return click.option(
        old,
        old.lstrip("-").replace("-", "_"),
        type=type,
        default=None,
        hidden=True,
        callback=cb,
        help=f"Deprecated spelling of {new}.",
    )


def _trust_policy(ctx, param, allow):
    """Every command that loads a bundle requires a trusted signature unless --allow-unsigned (or
    $ECGRET_ALLOW_UNSIGNED) says otherwise; the flag is passed on to child processes (bench's cold starts)."""
    from .bundle import ENV_ALLOW_UNSIGNED, set_trust_policy

    set_trust_policy(require_trusted=not allow)
    if allow:
        os.environ[ENV_ALLOW_UNSIGNED] = "1"
    return allow


def bundle_option(f):
    """``--bundle PATH`` (env ECGRET_BUNDLE) and ``--allow-unsigned``: every verb that loads a bundle."""
    f = click.option(
        "--allow-unsigned",
        is_flag=True,
        envvar="ECGRET_ALLOW_UNSIGNED",
        expose_value=False,
        callback=_trust_policy,
        help="Load a bundle that is not signed by a trusted publisher (env ECGRET_ALLOW_UNSIGNED=1).",
    )(f)
    return click.option(
        "--bundle",
        "bundle_path",
        envvar=ENV_BUNDLE,
        default=None,
        metavar="PATH",
        help=f"Model bundle folder (default: the bundled one; env {ENV_BUNDLE}).",
    )(f)


MAX_THREADS = 1024  # past the interpreter's own int (2**31) it failed with a dump blaming the encoder


def threads_option(f):
    """``--threads N``: every verb that runs the encoder."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1, max=MAX_THREADS),
        default=None,
        help="Interpreter threads (default 1: the small encoder gains nothing from more).",
    )(f)
