"""``ecgret simulate`` and ``ecgret ports``: a simulated board on a pty, and the serial ports around.

Plain :class:`click.Command` objects (``simulate``, ``ports``); the ``ecgret`` group in
:mod:`edge.cli` adds them with ``add_command``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from edge.cli_types import SECONDS as _SECONDS
from edge.cli_types import SPEED, board_option, deprecated_alias, json_option


def _default_record() -> str:
    from edge.paths import default_record

    return str(default_record())


@click.command("simulate")
@board_option("Which board to impersonate: native, cyton (8 leads each) or ascii (lead II alone).")
@click.option(
    "--record",
    "record_path",
    default=None,
    metavar="PATH",
    help="Recording to stream (WFDB/CSV/NPY; default: the shipped sample E07506).",
)
@click.option(
    "--speed",
    type=SPEED,
    default=1.0,
    show_default=True,
    help="Playback speed relative to real time; 0 streams as fast as the reader takes it.",
)
@click.option(
    "--faults",
    default="",
    help="Faults to inject, e.g. bitflip:0.001,drop:0.001,insert:0.001,"
    "leadoff:V1@2-4s,disconnect:5s or disconnect:5s+2s.",
)
@click.option("--loop/--no-loop", default=False, help="Repeat the recording forever.")
@click.option(
    "--channels",
    default=None,
    help="Comma-separated leads to stream (default: I,II,V1-V6 for native and cyton, II for ascii).",
)
@click.option(
    "--sample-bits",
    type=click.Choice(["24", "16"]),
    default="24",
    show_default=True,
    help="Native board: bits per sample on the wire.",
)
@click.option(
    "--samples-per-frame",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Native board: samples per channel in one data frame.",
)
@click.option("--link", default=None, help="Path of the stable symlink to the pty (default: a temp folder).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault generator.")
@click.option(
    "--seconds",
    type=_SECONDS,
    default=None,
    help="Quit after this many seconds (2 s to 1 h; default: run until Ctrl-C).",
)
@deprecated_alias("--duration", "--seconds", type=click.FloatRange(min=0.0))
def simulate(
    board, record_path, speed, faults, loop, channels, sample_bits, samples_per_frame, link, seed, seconds, duration
):
    """Open a pty and stream a real recording through it as a native, Cyton or ASCII board.

    Prints the port path on stdout (point `ecgret listen --port PATH` at it); status goes to stderr.
    """
    from edge.acquire import pick_channels
    from edge.errors import EcgretError
    from edge.io import read_record
    from edge.termtext import printable
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.simulator import Simulator

    seconds = seconds if seconds is not None else duration
    path = record_path or _default_record()
    try:
        rec = read_record(path)
        cols = pick_channels(tuple(rec.leads), board, channels.split(",") if channels else None)
    except EcgretError as e:
        raise click.ClickException(printable(e)) from None
    # SIGTERM (kill, systemd, a test harness) and SIGHUP (the terminal closed) end the simulator like Ctrl-C
    # does: as an exception, so the pty, the port link and the temp folder are removed on the way out
    previous = {s: signal.signal(s, _exit_on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    sim = None
    try:
        try:
            sim = Simulator(
                rec.signal[:, cols],
                rec.fs,
                [rec.leads[i] for i in cols],
                board=board,
                speed=speed,
                faults=faults or None,
                loop=loop,
                seed=seed,
                sample_bits=int(sample_bits),
                samples_per_frame=samples_per_frame,
                link_path=link,
                description=f"ecgret simulator ({rec.name or path})",
            )
        except (BridgeError, ValueError) as e:
            raise click.ClickException(printable(e)) from None
        info = sim.info
        echo = lambda s: click.echo(printable(s), err=True)  # noqa: E731

        def started() -> None:
            sim.ready.wait(5.0)
            click.echo(printable(sim.port))
            sys.stdout.flush()
            echo(
                f"{board} board: {rec.name or path}, {info.n_channels} channel(s) {','.join(info.channel_names)} "
                f"at {info.fs:g} Hz, {sim.n / info.fs:.1f} s{' looped' if loop else ''}, speed "
                f"{'max' if speed <= 0 else f'{speed:g}x'}; pty {sim.pts}; Ctrl-C to stop"
            )

        threading.Thread(target=started, daemon=True).start()
        if seconds is not None:
            t = threading.Timer(seconds, sim.stop_event.set)
            t.daemon = True
            t.start()
        try:
            sim.run(on_event=lambda s: echo(f"simulator: {s}"))
        except KeyboardInterrupt:
            pass
        except OSError as e:
            raise click.ClickException(printable(f"simulator failed: {e}")) from None
        echo(
            f"simulator stopped: {sim.stats['samples']} samples, {sim.stats['frames']} frames, "
            f"{sim.stats['damaged_frames']} damaged"
        )
    finally:
        if sim is not None:
            sim.cleanup()
        for s, h in previous.items():
            signal.signal(s, h)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


@click.command("ports")
@json_option
@click.option("--all", "all_ports", is_flag=True, help="Also list legacy UARTs that report no hardware.")
def ports(as_json, all_ports):
    """List candidate serial ports with their descriptions."""
    from firmware_bridge.ports import list_ports

    ports = list_ports(all_ports=all_ports)
    if as_json:
        for p in ports:
            click.echo(json.dumps(p.as_dict()))
        return
    if not ports:
        click.echo("no serial ports found (is the board plugged in? try --all)", err=True)
        return
    from edge.termtext import printable

    width = max(len(printable(p.device)) for p in ports)
    for p in ports:  # descriptions come from USB descriptors: a device may put escape sequences there
        extra = f"  [{p.likely}]" if p.likely else ""
        click.echo(printable(f"{printable(p.device):<{width}}  {p.description}{extra}"))
