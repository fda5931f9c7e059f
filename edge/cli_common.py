"""What every ``ecgret`` verb shares (:mod:`edge.cli` and its command modules): the group that turns any error
into one line, the error text, status lines on stderr, NDJSON on stdout, and the bundle a verb loads.

Click code only. A closed stdout (``ecgret query ... | head -1``) ends the command quietly, exit code 0.
Every error a user can cause (:class:`~edge.errors.EcgretError`, the bridge's ``BridgeError``) is one line
on stderr and exit code 1; usage errors exit 2 (click).
"""

from __future__ import annotations

import json
import os
import sys

import click

from .errors import EcgretError
from .termtext import encodable, printable

MAX_ERROR_CHARS = 1000  # an error line is cut here (messages may quote files and arguments)


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is an error a user can cause (:class:`~edge.errors.EcgretError`, or the bridge's
    ``BridgeError`` when :mod:`firmware_bridge` is loaded): its message is the whole answer, no traceback."""
    if isinstance(e, EcgretError):
        return True
    fb = sys.modules.get("firmware_bridge.errors")
    return fb is not None and isinstance(e, fb.BridgeError)


def quiet_exit():
    """End quietly after the reader of stdout went away: later writes (and the flush at exit) go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def fail(msg: str, code: int = 1):
    """Print ``ecgret: error: MSG`` (printable) on stderr and exit with ``code``."""
    click.echo(f"ecgret: error: {printable(msg)}", err=True)
    sys.exit(code)


def short(msg: str) -> str:
    """An error message as one printable line of bounded length (messages can quote files and arguments)."""
    msg = encodable(str(msg))  # undecodable bytes: U+FFFD
    msg = " ".join("".join(c if c.isprintable() else " " for c in msg).split())  # no escapes, no line breaks
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[: MAX_ERROR_CHARS - 1] + "…"


def debug_on() -> bool:
    """Whether the global ``--debug`` flag is set (tracebacks of internal errors)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().params or {}).get("debug"))


def error_text(e: BaseException) -> str:
    """One line for any exception: the message of a user error, else an internal error that is a bug."""
    if is_user_error(e):
        return short(str(e))
    if isinstance(e, OSError):
        return short(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""))
    what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return short(
        f"internal error ({what[:200]}); this is a bug in ecgret, please report it"
        + ("" if debug_on() else " (run with --debug for the traceback)")
    )


class Group(click.Group):
    """Turns every error into one clear line and exit code 1, never a traceback (but under ``--debug`` for
    an internal error, which the line calls a bug)."""

    def invoke(self, ctx):
        """Run the command; click's own exits pass through, a broken pipe ends quietly (exit 0), any other
        exception becomes :func:`fail` with :func:`error_text` (exit 1)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`| head -1`): nothing to say, nobody to say it to
            quiet_exit()
        except Exception as e:  # noqa: BLE001 - the one catch-all: it names the error and says it is a bug
            if not (is_user_error(e) or isinstance(e, OSError)) and (ctx.params or {}).get("debug"):
                import traceback

                traceback.print_exc()
            fail(error_text(e))


def load_retriever(bundle_path, threads, overlay: bool = True):
    """A :class:`~edge.retrieval.Retriever` of the bundle, with the local overlay unless ``overlay`` is False
    (warnings about the bundle's trust and the overlay on stderr)."""
    from .bundle import load_bundle
    from .retrieval import Retriever

    b = load_bundle(bundle_path, threads=threads)
    if not b.trust.trusted:
        click.echo(f"ecgret: warning: bundle {b.hash}: {b.trust.describe()} (loaded with --allow-unsigned)", err=True)
    ov = None
    if overlay:
        from .overlay import Overlay

        ov = Overlay.for_bundle(b, strict=False)
        if ov.error:
            click.echo(f"ecgret: warning: local overlay ignored: {ov.error}", err=True)
        if ov.migrated_from:
            click.echo(f"ecgret: note: local overlay copied from {ov.migrated_from} to {ov.file}", err=True)
    return Retriever(b, overlay=ov)


def term_width() -> int:
    """The terminal's width (COLUMNS, else the terminal, else 100), 60 to 200 columns."""
    import shutil

    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 200))


def say(msg: str) -> None:
    """A status line on stderr."""
    click.echo(printable(msg), err=True)


def echo_json(obj: dict) -> None:
    """One JSON object on one line of stdout (NDJSON)."""
    out = json.dumps(obj, ensure_ascii=False)
    click.echo(encodable(out))  # a lone surrogate from a file name: U+FFFD


def error_obj(query: str, e: BaseException, st: dict | None = None) -> dict:
    """The NDJSON object of a query that failed: ``{"query", "ok": false, "error", "error_type"}`` plus the
    stamp ``st``."""
    return dict({"query": query, "ok": False, "error": str(e), "error_type": type(e).__name__}, **(st or {}))


def note_top_k(r, top_k: int) -> None:
    """Say so when --top-k asks for more cases than the archive (and the overlay) hold."""
    n = n_searchable(r)
    if top_k > n:
        n_local = len(r.overlay) if r.overlay is not None else 0
        say(
            f"ecgret: note: --top-k {top_k}: the archive holds {len(r.index):,} cases"
            + (f" and the overlay {n_local:,} local ones" if n_local else "")
            + f"; an answer lists at most {n:,}"
        )


def n_searchable(r) -> int:
    """How many cases a query of the retriever ``r`` can find: the archive's plus the overlay's."""
    return len(r.index) + (len(r.overlay) if r.overlay is not None else 0)


def note_fewer(res, top_k: int, r) -> None:
    """Say so when the approximate index gave fewer cases than asked for (and than the archive holds)."""
    want = min(top_k, n_searchable(r))
    if len(res.matches) < want:
        say(
            f"ecgret: note: {res.query}: the index returned {len(res.matches)} of the {want} cases asked for "
            "(Annoy's search is approximate)"
        )


def write_report_said(report_path, results, bundle) -> None:
    """Write the HTML report of ``results`` (:func:`edge.report.write_report`) and say where on stderr."""
    from .report import write_report

    write_report(report_path, results, bundle)
    say(f"report written to {report_path}")


def archive_ids(r) -> set:
    """The case ids of the bundle's archive."""
    return {c["case_id"] for c in r.cases}
