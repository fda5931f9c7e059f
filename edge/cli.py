"""``ecgret``: query ECG records against a case archive, offline, on the device.

Verbs: ``query``, ``info``, ``bench``, ``demo``, ``listen``, ``enroll``, ``forget``, ``cases list|reembed|codes``
(and ``simulate``, ``ports`` from :mod:`edge.cli_board`). Click code only: the answer's wording is
:mod:`edge.answer`, acquisition :mod:`edge.acquire`, saving :mod:`edge.save`, labels :mod:`edge.labels`, the
shared options :mod:`edge.cli_types`. Imports are lazy: the process must start fast on a Pi.
A closed stdout (``ecgret query ... | head -1``) ends the command quietly, exit code 0.
Every error a user can cause (:class:`~edge.errors.EcgretError`, the bridge's ``BridgeError``) is one line
on stderr and exit code 1; usage errors exit 2 (click).
"""

from __future__ import annotations

import json
import os
import sys

import click

from .cli_types import (
    BOARD_RATE,
    CHANNELS,
    SPEED,
    baud_option,
    board_option,
    fs_option,
    json_option,
    leads_option,
    overlay_option,
    report_option,
    save_option,
    seconds_option,
    top_k_option,
)
from .errors import EcgretError
from .termtext import printable as _printable

ENV_BUNDLE = "ECGRET_BUNDLE"
ENV_PORT = "ECGRET_PORT"


def _is_user_error(e: BaseException) -> bool:
    if isinstance(e, EcgretError):
        return True
    fb = sys.modules.get("firmware_bridge.errors")
    return fb is not None and isinstance(e, fb.BridgeError)


def _quiet_exit():
    """End quietly after the reader of stdout went away: later writes (and the flush at exit) go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def _fail(msg: str, code: int = 1):
    click.echo(f"ecgret: error: {_printable(msg)}", err=True)
    sys.exit(code)


_MAX_ERROR_CHARS = 1000


def _short(msg: str) -> str:
    """An error message as one printable line of bounded length (messages can quote files and arguments)."""
    msg = str(msg).encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # undecodable bytes: U+FFFD
    msg = " ".join("".join(c if c.isprintable() else " " for c in msg).split())  # no escapes, no line breaks
    return msg if len(msg) <= _MAX_ERROR_CHARS else msg[: _MAX_ERROR_CHARS - 1] + "…"


def _debug() -> bool:
    """Whether the global ``--debug`` flag is set (tracebacks of internal errors)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().params or {}).get("debug"))


def _error_text(e: BaseException) -> str:
    """One line for any exception: the message of a user error, else an internal error that is a bug."""
    if _is_user_error(e):
        return _short(str(e))
    if isinstance(e, OSError):
        return _short(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""))
    what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return _short(
        f"internal error ({what[:200]}); this is a bug in ecgret, please report it"
        + ("" if _debug() else " (run with --debug for the traceback)")
    )


class _Group(click.Group):
    """Turns every error into one clear line and exit code 1, never a traceback (but under ``--debug`` for
    an internal error, which the line calls a bug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`| head -1`): nothing to say, nobody to say it to
            _quiet_exit()
        except Exception as e:  # noqa: BLE001 - the one catch-all: it names the error and says it is a bug
            if not (_is_user_error(e) or isinstance(e, OSError)) and (ctx.params or {}).get("debug"):
                import traceback

                traceback.print_exc()
            _fail(_error_text(e))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ecgret")
@click.option("--debug", is_flag=True, help="Print the traceback of an internal error (to report a bug).")
def main(debug):
    """Offline ECG case retrieval: find the archived cases most like a recording."""


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


def threads_option(f):
    """``--threads N``: every verb that runs the encoder."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="Interpreter threads (default 1: the small encoder gains nothing from more).",
    )(f)


def _load(bundle_path, threads, overlay: bool = True):
    """A :class:`~edge.pipeline.Retriever` of the bundle, with the local overlay unless ``overlay`` is False
    (warnings about the bundle's trust and the overlay on stderr)."""
    from .bundle import load_bundle
    from .pipeline import Retriever

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


# ------------------------------------------------------------------------------------------- printing


def _width() -> int:
    """The terminal's width (COLUMNS, else the terminal, else 100), 60 to 200 columns."""
    import shutil

    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 200))


def _say(msg: str) -> None:
    """A status line on stderr."""
    click.echo(_printable(msg), err=True)


def _echo_json(obj: dict) -> None:
    """One JSON object on one line of stdout (NDJSON)."""
    out = json.dumps(obj, ensure_ascii=False)
    click.echo(out.encode("utf-8", "replace").decode("utf-8"))  # a lone surrogate from a file name: "?"


def _error_obj(query: str, e: BaseException, st: dict | None = None) -> dict:
    return dict({"query": query, "ok": False, "error": str(e), "error_type": type(e).__name__}, **(st or {}))


def _note_top_k(r, top_k: int) -> None:
    """Say so when --top-k asks for more cases than the archive (and the overlay) hold."""
    n = _n_cases(r)
    if top_k > n:
        n_local = len(r.overlay) if r.overlay is not None else 0
        _say(
            f"ecgret: note: --top-k {top_k}: the archive holds {len(r.index):,} cases"
            + (f" and the overlay {n_local:,} local ones" if n_local else "")
            + f"; an answer lists at most {n:,}"
        )


def _n_cases(r) -> int:
    return len(r.index) + (len(r.overlay) if r.overlay is not None else 0)


def _note_fewer(res, top_k: int, r) -> None:
    """Say so when the approximate index gave fewer cases than asked for (and than the archive holds)."""
    want = min(top_k, _n_cases(r))
    if len(res.matches) < want:
        _say(
            f"ecgret: note: {res.query}: the index returned {len(res.matches)} of the {want} cases asked for "
            "(Annoy's search is approximate)"
        )


def _write_report(report_path, results, bundle) -> None:
    from .report import write_report

    write_report(report_path, results, bundle)
    _say(f"report written to {report_path}")


def _case_ids(r) -> set:
    return {c["case_id"] for c in r.cases}


# ------------------------------------------------------------------------------------------- query


@main.command()
@click.argument("files", nargs=-1, required=True)
@fs_option()
@leads_option()
@top_k_option
@json_option
@report_option
@overlay_option
@bundle_option
@threads_option
def query(files, fs, leads, top_k, as_json, report_path, overlay, bundle_path, threads):
    """Find the archived cases most like each FILE (WFDB .hea/.mat/.dat, CSV or NPY).

    Each answer leads with what was measured and the rhythm, then the similar past cases (not a diagnosis).
    A bad file gets one `ecgret: error:` line and the others are still answered; exit code 1 if any failed.
    """
    r = _load(bundle_path, threads, overlay)
    _note_top_k(r, top_k)
    from dataclasses import replace

    from .answer import archive_twin, format_result, result_dict, stamp
    from .io import read_record
    from .signal import PAD_S

    max_seconds = r.duration_s + PAD_S  # the seconds the device uses plus the filter's padding: no more is read
    ids, width = _case_ids(r), _width()
    results, failed = [], 0
    for path in files:  # every file is answered or gets one error line; the batch always goes on
        shown = _short(path)
        st = stamp(r.bundle)
        try:
            rec = read_record(path, fs=fs, max_seconds=max_seconds)
            res = replace(r.query_record(rec, leads=leads, top_k=top_k), query=shown)
            _note_fewer(res, top_k, r)
            twin = archive_twin(res, os.path.basename(str(path)), ids)
            out = (
                json.dumps(result_dict(res, st=st, twin=twin), ensure_ascii=False)
                if as_json
                else format_result(res, width=width, st=st, twin=twin) + "\n"
            )
            out = out.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate from a file name: "?"
        except Exception as e:  # noqa: BLE001 - user errors and bugs alike end this file only
            failed += 1
            msg = _error_text(e)
            if not msg.startswith(shown) and not msg.startswith(str(path)):
                msg = f"{shown}: {msg}"
            if _debug() and not (_is_user_error(e) or isinstance(e, OSError)):
                import traceback

                traceback.print_exc()
            click.echo(f"ecgret: error: {msg}", err=True)
            if as_json:
                _echo_json(dict(_error_obj(shown, e, st), error=msg))
            continue
        results.append(res)
        click.echo(out)
    if report_path:
        _write_report(report_path, results, r.bundle)
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------------------------------- info


def _runtime_text(rt: dict) -> str:
    """One line of :func:`edge.encoder.runtime_report` plus the CPU (``ecgret info``)."""
    cpu = rt.get("cpu") or {}
    interp = f"{rt['interpreter']} {rt['interpreter_version'] or ''}".strip() if rt["interpreter"] else "NONE"
    line = (
        f"interpreter {interp}, kernels {rt['kernels'] or '-'}, numpy {rt['numpy']}, Python {rt['python']}, "
        f"CPU {cpu.get('cpu', '?')} ({cpu.get('cores', '?')} cores, {cpu.get('machine', '?')})"
    )
    if rt.get("error"):
        line += (
            f"\n         ! {rt['error']}; queries cannot run until one is installed (the card below is the manifest's)"
        )
    return line


@main.command()
@json_option
@bundle_option
def info(as_json, bundle_path):
    """Show the bundle card: model, sizes, archive composition, evaluation."""
    from .bench import machine
    from .bundle import load_bundle
    from .encoder import runtime_report
    from .overlay import Overlay

    rt = dict(runtime_report(), cpu=machine())  # never fails: a missing interpreter is reported, not raised
    b = load_bundle(bundle_path, threads=1, check_encoder=rt["interpreter"] is not None)
    ov = Overlay.for_bundle(b, strict=False)
    if as_json:
        from .answer import stamp

        _echo_json(
            dict(
                b.manifest,
                path=str(b.path),
                hash=b.hash,
                id=b.id,
                trust=b.trust.to_dict(),
                overlay={"path": str(ov.file), "n_cases": len(ov), "error": ov.error},
                runtime=rt,
                **stamp(b),
            )
        )
        return
    m = b.manifest
    enc, idx, arc = m["encoder"], m["index"], m["archive"]
    size = {k: v["bytes"] for k, v in m["files"].items()}
    lines = [
        f"bundle   {m['name']}  (format {m['format_version']}, id {b.hash}, created {m['created']})",
        f"id       {b.id} (sha256 of manifest.json)",
        f"signed   {b.trust.describe()}" + ("" if b.trust.trusted else "; loaded with --allow-unsigned"),
        f"path     {b.path}",
        f"runtime  {_runtime_text(rt)}",
        f"encoder  {enc['input_shape']} {enc['input_dtype']} -> {enc['output_shape']} {enc['output_dtype']}, "
        f"{enc['quantization']}, {size['encoder.tflite'] / 1024:.0f} KiB"
        + (f", {enc['params']:,} params" if enc.get("params") else "")
        + (f", {enc['macs'] / 1e6:.1f} M MACs" if enc.get("macs") else "")
        + f"  [interpreter: {rt['interpreter'] or 'none'}]",
        f"imaging  mode {m['imaging'].get('mode')}, tile {m['imaging'].get('tile')}, shape {m['imaging'].get('shape')}",
        f"index    Annoy {idx['metric']}, dim {idx['dim']}, {idx['n_items']} items, {idx['n_trees']} trees, "
        f"search_k {idx['search_k']}, recall@10 {idx['recall_at_10']:.3f}, {size['index.ann'] / 1024:.0f} KiB",
        f"archive  {arc['n_cases']} cases, folds {arc.get('folds')}, sources "
        + ", ".join(f"{k} {v}" for k, v in arc.get("sources", {}).items()),
        "         superclasses " + ", ".join(f"{k} {v}" for k, v in arc.get("super_class_counts", {}).items()),
    ]
    if arc.get("rhythm_counts"):
        lines.append("         rhythms " + ", ".join(f"{k} {v}" for k, v in list(arc["rhythm_counts"].items())[:8]))
    lines.append(f"overlay  {len(ov)} enrolled case(s) in {ov.file}" + (f"  [IGNORED: {ov.error}]" if ov.error else ""))
    ev = m.get("evaluation")
    if ev and ev.get("table_markdown"):
        lines += ["", "evaluation", ev["table_markdown"].rstrip()]
    else:
        lines.append("evaluation  (none recorded in this bundle)")
    click.echo("\n".join(lines))


# ------------------------------------------------------------------------------------------- bench


@main.command()
@click.option(
    "--n",
    "n_records",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Real records to time (after a warm-up).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Queries run before timing starts (not timed).",
)
@click.option(
    "--cold-runs",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Cold starts to time (each spawns `ecgret query`).",
)
@json_option
@bundle_option
def bench(n_records, warmup, cold_runs, as_json, bundle_path):
    """Latency benchmark on real records: per stage, end to end, 1 thread and all cores, RSS, cold start."""
    from .answer import stamp
    from .bench import format_bench, run_bench
    from .bundle import load_bundle

    st = stamp(load_bundle(bundle_path, threads=1, check_encoder=False))
    res = run_bench(
        bundle_path, n_records=n_records, warmup=warmup, cold_runs=cold_runs, progress=lambda s: click.echo(s, err=True)
    )
    if as_json:
        _echo_json(dict(res, **st))
    else:
        from .answer import stamp_line

        click.echo(stamp_line(st) + "\n" + format_bench(res))


# ------------------------------------------------------------------------------------------- acquisition


def _acquire(url, board, seconds, *, baud=None, fs=None, channel_names=None, reconnect_timeout=10.0):
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
        )
    finally:
        prog.close()
    if acq is not None and acq.n_samples:
        _say(summary_line(acq))
    return acq, interrupted


def _answer(r, rec, lead_off, leads, top_k, as_json, save_dir=None, stem=None, twin_ids=()):
    """Query an acquired record, print it like `ecgret query`, optionally save record + result. The result
    (or None when it could not be answered)."""
    from .answer import archive_twin, format_result, result_dict, stamp

    st = stamp(r.bundle)
    try:
        res = r.query_record(rec, leads=leads, top_k=top_k, lead_off=lead_off)
        _note_fewer(res, top_k, r)
        twin = archive_twin(res, rec.name.split(":", 1)[-1], twin_ids) if twin_ids else None
        obj = result_dict(res, st=st, twin=twin)
    except EcgretError as e:
        res, twin, obj = None, None, _error_obj(rec.name, e, st)
        click.echo(f"ecgret: error: {_printable(e)}", err=True)
    if as_json:
        _echo_json(obj)
    elif res is not None:
        click.echo(format_result(res, width=_width(), st=st, twin=twin))
        click.echo("")
    if save_dir:
        _save(rec, obj, save_dir, stem)
    return res


def _save(rec, obj, save_dir, stem) -> None:
    from .save import save_acquisition

    p = save_acquisition(rec, obj, save_dir, stem)
    _say(f"saved {p}.hea and {p.name}.json")


@main.command()
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
    bundle_path,
    threads,
):
    """Acquire from a board and answer each recording like `ecgret query`.

    A recording cut short (the board lost for good, silent, or Ctrl-C) is answered on what arrived if that is
    at least 2 s, and saved with --save. Exit code 0 only when every recording was answered without a board
    error; otherwise 1 (each problem is one `ecgret: error:` line, and an `ok: false` line with --json).
    """
    import time

    from firmware_bridge.errors import BridgeError

    from .acquire import acq_to_record
    from .answer import stamp
    from .io_limits import MIN_DURATION_S

    r = _load(bundle_path, threads, overlay)
    _note_top_k(r, top_k)
    n = answered = problems = 0
    backoff = 1.0
    results = []

    def problem(query: str, msg, e=None) -> None:
        nonlocal problems
        problems += 1
        click.echo(f"ecgret: error: {_printable(msg)}", err=True)
        if as_json:
            _echo_json(_error_obj(query, e if e is not None else EcgretError(str(msg)), stamp(r.bundle)))

    try:
        while True:
            n += 1
            stamp_s = time.strftime("%Y%m%d-%H%M%S")
            query = f"{port}#{n}@{stamp_s}"
            err = None
            try:
                acq, interrupted = _acquire(
                    port, board, seconds, baud=baud, fs=fs, channel_names=channels, reconnect_timeout=reconnect_timeout
                )
            except BridgeError as e:
                err, acq, interrupted = e, e.acquisition, False
            got = acq.duration_s if acq is not None and acq.n_samples else 0.0
            if err is not None and got < MIN_DURATION_S:
                problem(query, err, err)
            elif err is not None:
                problems += 1
                click.echo(f"ecgret: error: {_printable(err)}; answering on the {got:.1f} s acquired", err=True)
            if got >= MIN_DURATION_S:
                rec, lo = acq_to_record(acq, query)
                res = _answer(r, rec, lo, leads, top_k, as_json, save_dir, f"ecg-{stamp_s}-{n:03d}")
                answered += res is not None
                problems += res is None
                if res is not None and report_path:
                    results.append(res)
                    from .report import write_report

                    write_report(report_path, results, r.bundle)  # rewritten whole after every recording
            elif acq is not None and acq.n_samples:
                msg = f"{query}: only {got:.2f} s acquired, under the {MIN_DURATION_S:g} s minimum; not answered"
                if save_dir:
                    rec, _ = acq_to_record(acq, query)
                    _save(rec, _error_obj(query, EcgretError(msg), stamp(r.bundle)), save_dir, f"ecg-{stamp_s}-{n:03d}")
                if interrupted and answered:  # Ctrl-C just after a recording: nothing lost, nothing wrong
                    _say(msg)
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
                _say(f"retrying {port} in {backoff:g} s (Ctrl-C to stop)")
                time.sleep(backoff)
                backoff = min(2 * backoff, 30.0)
            else:
                backoff = 1.0
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
    if report_path and results:
        _say(f"report written to {report_path} ({len(results)} recording(s))")
    if problems or not answered:
        sys.exit(1)


@main.command()
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
    r = _load(bundle_path, threads, overlay)
    _note_top_k(r, top_k)
    cols = pick_channels(src.leads, board)
    names = tuple(src.leads[j] for j in cols)
    name = os.path.basename(path).split(".")[0]
    _say(
        f"demo: a simulated {board} board streams {name} ({', '.join(names)}, {src.fs:g} Hz) over a "
        "pseudo-terminal; ecgret acquires it and answers"
    )
    if record_path is None:
        _say(
            f"demo: {DEFAULT_SAMPLE} is a CinC 2021 Georgia recording (sinus rhythm) that is not in the shipped "
            "archive, as a new patient's would be"
        )
    with Simulator(src.signal[:, cols], src.fs, names, board=board, speed=speed) as sim:
        acq, _ = _acquire(sim.port, board, seconds, baud=baud)
    if acq is None or acq.n_samples == 0:
        _fail("the simulated board delivered nothing")
    rec, lo = acq_to_record(acq, f"demo:{name}")
    res = _answer(r, rec, lo, leads, top_k, as_json, save_dir, f"demo-{name}", twin_ids=_case_ids(r))
    if res is None:
        sys.exit(1)
    from .answer import archive_twin

    if archive_twin(res, name, _case_ids(r)) is None:
        top = next((m for m in res.matches if m.source == "bundle"), None)
        _say(
            f"demo: {name} is not in the archive"
            + (f" (its most similar archive case, {top.case_id}, has similarity {top.score:.3f})" if top else "")
        )
    if report_path:
        _write_report(report_path, [res], r.bundle)


# ------------------------------------------------------------------------------------------- local cases


def _labels(ctx, param, value):
    """``--labels``: checked against the PTB-XL vocabulary (:func:`edge.labels.parse_labels`)."""
    value = _enroll_text(value, "--labels", 2000)
    if value is None:
        return None
    from .labels import LabelError, parse_labels

    try:
        return parse_labels(value)
    except LabelError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


@main.command()
@click.argument("file")
@click.option("--text", required=True, help="The confirmed report of this recording (not empty).")
@click.option(
    "--labels",
    callback=_labels,
    default=None,
    metavar="CODES",
    help="Comma-separated PTB-XL codes, e.g. IMI,SR or ASMI,1AVB,AFIB: superclasses, subclasses, "
    "statements, rhythms (a subclass brings its superclass; `ecgret cases codes` lists them).",
)
@click.option(
    "--statements",
    default=None,
    help="Statement line, e.g. 'sinus rhythm; inferior myocardial "
    "infarction' (default: the PTB-XL descriptions of --labels).",
)
@click.option("--id", "case_id", default=None, help="Case id (default: local:<n>, n never used before).")
@click.option("--force", is_flag=True, help="Enrol even if the same recording is enrolled already.")
@fs_option()
@leads_option()
@bundle_option
@threads_option
def enroll(file, text, labels, statements, case_id, force, fs, leads, bundle_path, threads):
    """Add a confirmed local case to the overlay archive searched with the bundle."""
    import time

    from .io import read_record
    from .labels import describe
    from .overlay import stored_signal

    text = _enroll_text(text, "--text", 20000, newlines=True)
    if not text.strip():
        raise click.BadParameter("is empty: give the confirmed report of this recording", param_hint="--text")
    statements = _enroll_text(statements, "--statements", 2000)
    case_id = _enroll_text(case_id, "--id", 64)
    if case_id is not None and (not case_id or any(c.isspace() for c in case_id)):
        raise click.BadParameter("a case id is 1..64 characters without spaces", param_hint="--id")
    lab = labels or {"super_class": [], "sub_class": [], "form": [], "rhythm": [], "statements": ""}
    r = _load(bundle_path, threads, overlay=True)
    rec = read_record(file, fs=fs)
    vec, quality, pre, _ = r.embed_record(rec, leads)
    record = os.fsencode(os.path.abspath(file)).decode("utf-8", "replace")  # a file name need not be UTF-8
    case = dict(
        super_class=lab["super_class"],
        sub_class=lab["sub_class"],
        form=lab["form"],
        rhythm=lab["rhythm"],
        report=text,
        statements=statements if statements is not None else lab["statements"],
        source="local",
        record=record,
        enrolled=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        signal=stored_signal(pre),
    )
    if case_id:
        case["case_id"] = case_id
    cid = r.overlay.enroll(case, vec, reserved_ids=_case_ids(r), force=force)
    codes = [*lab["rhythm"], *lab["super_class"], *lab["sub_class"], *lab["form"]]
    click.echo(
        _printable(
            f"enrolled {cid} in {r.overlay.file} ({len(r.overlay)} local case(s))"
            + (f": {', '.join(describe(c) for c in codes)}" if codes else "")
        )
    )


def _enroll_text(value, option: str, limit: int, newlines: bool = False):
    """A command-line string that becomes part of a clinical record: valid UTF-8 (undecodable bytes arrive as
    lone surrogates), at most ``limit`` characters, and free of control characters, escape sequences and
    bidi overrides (which would act on every terminal that later prints the case). Refused, not altered."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise click.BadParameter(
            "is not valid UTF-8 text (check the terminal's or the script's encoding)", param_hint=option
        ) from None
    if len(value) > limit:
        raise click.BadParameter(f"is {len(value):,} characters long; at most {limit:,}", param_hint=option)
    from .termtext import unsafe_chars

    bad = unsafe_chars(value.replace("\t", " ").replace("\r\n", "\n"), allow_newlines=newlines)
    if bad:
        shown = ", ".join(sorted({f"U+{ord(c):04X}" for c in bad})[:5])
        raise click.BadParameter(
            f"contains control characters ({shown}), e.g. a terminal escape sequence; remove them", param_hint=option
        )
    return value


@main.command()
@click.argument("case_ids", nargs=-1, required=True)
@bundle_option
def forget(case_ids, bundle_path):
    """Remove enrolled cases from the overlay (all the CASE_IDS or, if one is unknown, none)."""
    from .bundle import load_bundle
    from .overlay import Overlay

    b = load_bundle(bundle_path, threads=1)
    ov = Overlay.for_bundle(b)
    ov.forget(*case_ids)
    click.echo(_printable(f"forgot {', '.join(case_ids)} ({len(ov)} local case(s) left in {ov.file})"))


@main.group(cls=_Group)
def cases():
    """The local cases: list them, move them to a new bundle, list the label codes."""


def _case_summary(c: dict) -> dict:
    """An enrolled case for `cases list --json`: its fields with plain names, the signal described, not held."""
    from .labels import plain_name

    d = {k: v for k, v in c.items() if k != "signal"}
    codes = [*c.get("rhythm", []), *c.get("super_class", []), *c.get("sub_class", []), *c.get("form", [])]
    d["names"] = {x: plain_name(x) for x in codes}
    sig = c.get("signal")
    d["signal"] = (
        {"fs": sig["fs"], "leads": sig["leads"], "seconds": round(sig["shape"][0] / sig["fs"], 2)} if sig else None
    )
    return d


@cases.command("list")
@json_option
@bundle_option
def cases_list(as_json, bundle_path):
    """List the enrolled cases of the bundle's overlay."""
    from .answer import stamp
    from .bundle import load_bundle
    from .overlay import Overlay

    b = load_bundle(bundle_path, threads=1)
    ov = Overlay.for_bundle(b)
    if as_json:
        st = stamp(b)
        for c in ov.cases:
            _echo_json(dict(_case_summary(c), **st))
        return
    if not len(ov):
        _say(f"no enrolled cases in {ov.file}")
        return
    from .answer import _wrap
    from .labels import describe

    w = _width()
    click.echo(_printable(f"{len(ov)} enrolled case(s) in {ov.file}"))
    for c in ov.cases:
        d = _case_summary(c)
        sig = d["signal"]
        click.echo(
            _printable(
                f"{c['case_id']}  enrolled {c.get('enrolled') or '?'}  "
                + (
                    f"signal {', '.join(sig['leads'])} {sig['seconds']:g} s"
                    if sig
                    else "no signal stored (cannot be re-embedded)"
                )
            )
        )
        labels = ", ".join(describe(x) for x in d["names"]) or "no labels"
        for line in _wrap(labels, w - 4) + _wrap("report: " + (c.get("report") or ""), w - 4, 2):
            click.echo("    " + line)


@cases.command("reembed")
@click.option(
    "--from",
    "source",
    default=None,
    metavar="BUNDLE_ID|DIR",
    help="The overlay to move from: another bundle's id (or its overlay folder); default: the only "
    "other overlay that holds cases.",
)
@bundle_option
@threads_option
def cases_reembed(source, bundle_path, threads):
    """Move the local cases of another bundle (e.g. before an upgrade) to this bundle, embedding their stored
    signals with this bundle's encoder. The old overlay is left as it was."""
    from pathlib import Path

    from .bundle import load_bundle
    from .overlay import Overlay, other_overlays, overlay_dir, reembed
    from .pipeline import Retriever

    b = load_bundle(bundle_path, threads=threads or 1)
    target = Overlay.for_bundle(b)
    if source:
        src = Path(source) if os.sep in source or Path(source).is_dir() else overlay_dir(source)
        if not (src / "overlay.json").is_file():
            _fail(f"--from {source}: no overlay at {src}")
    else:
        found = other_overlays(b.id)
        if not found:
            _say(f"no other bundle's overlay with cases under {overlay_dir(b.id).parent}: nothing to move")
            return
        if len(found) > 1:
            _fail(
                "several overlays hold cases; choose one with --from: "
                + "; ".join(f"{d.name} ({n} case(s))" for d, n in found)
            )
        src = found[0][0]
    if src.resolve() == target.dir.resolve():
        _fail(f"--from {source}: that is this bundle's own overlay")
    rep = reembed(target, Retriever(b, measure=False), src, reserved_ids={c["case_id"] for c in b.cases})
    click.echo(
        _printable(
            f"moved {len(rep['moved'])} case(s) from {src} to {target.file}"
            + (f": {', '.join(rep['moved'])}" if rep["moved"] else "")
        )
    )
    if rep["present"]:
        _say(f"already here: {', '.join(rep['present'])}")
    for cid, why in rep["failed"]:
        click.echo(f"ecgret: error: {_printable(cid)}: not moved: {_printable(why)}", err=True)
    if rep["failed"]:
        sys.exit(1)


@cases.command("codes")
@json_option
def cases_codes(as_json):
    """List the PTB-XL codes `enroll --labels` takes, with their plain names."""
    from .labels import all_codes

    rows = all_codes()
    if as_json:
        for code, kind, name in rows:
            _echo_json({"code": code, "kind": kind, "name": name})
        return
    for code, kind, name in rows:
        click.echo(f"{code:<9} {kind:<22} {name}")


# ------------------------------------------------------------------------------------------- board verbs

from .cli_board import ports_cmd, simulate_cmd  # noqa: E402  (registered after the group exists)

main.add_command(simulate_cmd)
main.add_command(ports_cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
