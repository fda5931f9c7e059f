"""Hostile input to ``ecgret-convert import`` and ``evaluate``: listings that point outside their folder, folders
that hold the user's own files, re-runs with another plan, damaged import state and hostile arrays. Every refusal
is one ``ecgret-convert: error:`` line, exit 1, no traceback, and nothing the user had is lost."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convert.archive import Archive
from convert.cli import main

RECORDS = tuple(f"E075{i:02d}" for i in range(10))


def cli(*args) -> tuple[int, str, str]:
    """``ecgret-convert ARGS`` in this process: (exit code, stdout, stderr)."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def one_error(rc: int, err: str, *want: str) -> str:
    """The one error line of a refused command (exit 1), holding every string of ``want``."""
    lines = [ln for ln in err.splitlines() if ln.startswith(("ecgret-convert: error:", "Error:"))]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    for w in want:
        assert w in lines[0], lines[0]
    return lines[0]


def write_reports(path: Path, rows, header=("record", "report", "rhythm", "super_class", "patient_id", "fold")):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n", encoding="utf-8")


@pytest.fixture
def cinc(tmp_path, shared_data):
    """Ten real CinC 2021 records (.hea + .mat) in a private folder, and their reports CSV."""
    folder = tmp_path / "records"
    folder.mkdir()
    for r in RECORDS:
        for ext in (".hea", ".mat"):
            shutil.copy(shared_data / "cinc2021-sample" / f"{r}{ext}", folder / f"{r}{ext}")
    reports = tmp_path / "reports.csv"
    write_reports(reports, [(r, f"sinus rhythm report {i}", "SR", "NORM", f"p{i}", i % 9 + 1)
                            for i, r in enumerate(RECORDS)])
    return folder, reports


def import_wfdb(folder, out, reports, *more):
    return cli("import", "wfdb", folder, out, "--reports", reports, "--no-progress", *more)


# ------------------------------------------------------------------------------------------------ 1: containment


@pytest.mark.parametrize("rec", ["../outside/E07510", "{abs}/E07510", "linkdir/E07510", "L1"])
def test_records_outside_folder_are_refused(tmp_path, cinc, shared_data, rec):
    folder, reports = cinc
    outside = tmp_path / "outside"
    outside.mkdir()
    for ext in (".hea", ".mat"):
        shutil.copy(shared_data / "cinc2021-sample" / f"E07510{ext}", outside / f"E07510{ext}")
    (folder / "linkdir").symlink_to(outside, target_is_directory=True)
    (folder / "L1.hea").symlink_to(outside / "E07510.hea")
    rec = rec.format(abs=outside)
    write_reports(reports, [("E07500", "ok"), (rec, "escape")], header=("record", "report"))
    rc, out, err = import_wfdb(folder, tmp_path / "arc", reports)
    one_error(rc, err, f"{reports}:3: record {rec!r} is outside {folder}")
    assert not (tmp_path / "arc").exists()


def test_ptbxl_download_filename_outside_is_refused(tmp_path, shared_data):
    d = tmp_path / "ptbxl"
    d.mkdir()
    (d / "scp_statements.csv").write_text(
        ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\nNORM,normal ECG,1,,,NORM,NORM\n")
    (d / "ptbxl_database.csv").write_text(
        "ecg_id,patient_id,scp_codes,strat_fold,filename_lr,filename_hr\n"
        "1,1,\"{'NORM': 100}\",1,../../outside/E07510,x\n")
    rc, out, err = cli("import", "ptbxl", d, tmp_path / "arc", "--no-progress")
    one_error(rc, err, f"{d / 'ptbxl_database.csv'}:2: record '../../outside/E07510' is outside {d}")


def test_external_cases_outside_data_are_refused(tmp_path):
    x = tmp_path / "ext"
    (x / "data").mkdir(parents=True)
    from convert.ludb import load_cases
    from edge.errors import ArchiveError

    (x / "cases.csv").write_text("record,diagnoses_en\n1,Rhythm: Sinus rhythm.\n../../secret/E07510,x\n")
    with pytest.raises(ArchiveError, match=r"cases\.csv:3: record '\.\./\.\./secret/E07510' is outside"):
        load_cases(x)
    (x / "cases.csv").write_text("name,diagnoses_en\n1,x\n")
    with pytest.raises(ArchiveError, match=r"cases\.csv: missing column\(s\) record"):
        load_cases(x)
    (x / "cases.csv").write_bytes(b"record,diagnoses_en\n1,caf\xe9\n")
    with pytest.raises(ArchiveError, match=r"cases\.csv: unreadable CSV"):
        load_cases(x)
    (x / "cases.csv").unlink()
    with pytest.raises(ArchiveError, match=r"cases\.csv: missing"):
        load_cases(x)
