"""The bundle card ``ecgret info`` prints: the bundle, its signature, the runtime, the encoder, the index, the
archive's composition, the local overlay and the evaluation recorded in the manifest."""

from __future__ import annotations

from .termtext import printable

__all__ = ["card_text", "runtime_text"]


def runtime_text(rt: dict) -> str:
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


def card_text(b, rt: dict, ov) -> str:
    """The card of bundle ``b`` (:class:`~edge.bundle.Bundle`) with the runtime ``rt`` (:func:`runtime_text`'s
    input, with ``cpu``) and the overlay ``ov`` (:class:`~edge.overlay.Overlay`)."""
    m = b.manifest
    enc, idx, arc = m["encoder"], m["index"], m["archive"]
    size = {k: v["bytes"] for k, v in m["files"].items()}
    lines = [
        f"bundle   {m['name']}  (format {m['format_version']}, id {b.hash}, created {m['created']})",
        f"id       {b.id} (sha256 of manifest.json)",
        f"signed   {b.trust.describe()}" + ("" if b.trust.trusted else "; loaded with --allow-unsigned"),
        f"path     {b.path}",
        f"runtime  {runtime_text(rt)}",
        f"encoder  {enc['input_shape']} {enc['input_dtype']} -> {enc['output_shape']} {enc['output_dtype']}, "
        f"{enc['quantization']}, {size['encoder.tflite'] / 1024:.0f} KiB"
        + (f", {enc['params']:,} params" if enc.get("params") else "")
        + (f", {enc['macs'] / 1e6:.1f} M MACs" if enc.get("macs") else "")
        + f"  [interpreter: {rt['interpreter'] or 'none'}]",
        f"imaging  mode {m['imaging'].get('mode')}, tile {m['imaging'].get('tile')}, shape {m['imaging'].get('shape')}",
        f"index    Annoy {idx['metric']}, dim {idx['dim']}, {idx['n_items']} items, {idx['n_trees']} trees, "
        f"search_k {idx['search_k']}, recall@10 {idx['recall_at_10']:.3f}, {size['index.ann'] / 1024:.0f} KiB",
        f"archive  {arc.get('n_cases', '?')} cases, folds {arc.get('folds')}, sources "
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
    # the manifest's text comes from whoever built the bundle: no escape sequence, control character or lone
    # surrogate reaches the terminal (a title set, the screen cleared, or an encoding error on a strict UTF-8 stdout)
    return printable("\n".join(lines), newlines=True)
