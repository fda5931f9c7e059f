"""``ecgret query``, ``ecgret info`` and ``ecgret bench``: the verbs that answer files and describe or time a
bundle. Click code only: the answer's wording is :mod:`edge.answer`, the bundle card :mod:`edge.card`.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .cli_common import (
    archive_ids,
    debug_on,
    echo_json,
    error_obj,
    error_text,
    is_user_error,
    load_retriever,
    note_fewer,
    note_top_k,
    short,
    term_width,
    write_report_said,
)
from .cli_types import (
    bundle_option,
    count_option,
    fs_option,
    json_option,
    leads_option,
    overlay_option,
    report_option,
    threads_option,
    top_k_option,
)
from .termtext import encodable

__all__ = ["query", "info", "bench"]


@click.command()
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
    if report_path:
        from .report import MAX_QUERIES

        if len(files) > MAX_QUERIES:  # before any work: each answer is held in memory until the page is written
            raise click.BadParameter(
                f"a report holds at most {MAX_QUERIES} queries, {len(files)} files given; split the batch "
                "(or leave --report out: answers are printed one by one, in constant memory)",
                param_hint="'--report'",
            )
    r = load_retriever(bundle_path, threads, overlay)
    note_top_k(r, top_k)
    from dataclasses import replace

    from .answer import archive_twin, format_result, result_dict, stamp
    from .io import read_record
    from .signal import PAD_S

    max_seconds = r.duration_s + PAD_S  # the seconds the device uses plus the filter's padding: no more is read
    ids, width = archive_ids(r), term_width()
    results, failed = [], 0
    for path in files:  # every file is answered or gets one error line; the batch always goes on
        shown = short(path)
        st = stamp(r.bundle)
        try:
            rec = read_record(path, fs=fs, max_seconds=max_seconds)
            res = replace(r.query_record(rec, leads=leads, top_k=top_k), query=shown)
            note_fewer(res, top_k, r)
            twin = archive_twin(res, os.path.basename(str(path)), ids)
            out = (
                json.dumps(result_dict(res, st=st, twin=twin), ensure_ascii=False)
                if as_json
                else format_result(res, width=width, st=st, twin=twin) + "\n"
            )
            out = encodable(out)  # a lone surrogate from a file name: U+FFFD
        except Exception as e:  # noqa: BLE001 - user errors and bugs alike end this file only
            failed += 1
            msg = error_text(e)
            if not msg.startswith(shown) and not msg.startswith(str(path)):
                msg = f"{shown}: {msg}"
            if debug_on() and not (is_user_error(e) or isinstance(e, OSError)):
                import traceback

                traceback.print_exc()
            click.echo(f"ecgret: error: {msg}", err=True)
            if as_json:
                echo_json(dict(error_obj(shown, e, st), error=msg))
            continue
        if report_path:  # held for the page only: without one, memory stays flat over any number of files
            results.append(res)
        click.echo(out)
    if report_path:
        write_report_said(report_path, results, r.bundle)
    if failed:
        sys.exit(1)


@click.command()
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

        echo_json(
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
    from .card import card_text

    click.echo(card_text(b, rt, ov))


@click.command()
@count_option("--n", "n_records", at_least=1, default=200, help="Real records to time (after a warm-up).")
@count_option("--warmup", default=10, help="Queries run before timing starts (not timed).")
@count_option("--cold-runs", default=5, help="Cold starts to time (each spawns `ecgret query`).")
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
        echo_json(dict(res, **st))
    else:
        from .answer import stamp_line

        click.echo(stamp_line(st) + "\n" + format_bench(res))
