"""``ecgret``: query ECG records against a case archive, offline, on the device.

The one click group a user types; its verbs live by job: ``query``, ``info``, ``bench`` (:mod:`edge.cli_query`),
``listen``, ``demo`` (:mod:`edge.cli_listen`), ``enroll``, ``forget``, ``cases list|reembed|codes``
(:mod:`edge.cli_cases`), ``simulate``, ``ports`` (:mod:`edge.cli_board`). What they share is
:mod:`edge.cli_common` (error lines, status lines, NDJSON) and :mod:`edge.cli_types` (the options). Click code
only: the library does the work (:mod:`edge.answer`, :mod:`edge.acquire`, :mod:`edge.save`,
:mod:`edge.labels`, :mod:`edge.overlay`, :mod:`edge.card`). Imports are lazy: the process must start fast on a
Pi. A closed stdout (``ecgret query ... | head -1``) ends the command quietly, exit code 0. Every error a user
can cause (:class:`~edge.errors.EcgretError`, the bridge's ``BridgeError``) is one line on stderr and exit
code 1; usage errors exit 2 (click).
"""

from __future__ import annotations

import click

from .cli_board import ports, simulate
from .cli_cases import cases, enroll, forget
from .cli_common import Group
from .cli_listen import demo, listen
from .cli_query import bench, info, query

__all__ = ["main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ecgret")
@click.option("--debug", is_flag=True, help="Print the traceback of an internal error (to report a bug).")
def main(debug):
    """Offline ECG case retrieval: find the archived cases most like a recording."""
    if not debug:  # numpy's floating-point warnings name source lines, not the user's problem (--debug shows them)
        import warnings

        warnings.simplefilter("ignore", RuntimeWarning)


for _command in (query, info, bench, demo, listen, enroll, forget, cases, simulate, ports):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
