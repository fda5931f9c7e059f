"""``ecgret listen`` and ``ecgret demo``: acquire from a board (a real one, or a simulated one on a pty) and
answer each recording like ``ecgret query``. Click code only: acquisition is :mod:`edge.acquire`, saving
:mod:`edge.save`.
"""

from __future__ import annotations

import os
import sys

import click

from .cli_common import (
    archive_ids,
    echo_json,
    error_obj,
    fail,
    load_retriever,
    note_fewer,
    note_top_k,
    say,
    term_width,
    write_report_said,
)
from .cli_types import (
    BOARD_RATE,
    CHANNELS,
    ENV_PORT,
    SPEED,
    baud_option,
    board_option,
    bundle_option,
    json_option,
    leads_option,
    overlay_option,
    report_option,
    save_option,
    seconds_option,
    threads_option,
    top_k_option,
)
from .errors import EcgretError
from .termtext import printable

__all__ = ["listen", "demo"]


def _acquire(url, board, seconds, *, baud=None, fs=None, channel_names=None, reconnect_timeout=10.0, check_rate=False):
    """Acquire with progress on a terminal and the acquisition line after; (acquisition, interrupted)."""
    from .acquire import Progress, acquire_interruptible, summary_line

    prog = Progress(f"acquiring {seconds:g} s from {url}")
    try:
        acq, interrupted = acquire_interruptible(
            on_interrupt=lambda: click.echo("\ninterrupted: stopping the acquisition ...", err=True),
            url=url,
            board=board,
            seconds=seconds,
            baud=baud,
            fs=fs,
            channel_names=channel_names,
            on_progress=prog,
            reconnect_timeout=reconnect_timeout,
            check_rate=check_rate,
        )
    finally:
        prog.close()
    if acq is not None and acq.n_samples:
        say(summary_line(acq))
    return acq, interrupted


def _stop_on_sigterm() -> None:
    """SIGTERM (``systemctl stop``, ``kill``) ends ``listen`` as Ctrl-C does: what arrived is answered and saved (it
    killed the process with nothing kept)."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _answer(r, rec, lead_off, leads, top_k, as_json, save_dir=None, stem=None, twin_ids=()):
    """Query an acquired record, print it like `ecgret query`, optionally save record + result. The result
    (or None when it could not be answered)."""
    from .answer import archive_twin, format_result, result_dict, stamp

    st = stamp(r.bundle)
    try:
        res = r.query_record(rec, leads=leads, top_k=top_k, lead_off=lead_off)
        note_fewer(res, top_k, r)
        twin = archive_twin(res, rec.name.split(":", 1)[-1], twin_ids) if twin_ids else None
        obj = result_dict(res, st=st, twin=twin)
    except EcgretError as e:
        res, twin, obj = None, None, error_obj(rec.name, e, st)
        click.echo(f"ecgret: error: {printable(e)}", err=True)
    if as_json:
        echo_json(obj)
    elif res is not None:
        click.echo(format_result(res, width=term_width(), st=st, twin=twin))
        click.echo("")
    if save_dir:
        _save(rec, obj, save_dir, stem)
    return res


def _save(rec, obj, save_dir, stem) -> None:
    from .save import save_acquisition

    p = save_acquisition(rec, obj, save_dir, stem)
    say(f"saved {p}.hea and {p.name}.json")


@click.command()
@click.option(
    "--port", envvar=ENV_PORT, required=True, metavar="URL", help=f"Serial port or pyserial URL (env {ENV_PORT})."
)
@board_option()
@baud_option
@seconds_option()
@click.option(
    "--loop",
    is_flag=True,
    help="Keep acquiring and answering until Ctrl-C; a board error is reported "
    "and the board reopened (with backoff) for the next recording.",
)
@save_option
@click.option(
    "--fs",
    type=BOARD_RATE,
    default=None,
    metavar="HZ",
    help="Sampling rate of an ASCII board that does not print it (must agree with one that does).",
)
@click.option(
    "--channels", type=CHANNELS, default=None, help="Channel names of a board that does not tell them (comma list)."
)
@leads_option("Leads actually attached (see `ecgret query --leads`); the others are treated as missing.")
@top_k_option
@json_option
@report_option
@overlay_option
@click.option(
    "--reconnect-timeout",
    type=click.FloatRange(min=0.0, max=600.0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a board that vanished mid-recording to come back.",
)
@click.option(
    "--any-speed",
    is_flag=True,
    help="Do not check that samples arrive at the stated rate (a simulator replaying faster or slower than real "
    "time); otherwise a recording that arrived 1.25 x faster or slower is refused: its rate is wrong.",
)
@bundle_option
@threads_option
def listen(
    port,
    board,
    baud,
    seconds,
    loop,
    save_dir,
    fs,
    channels,
    leads,
    top_k,
    as_json,
    report_path,
    overlay,
    reconnect_timeout,
    any_speed,
    bundle_path,
    threads,
):
    """Acquire from a board and answer each recording like `ecgret query`.

    A recording cut short (the board lost for good, silent, or Ctrl-C) is answered on what arrived if that is
    at least 2 s, and saved with --save. Exit code 0 only when every recording was answered without a board
    error; otherwise 1 (each problem is one `ecgret: error:` line, and an `ok: false` line with --json).
    """
    import time

    from firmware_bridge.errors import BridgeError, RateMismatchError

    from .acquire import acq_to_record
    from .answer import stamp
    from .io_limits import MIN_DURATION_S

    r = load_retriever(bundle_path, threads, overlay)
    note_top_k(r, top_k)
    if save_dir:
        from .save import check_save_dir

        check_save_dir(save_dir)
    _stop_on_sigterm()
    n = answered = problems = 0
    backoff = 1.0
    from collections import deque

    from .report import MAX_QUERIES

    results: deque = deque(maxlen=MAX_QUERIES)  # the page holds the last MAX_QUERIES recordings (memory stays flat)
    n_reported = 0

    def problem(query: str, msg, e=None) -> None:
        nonlocal problems
        problems += 1
        click.echo(f"ecgret: error: {printable(msg)}", err=True)
        if as_json:
            echo_json(error_obj(query, e if e is not None else EcgretError(str(msg)), stamp(r.bundle)))

    try:
        while True:
            n += 1
            stamp_s = time.strftime("%Y%m%d-%H%M%S")
            query = f"{port}#{n}@{stamp_s}"
            err = None
            try:
                acq, interrupted = _acquire(
                    port,
                    board,
                    seconds,
                    baud=baud,
                    fs=fs,
                    channel_names=channels,
                    reconnect_timeout=reconnect_timeout,
                    check_rate=not any_speed,
                )
            except BridgeError as e:
                err, acq, interrupted = e, e.acquisition, False
            got = acq.duration_s if acq is not None and acq.n_samples else 0.0
            if isinstance(err, RateMismatchError):  # whole, but at a wrong rate: kept (--save), not answered
                problem(query, err, err)
                if save_dir and got:
                    rec, _ = acq_to_record(acq, query)
                    _save(rec, error_obj(query, err, stamp(r.bundle)), save_dir, f"ecg-{stamp_s}-{n:03d}")
                got = 0.0
                acq = None
            elif err is not None and got < MIN_DURATION_S:
                problem(query, err, err)
            elif err is None and acq is not None and (acq.stats or {}).get("events"):
                ev = acq.stats["events"]  # the board said something went wrong while it recorded: answered, said
                problems += 1
                click.echo(
                    f"ecgret: error: {query}: the board reported {printable('; '.join(ev[-3:]))[:300]}", err=True
                )
            elif err is not None:
                problems += 1
                click.echo(f"ecgret: error: {printable(err)}; answering on the {got:.1f} s acquired", err=True)
            if got >= MIN_DURATION_S:
                rec, lo = acq_to_record(acq, query)
                res = _answer(r, rec, lo, leads, top_k, as_json, save_dir, f"ecg-{stamp_s}-{n:03d}")
                answered += res is not None
                problems += res is None
                if res is not None and report_path:
                    results.append(res)
                    n_reported += 1
                    from .report import write_report

                    write_report(report_path, list(results), r.bundle)  # rewritten whole after every recording
            elif acq is not None and acq.n_samples:
                msg = f"{query}: only {got:.2f} s acquired, under the {MIN_DURATION_S:g} s minimum; not answered"
                if save_dir:
                    rec, _ = acq_to_record(acq, query)
                    _save(rec, error_obj(query, EcgretError(msg), stamp(r.bundle)), save_dir, f"ecg-{stamp_s}-{n:03d}")
                if interrupted and answered:  # Ctrl-C just after a recording: nothing lost, nothing wrong
                    say(msg)
                elif err is None:
                    problem(query, msg)
            elif err is None:
                problem(
                    query,
                    f"{query}: the board delivered no samples" + (" before the interruption" if interrupted else ""),
                )
            if interrupted or not loop:
                break
            if err is not None:  # reopen the board after a pause that grows while it keeps failing
                say(f"retrying {port} in {backoff:g} s (Ctrl-C to stop)")
                time.sleep(backoff)
                backoff = min(2 * backoff, 30.0)
            else:
                backoff = 1.0
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
    if report_path and results:
        held = f"the last {len(results)} of {n_reported}" if n_reported > len(results) else f"{len(results)}"
        say(f"report written to {report_path} ({held} recording(s))")
    if problems or not answered:
        sys.exit(1)


@click.command()
@click.option(
    "--record",
    "record_path",
    default=None,
    metavar="PATH",
    help="Recording the simulated board plays (default: the shipped sample E07506, not in the archive).",
)
@board_option("Board the simulator impersonates: native, cyton (8 leads each) or ascii (lead II alone).")
@baud_option
@seconds_option()
@click.option(
    "--speed",
    type=SPEED,
    default=1.0,
    show_default=True,
    help="Playback speed of the simulated board (0: as fast as it is read).",
)
@leads_option("Leads to query with (see `ecgret query --leads`); the others are treated as missing.")
@top_k_option
@json_option
@report_option
@save_option
@overlay_option
@bundle_option
@threads_option
def demo(
    record_path,
    board,
    baud,
    seconds,
    speed,
    leads,
    top_k,
    as_json,
    report_path,
    save_dir,
    overlay,
    bundle_path,
    threads,
):
    """The whole job without hardware: a simulated board streams a real recording over a pty, ecgret
    acquires it, queries the archive and prints the answer."""
    from firmware_bridge.simulator import Simulator

    from .acquire import acq_to_record, pick_channels
    from .io import read_record
    from .paths import DEFAULT_SAMPLE, default_record

    path = record_path or str(default_record())
    src = read_record(path)
    r = load_retriever(bundle_path, threads, overlay)
    note_top_k(r, top_k)
    if save_dir:
        from .save import check_save_dir

        check_save_dir(save_dir)
    cols = pick_channels(src.leads, board)
    names = tuple(src.leads[j] for j in cols)
    name = os.path.basename(path).split(".")[0]
    say(
        f"demo: a simulated {board} board streams {name} ({', '.join(names)}, {src.fs:g} Hz) over a "
        "pseudo-terminal; ecgret acquires it and answers"
    )
    if record_path is None:
        say(
            f"demo: {DEFAULT_SAMPLE} is a CinC 2021 Georgia recording (sinus rhythm) that is not in the shipped "
            "archive, as a new patient's would be"
        )
    with Simulator(src.signal[:, cols], src.fs, names, board=board, speed=speed) as sim:
        acq, _ = _acquire(sim.port, board, seconds, baud=baud)
    if acq is None or acq.n_samples == 0:
        fail("the simulated board delivered nothing")
    rec, lo = acq_to_record(acq, f"demo:{name}")
    res = _answer(r, rec, lo, leads, top_k, as_json, save_dir, f"demo-{name}", twin_ids=archive_ids(r))
    if res is None:
        sys.exit(1)
    from .answer import archive_twin

    if archive_twin(res, name, archive_ids(r)) is None:
        top = next((m for m in res.matches if m.source == "bundle"), None)
        say(
            f"demo: {name} is not in the archive"
            + (f" (its most similar archive case, {top.case_id}, has similarity {top.score:.3f})" if top else "")
        )
    if report_path:
        write_report_said(report_path, [res], r.bundle)
