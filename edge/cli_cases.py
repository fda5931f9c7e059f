"""The local cases: ``ecgret enroll``, ``ecgret forget`` and ``ecgret cases list|reembed|codes``. Click code
only: the overlay is :mod:`edge.overlay`, the label codes :mod:`edge.labels`, the listing's wording
:mod:`edge.answer`.
"""

from __future__ import annotations

import sys

import click

from .cli_common import Group, archive_ids, echo_json, load_retriever, say, term_width
from .cli_types import bundle_option, fs_option, json_option, leads_option, threads_option
from .termtext import printable

__all__ = ["enroll", "forget", "cases"]


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


@click.command()
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
    from .io import read_record
    from .labels import describe
    from .overlay import local_case

    text = _enroll_text(text, "--text", 20000, newlines=True)
    if not text.strip():
        raise click.BadParameter("is empty: give the confirmed report of this recording", param_hint="--text")
    statements = _enroll_text(statements, "--statements", 2000)
    case_id = _enroll_text(case_id, "--id", 64)
    if case_id is not None and (not case_id or any(c.isspace() for c in case_id)):
        raise click.BadParameter("a case id is 1..64 characters without spaces", param_hint="--id")
    r = load_retriever(bundle_path, threads, overlay=True)
    rec = read_record(file, fs=fs)
    vec, quality, pre, _ = r.embed_record(rec, leads)
    case = local_case(file, pre, labels, text, statements, case_id)
    cid = r.overlay.enroll(case, vec, reserved_ids=archive_ids(r), force=force)
    codes = [*case["rhythm"], *case["super_class"], *case["sub_class"], *case["form"]]
    click.echo(
        printable(
            f"enrolled {cid} in {r.overlay.file} ({len(r.overlay)} local case(s))"
            + (f": {', '.join(describe(c) for c in codes)}" if codes else "")
        )
    )


@click.command()
@click.argument("case_ids", nargs=-1, required=True)
@bundle_option
def forget(case_ids, bundle_path):
    """Remove enrolled cases from the overlay (all the CASE_IDS or, if one is unknown, none)."""
    from .bundle import load_bundle
    from .overlay import Overlay

    b = load_bundle(bundle_path, threads=1)
    ov = Overlay.for_bundle(b)
    ov.forget(*case_ids)
    click.echo(printable(f"forgot {', '.join(case_ids)} ({len(ov)} local case(s) left in {ov.file})"))


@click.group(cls=Group)
def cases():
    """The local cases: list them, move them to a new bundle, list the label codes."""


@cases.command("list")
@json_option
@bundle_option
def cases_list(as_json, bundle_path):
    """List the enrolled cases of the bundle's overlay."""
    from .answer import case_summary, stamp
    from .bundle import load_bundle
    from .overlay import Overlay

    b = load_bundle(bundle_path, threads=1)
    ov = Overlay.for_bundle(b)
    if as_json:
        st = stamp(b)
        for c in ov.cases:
            echo_json(dict(case_summary(c), **st))
        return
    if not len(ov):
        say(f"no enrolled cases in {ov.file}")
        return
    from .answer import case_lines

    w = term_width()
    click.echo(printable(f"{len(ov)} enrolled case(s) in {ov.file}"))
    for c in ov.cases:
        for line in case_lines(c, w):
            click.echo(line)


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
    from .bundle import load_bundle
    from .overlay import Overlay, overlay_dir, own_overlay, reembed, reembed_source
    from .retrieval import Retriever

    b = load_bundle(bundle_path, threads=threads or 1)
    target = Overlay.for_bundle(b)
    src = reembed_source(source, target)
    if src is None:
        say(f"no other bundle's overlay with cases under {overlay_dir(b.id).parent}: nothing to move")
        return
    rep = reembed(
        target,
        Retriever(b, measure=False),
        src,
        reserved_ids={c["case_id"] for c in b.cases},
        follow_records=own_overlay(src, target),
    )
    click.echo(
        printable(
            f"moved {len(rep['moved'])} case(s) from {src} to {target.file}"
            + (f": {', '.join(rep['moved'])}" if rep["moved"] else "")
        )
    )
    if rep["present"]:
        say(f"already here: {', '.join(rep['present'])}")
    for cid, why in rep["failed"]:
        click.echo(f"ecgret: error: {printable(cid)}: not moved: {printable(why)}", err=True)
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
            echo_json({"code": code, "kind": kind, "name": name})
        return
    for code, kind, name in rows:
        click.echo(f"{code:<9} {kind:<22} {name}")
