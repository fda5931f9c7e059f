"""``ecgret``: query ECG records against a case archive, offline, on the device.

Verbs: ``query``, ``info``, ``bench``, ``demo``, ``enroll``, ``forget``, ``listen`` (and ``simulate``,
``ports`` from :mod:`edge.cli_board`). Imports are lazy: the process must start fast on a Pi.
Every error a user can cause (:class:`~edge.errors.EcgretError`, the bridge's ``BridgeError``) is one line
on stderr and exit code 1; usage errors exit 2 (click).
"""
from __future__ import annotations

import json
import os
import sys

import click

from .errors import EcgretError
from .termtext import printable as _printable

ENV_BUNDLE = "ECGRET_BUNDLE"
ENV_PORT = "ECGRET_PORT"


def _is_user_error(e: BaseException) -> bool:
    if isinstance(e, EcgretError):
        return True
    fb = sys.modules.get("firmware_bridge.errors")
    return fb is not None and isinstance(e, fb.BridgeError)


def _fail(msg: str, code: int = 1):
    click.echo(f"ecgret: error: {_printable(msg)}", err=True)
    sys.exit(code)


_MAX_ERROR_CHARS = 1000


def _short(msg: str) -> str:
    """An error message as one printable line of bounded length (messages can quote files and arguments)."""
    msg = str(msg).encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # undecodable bytes: U+FFFD
    msg = " ".join("".join(c if c.isprintable() else " " for c in msg).split())  # no escapes, no line breaks
    return msg if len(msg) <= _MAX_ERROR_CHARS else msg[:_MAX_ERROR_CHARS - 1] + "…"


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
    return _short(f"internal error ({what[:200]}); this is a bug in ecgret, please report it"
                  + ("" if _debug() else " (run with --debug for the traceback)"))


class _Group(click.Group):
    """Turns every error into one clear line and exit code 1, never a traceback (but under ``--debug`` for
    an internal error, which the line calls a bug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
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
    f = click.option("--allow-unsigned", is_flag=True, envvar="ECGRET_ALLOW_UNSIGNED", expose_value=False,
                     callback=_trust_policy,
                     help="Load a bundle that is not signed by a trusted publisher (env ECGRET_ALLOW_UNSIGNED=1).")(f)
    return click.option("--bundle", "bundle_path", envvar=ENV_BUNDLE, default=None, metavar="PATH",
                        help=f"Model bundle folder (default: the bundled one; env {ENV_BUNDLE}).")(f)


def threads_option(f):
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="Interpreter threads (default 1: the small encoder gains nothing from more).")(f)


def _load(bundle_path, threads, overlay: bool = True):
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


def _lead_set(spec):
    if not spec:
        return None
    from .leads import parse_lead_set
    return parse_lead_set(spec)


# ------------------------------------------------------------------------------------------- printing

def _width() -> int:
    import shutil
    return max(60, min(shutil.get_terminal_size((120, 24)).columns, 200))


def _clip(s: str, n: int) -> str:
    s = " ".join(_printable(s).split())
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


def format_result(res, out=None) -> str:
    """The human-readable answer to one query: the measurements and the rhythm first, then quality, the table of
    similar cases and their consensus."""
    q = res.quality
    lines = [f"== {res.query}"]
    m = getattr(res, "measurements", None)
    if m is not None:
        lines.append(f"measured: {m.line}")
        for why in m.findings:
            lines.append(f"  - {why}")
    if getattr(res, "rhythm", None) is not None:
        lines.append(res.rhythm.line)
    lines.append("similar past cases follow: they are not a diagnosis")
    usable = q.usable_leads
    problems = q.problems
    info = [f for f in q.findings if f.kind in ("derived", "missing")]
    lines.append(f"quality: {len(usable)} of 12 leads usable" + ("" if problems else ", no problems found"))
    for f in problems:
        lines.append(f"  ! {f}")
    if info:
        by = {}
        for f in info:
            by.setdefault(f.kind, []).append(f.lead)
        for kind, leads in by.items():
            lines.append(f"  {kind}: {', '.join(leads)}")
    w = _width()
    head = f"{'rank':>4}  {'case id':<16} {'similarity':>10}  {'diagnoses':<22} report"
    lines += ["", head, "-" * min(w, len(head) + 40)]
    for i, m in enumerate(res.matches, 1):
        diag = " ".join(m.super_class) or "-"
        if m.rhythm:
            diag += " / " + " ".join(m.rhythm)
        text = m.report or m.statements
        tag = " [local]" if m.source == "overlay" else ""
        lines.append(f"{i:>4}  {_clip(m.case_id + tag, 16):<16} {m.score:>10.3f}  {_clip(diag, 22):<22} "
                     f"{_clip(text, max(10, w - 60))}")
    if any(a.score < b.score for a, b in zip(res.matches, res.matches[1:])):
        lines.append("  (ranked by ECG similarity and by how alike the measured rhythm is; the similarity column "
                     "is the ECG similarity alone)")
    c = res.consensus
    lines += ["", f"consensus of {c.n_cases} cases (similarity-weighted): {c.summary}"]
    st = c.leading("statements")
    if st:
        lines.append("  statements: " + "; ".join(f"{v.label} ({v.support:.0%})" for v in st[:6]))
    return _printable("\n".join(lines), newlines=True)  # case text, file names, lead names: no escapes


def _error_obj(query: str, e: BaseException) -> dict:
    return {"query": query, "ok": False, "error": str(e), "error_type": type(e).__name__}


# ------------------------------------------------------------------------------------------- query

@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--fs", type=float, default=None, help="Sampling rate in Hz (CSV/NPY files without one).")
@click.option("--leads", "lead_spec", default=None,
              help="Leads actually recorded: a set (12, limb6, 3, I, II) or a list like I,II,V2; the rest are missing.")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Cases to retrieve.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query (NDJSON) on stdout.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML page of the results.")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="Search the locally enrolled cases too.")
@bundle_option
@threads_option
def query(files, fs, lead_spec, top_k, as_json, report_path, overlay, bundle_path, threads):
    """Find the archived cases most like each FILE (WFDB .hea/.mat/.dat, CSV or NPY)."""
    leads = _lead_set(lead_spec)
    r = _load(bundle_path, threads, overlay)
    from dataclasses import replace

    from .io import MAX_FS, read_record
    from .signal import PAD_S
    if fs is not None and not (fs > 0 and fs <= MAX_FS):  # impossible for any file (NaN too); under 100 Hz: per file
        raise click.BadParameter(f"{fs:g} Hz: a sampling rate must be positive and at most {MAX_FS:g} Hz",
                                 param_hint="'--fs'")
    max_seconds = r.duration_s + PAD_S  # the seconds the device uses plus the filter's padding: no more is read
    results, failed = [], 0
    for path in files:  # every file is answered or gets one error line; the batch always goes on
        shown = _short(path)
        try:
            rec = read_record(path, fs=fs, max_seconds=max_seconds)
            res = replace(r.query_record(rec, leads=leads, top_k=top_k), query=shown)
            out = json.dumps(res.to_dict(), ensure_ascii=False) if as_json else format_result(res) + "\n"
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
                click.echo(json.dumps(dict(_error_obj(shown, e), error=msg)))
            continue
        results.append(res)
        click.echo(out)
    if report_path:
        from .report import write_report
        write_report(report_path, results, r.bundle)
        click.echo(f"report written to {report_path}", err=True)
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------------------------------- info

def _runtime_text(rt: dict) -> str:
    """One line of :func:`edge.encoder.runtime_report` plus the CPU (``ecgret info``)."""
    cpu = rt.get("cpu") or {}
    interp = f"{rt['interpreter']} {rt['interpreter_version'] or ''}".strip() if rt["interpreter"] else "NONE"
    line = (f"interpreter {interp}, kernels {rt['kernels'] or '-'}, numpy {rt['numpy']}, Python {rt['python']}, "
            f"CPU {cpu.get('cpu', '?')} ({cpu.get('cores', '?')} cores, {cpu.get('machine', '?')})")
    if rt.get("error"):
        line += f"\n         ! {rt['error']}; queries cannot run until one is installed (the card below is the manifest's)"
    return line


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@bundle_option
def info(as_json, bundle_path):
    """Show the bundle card: model, sizes, archive composition, evaluation."""
    from .bench import machine
    from .bundle import load_bundle
    from .encoder import runtime_report
    from .overlay import Overlay
    rt = dict(runtime_report(), cpu=machine())   # never fails: a missing interpreter is reported, not raised
    b = load_bundle(bundle_path, threads=1, check_encoder=rt["interpreter"] is not None)
    ov = Overlay.for_bundle(b, strict=False)
    if as_json:
        click.echo(json.dumps(dict(b.manifest, path=str(b.path), hash=b.hash, id=b.id, trust=b.trust.to_dict(),
                                   overlay={"path": str(ov.file), "n_cases": len(ov), "error": ov.error},
                                   runtime=rt), indent=2))
        return
    m = b.manifest
    enc, idx, arc = m["encoder"], m["index"], m["archive"]
    size = {k: v["bytes"] for k, v in m["files"].items()}
    lines = [f"bundle   {m['name']}  (format {m['format_version']}, id {b.hash}, created {m['created']})",
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
             "         superclasses " + ", ".join(f"{k} {v}" for k, v in arc.get("super_class_counts", {}).items())]
    if arc.get("rhythm_counts"):
        lines.append("         rhythms " + ", ".join(f"{k} {v}" for k, v in list(arc["rhythm_counts"].items())[:8]))
    lines.append(f"overlay  {len(ov)} enrolled case(s) in {ov.file}"
                 + (f"  [IGNORED: {ov.error}]" if ov.error else ""))
    ev = m.get("evaluation")
    if ev and ev.get("table_markdown"):
        lines += ["", "evaluation", ev["table_markdown"].rstrip()]
    else:
        lines.append("evaluation  (none recorded in this bundle)")
    click.echo("\n".join(lines))


# ------------------------------------------------------------------------------------------- bench

@main.command()
@click.option("--n", "n_records", type=click.IntRange(min=1), default=200, show_default=True,
              help="Real records to time (after a warm-up).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--cold-runs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Cold starts to time (each spawns `ecgret query`).")
@click.option("--json", "as_json", is_flag=True)
@bundle_option
def bench(n_records, warmup, cold_runs, as_json, bundle_path):
    """Latency benchmark on real records: per stage, end to end, 1 thread and all cores, RSS, cold start."""
    from .bench import format_bench, run_bench
    res = run_bench(bundle_path, n_records=n_records, warmup=warmup, cold_runs=cold_runs,
                    progress=lambda s: click.echo(s, err=True))
    click.echo(json.dumps(res, indent=2) if as_json else format_bench(res))


# ------------------------------------------------------------------------------------------- acquisition

def _acq_to_record(acq, name: str):
    import numpy as np

    from .leads import canonical_lead
    from .record import Record
    names = []
    for c in acq.channel_names:
        lead = canonical_lead(c)
        names.append(lead or str(c))
    if not any(canonical_lead(n) for n in names) and len(names) == 1:
        names = ["II"]  # a single unnamed channel (Arduino + AD8232) is taken as lead II
    rec = Record(np.asarray(acq.signal_mv, dtype=np.float64), float(acq.fs), tuple(names), name,
                 {"units": "mV", "board": dict(acq.device_info or {}), "stats": dict(acq.stats or {})})
    return rec, np.asarray(acq.lead_off, dtype=bool)


def _acquire_interruptible(progress_label: str, **kw):
    """Run ``firmware_bridge.acquire.acquire`` in a thread; Ctrl-C stops it and keeps what arrived.
    Returns (acquisition or None, interrupted)."""
    import threading

    from firmware_bridge.acquire import acquire
    stop = threading.Event()
    done = threading.Event()   # not Thread.join: a join interrupted by Ctrl-C can wrongly report the thread dead
    box: dict = {}

    def work():
        try:
            box["acq"] = acquire(stop_event=stop, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            box["err"] = e
        finally:
            done.set()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    interrupted = False
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        interrupted = True
        click.echo("\ninterrupted: stopping the acquisition ...", err=True)
        stop.set()
        done.wait(15)
    if "err" in box:
        raise box["err"]
    return box.get("acq"), interrupted


def _progress_cb(label: str):
    last = [-1]
    label = _printable(label)

    def cb(done, total):
        pct = int(100 * done / max(total, 1))
        if pct // 10 != last[0] // 10:
            last[0] = pct
            click.echo(f"\r{label}: {pct:3d}%", err=True, nl=pct >= 100)
            cb.open_line = pct < 100
    cb.open_line = False  # a progress line without its newline yet
    return cb


def _end_progress(cb) -> None:
    if cb is not None and getattr(cb, "open_line", False):
        click.echo("", err=True)
        cb.open_line = False


def _answer(r, rec, lead_off, leads, top_k, as_json, save_dir=None, stem=None):
    """Query an acquired record, print it like `ecgret query`, optionally save record + result."""
    try:
        res = r.query_record(rec, leads=leads, top_k=top_k, lead_off=lead_off)
        obj = res.to_dict()
    except EcgretError as e:
        res, obj = None, _error_obj(rec.name, e)
        click.echo(f"ecgret: error: {_printable(e)}", err=True)
    if as_json:
        click.echo(json.dumps(obj, ensure_ascii=False))
    elif res is not None:
        click.echo(format_result(res))
        click.echo("")
    if save_dir:
        _save_acquisition(rec, obj, save_dir, stem)
    return res


def _save_acquisition(rec, obj: dict, save_dir, stem: str) -> None:
    """``<save_dir>/<stem>.dat``, ``.json``, ``.hea``: each published whole (written in a private staging
    folder, fsynced, then linked in without replacing anything that exists), the header last, so a reader that
    finds the ``.hea`` finds the complete record. A name already taken gets ``-2``, ``-3``, ... ."""
    from pathlib import Path

    import numpy as np

    from .atomicio import atomic_write, publish, staging_dir
    from .io import write_wfdb
    from .record import Record
    d = Path(save_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EcgretError(f"--save {d}: cannot create the folder ({e.strerror or e})") from None
    gaps = int(np.isnan(rec.signal).any(axis=1).sum())
    comments = {"source": _printable(rec.name), "gap_samples": gaps}  # format 16 holds no NaN: gaps become 0
    for k in range(1, 1000):
        name = stem if k == 1 else f"{stem}-{k}"
        if any((d / f"{name}{ext}").exists() for ext in (".hea", ".dat", ".json")):
            continue
        try:
            with staging_dir(d) as tmp:
                write_wfdb(Record(np.nan_to_num(rec.signal, nan=0.0), rec.fs, rec.leads, rec.name,
                                  {"comments": comments}), tmp, name)
                publish(tmp / f"{name}.dat", d / f"{name}.dat", overwrite=False)
                atomic_write(d / f"{name}.json", json.dumps(obj, ensure_ascii=False, indent=1) + "\n",
                             overwrite=False)
                publish(tmp / f"{name}.hea", d / f"{name}.hea", overwrite=False)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise EcgretError(f"--save {d}: cannot save {name} ({e.strerror or e}: {e.filename})") from None
    else:
        raise EcgretError(f"--save {d}: {stem} and 998 variants of it exist already")
    click.echo(f"saved {_printable(d / name)}.hea and {name}.json", err=True)


@main.command()
@click.option("--port", envvar=ENV_PORT, required=True, help=f"Serial port or pyserial URL (env {ENV_PORT}).")
@click.option("--board", type=click.Choice(["native", "cyton", "ascii"]), default="native", show_default=True)
@click.option("--seconds", type=click.FloatRange(min=2.0, max=3600.0), default=10.0, show_default=True,
              help="Length of each recording (2 s to 1 h).")
@click.option("--loop", is_flag=True, help="Keep acquiring and answering until Ctrl-C; a board error is reported "
              "and the board reopened (with backoff) for the next recording.")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), default=None,
              help="Save every acquisition as a WFDB record plus its result JSON.")
@click.option("--fs", type=float, default=None,
              help="Sampling rate of an ASCII board that does not print it (must agree with one that does).")
@click.option("--channels", default=None, help="Channel names of a board that does not tell them (comma list).")
@click.option("--leads", "lead_spec", default=None, help="Leads actually attached (see `ecgret query --leads`).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--reconnect-timeout", type=click.FloatRange(min=0.0, max=600.0), default=10.0, show_default=True,
              help="Seconds to wait for a board that vanished mid-recording to come back.")
@bundle_option
@threads_option
def listen(port, board, seconds, loop, save_dir, fs, channels, lead_spec, top_k, as_json, reconnect_timeout,
           bundle_path, threads):
    """Acquire from a board and answer each recording like `ecgret query`.

    A recording cut short (the board lost for good, silent, or Ctrl-C) is answered on what arrived if that is
    at least 2 s, and saved with --save. Exit code 0 only when every recording was answered without a board
    error; otherwise 1 (each problem is one `ecgret: error:` line, and an `ok: false` line with --json).
    """
    import math
    import time

    from firmware_bridge.errors import BridgeError
    from firmware_bridge.info import check_channel_names, check_fs

    from .io import MIN_DURATION_S
    names = tuple(c.strip() for c in channels.split(",")) if channels else None
    if not math.isfinite(seconds):  # click's range lets NaN through
        raise click.BadParameter(f"{seconds} is not a duration", param_hint="--seconds")
    try:
        if fs is not None:
            check_fs(fs, "rate")
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--fs") from None
    try:
        if names:
            check_channel_names(names)
    except ValueError as e:
        raise click.BadParameter(_printable(e), param_hint="--channels") from None
    leads = _lead_set(lead_spec)
    r = _load(bundle_path, threads)
    n = answered = problems = 0
    backoff = 1.0

    def problem(query: str, msg, e=None) -> None:
        nonlocal problems
        problems += 1
        click.echo(f"ecgret: error: {_printable(msg)}", err=True)
        if as_json:
            click.echo(json.dumps(_error_obj(query, e if e is not None else EcgretError(str(msg)))))

    try:
        while True:
            n += 1
            stamp = time.strftime("%Y%m%d-%H%M%S")
            query = f"{port}#{n}@{stamp}"
            cb = None if as_json else _progress_cb(f"acquiring {seconds:g} s from {port}")
            err = None
            try:
                acq, interrupted = _acquire_interruptible(
                    "acquiring", url=port, board=board, seconds=seconds, fs=fs, channel_names=names, on_progress=cb,
                    reconnect_timeout=reconnect_timeout)
            except BridgeError as e:
                err, acq, interrupted = e, e.acquisition, False
            _end_progress(cb)
            got = acq.duration_s if acq is not None and acq.n_samples else 0.0
            if err is not None and got < MIN_DURATION_S:
                problem(query, err, err)
            elif err is not None:
                problems += 1
                click.echo(f"ecgret: error: {_printable(err)}; answering on the {got:.1f} s acquired", err=True)
            if got >= MIN_DURATION_S:
                rec, lo = _acq_to_record(acq, query)
                res = _answer(r, rec, lo, leads, top_k, as_json, save_dir, f"ecg-{stamp}-{n:03d}")
                answered += res is not None
                problems += res is None
            elif acq is not None and acq.n_samples:
                msg = f"{query}: only {got:.2f} s acquired, under the {MIN_DURATION_S:g} s minimum; not answered"
                if save_dir:
                    rec, _ = _acq_to_record(acq, query)
                    _save_acquisition(rec, _error_obj(query, EcgretError(msg)), save_dir, f"ecg-{stamp}-{n:03d}")
                if interrupted and answered:  # Ctrl-C just after a recording: nothing lost, nothing wrong
                    click.echo(_printable(msg), err=True)
                elif err is None:
                    problem(query, msg)
            elif err is None:
                problem(query, f"{query}: the board delivered no samples"
                        + (" before the interruption" if interrupted else ""))
            if interrupted or not loop:
                break
            if err is not None:  # reopen the board after a pause that grows while it keeps failing
                click.echo(f"retrying {_printable(port)} in {backoff:g} s (Ctrl-C to stop)", err=True)
                time.sleep(backoff)
                backoff = min(2 * backoff, 30.0)
            else:
                backoff = 1.0
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
    if problems or not answered:
        sys.exit(1)


@main.command()
@click.option("--record", "record_path", default=None,
              help="Recording the simulated board plays (default: the shipped sample E07506, not in the archive).")
@click.option("--board", type=click.Choice(["native", "cyton"]), default="native", show_default=True)
@click.option("--seconds", type=click.FloatRange(min=2.0), default=10.0, show_default=True)
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="Playback speed of the simulated board (0: as fast as it is read).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None)
@bundle_option
@threads_option
def demo(record_path, board, seconds, speed, top_k, as_json, report_path, bundle_path, threads):
    """The whole job without hardware: a simulated board streams a real recording over a pty, ecgret
    acquires it, queries the archive and prints the answer."""
    from .io import read_record
    from .leads import LEADS8
    from .paths import default_record
    path = record_path or str(default_record())
    src = read_record(path)
    r = _load(bundle_path, threads)
    cols = [src.leads.index(x) for x in LEADS8 if x in src.leads] or list(range(src.signal.shape[1]))
    from firmware_bridge.simulator import Simulator
    names = tuple(src.leads[j] for j in cols)
    click.echo(_printable(f"demo: a simulated {board} board streams {os.path.basename(path)} ({', '.join(names)}, "
                          f"{src.fs:g} Hz) over a pty"), err=True)
    with Simulator(src.signal[:, cols], src.fs, names, board=board, speed=speed) as sim:
        acq, _ = _acquire_interruptible(
            "acquiring", url=sim.port, board=board, seconds=seconds,
            on_progress=None if as_json else _progress_cb(f"acquiring {seconds:g} s from {sim.port}"))
    if acq is None or acq.n_samples == 0:
        _fail("the simulated board delivered nothing")
    st = acq.stats or {}
    click.echo(f"acquired {acq.n_samples} samples at {acq.fs:g} Hz, {acq.signal_mv.shape[1]} channels "
               f"({st.get('frames', '?')} frames, {st.get('crc_errors', 0)} CRC errors, "
               f"{st.get('gap_samples', 0)} gap samples)", err=True)
    rec, lo = _acq_to_record(acq, f"demo:{os.path.basename(path)}")
    res = _answer(r, rec, lo, None, top_k, as_json)
    if report_path and res is not None:
        from .report import write_report
        write_report(report_path, [res], r.bundle)
        click.echo(f"report written to {report_path}", err=True)
    if res is None:
        sys.exit(1)


# ------------------------------------------------------------------------------------------- overlay

_SUPER = {"NORM", "MI", "STTC", "CD", "HYP"}
_RHYTHM = {"SR", "AFIB", "STACH", "SBRAD", "SARRH", "AFLT", "PSVT", "SVTAC", "SVARR", "BIGU", "TRIGU", "PACE"}


def split_labels(spec: str | None) -> dict:
    """``--labels "MI,AFIB,IMI"`` -> super_class / rhythm / sub_class lists (PTB-XL codes)."""
    out = {"super_class": [], "sub_class": [], "rhythm": []}
    for lab in (spec or "").replace(";", ",").split(","):
        lab = lab.strip()
        if not lab:
            continue
        up = lab.upper()
        key = "super_class" if up in _SUPER else "rhythm" if up in _RHYTHM else "sub_class"
        out[key].append(up if key != "sub_class" else lab)
    return out


@main.command()
@click.argument("file")
@click.option("--text", required=True, help="The confirmed report of this recording.")
@click.option("--labels", default=None, help="Comma-separated codes, e.g. MI,IMI,SR (superclass, subclass, rhythm).")
@click.option("--statements", default=None, help="Statement line, e.g. 'sinus rhythm; inferior MI' (default: --text).")
@click.option("--id", "case_id", default=None, help="Case id (default: local:<n>).")
@click.option("--fs", type=float, default=None)
@click.option("--leads", "lead_spec", default=None)
@bundle_option
@threads_option
def enroll(file, text, labels, statements, case_id, fs, lead_spec, bundle_path, threads):
    """Add a confirmed local case to the overlay archive searched with the bundle."""
    import time
    from .io import read_record
    text = _enroll_text(text, "--text", 20000, newlines=True)
    statements = _enroll_text(statements, "--statements", 2000)
    labels = _enroll_text(labels, "--labels", 2000)
    case_id = _enroll_text(case_id, "--id", 64)
    if case_id is not None and (not case_id or any(c.isspace() for c in case_id)):
        raise click.BadParameter("a case id is 1..64 characters without spaces", param_hint="--id")
    r = _load(bundle_path, threads, overlay=True)
    rec = read_record(file, fs=fs)
    vec, quality, _, _ = r.embed_record(rec, _lead_set(lead_spec))
    record = os.fsencode(os.path.abspath(file)).decode("utf-8", "replace")  # a file name need not be UTF-8
    case = dict(split_labels(labels), case_id=case_id, report=text, statements=statements or "",
                source="local", record=record, enrolled=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if not case_id:
        case.pop("case_id")
    cid = r.overlay.enroll(case, vec, reserved_ids={c["case_id"] for c in r.cases})
    click.echo(_printable(f"enrolled {cid} in {r.overlay.file} ({len(r.overlay)} local case(s))"))


def _enroll_text(value, option: str, limit: int, newlines: bool = False):
    """A command-line string that becomes part of a clinical record: valid UTF-8 (undecodable bytes arrive as
    lone surrogates), at most ``limit`` characters, and free of control characters, escape sequences and
    bidi overrides (which would act on every terminal that later prints the case). Refused, not altered."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise click.BadParameter("is not valid UTF-8 text (check the terminal's or the script's encoding)",
                                 param_hint=option) from None
    if len(value) > limit:
        raise click.BadParameter(f"is {len(value):,} characters long; at most {limit:,}", param_hint=option)
    from .termtext import unsafe_chars
    bad = unsafe_chars(value.replace("\t", " ").replace("\r\n", "\n"), allow_newlines=newlines)
    if bad:
        shown = ", ".join(sorted({f"U+{ord(c):04X}" for c in bad})[:5])
        raise click.BadParameter(f"contains control characters ({shown}), e.g. a terminal escape sequence; "
                                 "remove them", param_hint=option)
    return value


@main.command()
@click.argument("case_id")
@bundle_option
def forget(case_id, bundle_path):
    """Remove one enrolled case from the overlay."""
    from .bundle import load_bundle
    from .overlay import Overlay
    b = load_bundle(bundle_path, threads=1)
    ov = Overlay.for_bundle(b)
    ov.forget(case_id)
    click.echo(_printable(f"forgot {case_id} ({len(ov)} local case(s) left in {ov.file})"))


# ------------------------------------------------------------------------------------------- board verbs

try:  # owned by the firmware bridge work; absent in older trees
    from .cli_board import ports_cmd, simulate_cmd
    main.add_command(simulate_cmd)
    main.add_command(ports_cmd)
except ImportError:  # pragma: no cover
    pass


if __name__ == "__main__":  # pragma: no cover
    main()
