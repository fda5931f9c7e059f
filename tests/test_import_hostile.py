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


# ------------------------------------------------------------------------------------------------ 2: user files


@pytest.mark.parametrize("layout", ["wfdb", "subset"])
def test_folder_with_users_files_is_refused_and_kept(tmp_path, cinc, shared_data, layout):
    folder, reports = cinc
    out = tmp_path / "mine"
    out.mkdir()
    (out / "cases.jsonl").write_text("my own notes\n")
    np.save(out / "signals.npy", np.arange(5))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for more in ((), ("--overwrite",)):
        if layout == "wfdb":
            rc, _, err = import_wfdb(folder, out, reports, *more)
        else:
            rc, _, err = cli("import", "ptbxl", shared_data / "ptbxl-subset", out, "--limit", 3, *more)
        one_error(rc, err, f"{out}: holds cases.jsonl, signals.npy but no ecgret archive (archive.json)")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ------------------------------------------------------------------------------------------------ 3: re-runs


def test_rerun_with_limit_refuses_and_a_changed_report_is_updated(tmp_path, cinc):
    folder, reports = cinc
    out = tmp_path / "arc"
    rc, stdout, err = import_wfdb(folder, out, reports)
    assert rc == 0 and "10 cases (10 imported now" in stdout, err
    sig = np.array(Archive.open(out).signals)
    rc, _, err = import_wfdb(folder, out, reports, "--limit", 3)
    one_error(rc, err, "the archive there holds 7 case(s) this import does not list (e.g. wfdb:E07503)",
              "the plan differs")
    assert len(Archive.open(out)) == 10
    text = reports.read_text().replace("E07500,sinus rhythm report 0,SR,NORM", "E07500,CORRECTED: afib,AFIB,CD")
    reports.write_text(text)
    rc, stdout, err = import_wfdb(folder, out, reports)
    assert rc == 0, err
    assert "10 cases (0 imported now, 10 already there (1 with a report or labels the source changed: updated)" \
        in stdout
    a = Archive.open(out)
    c = a.cases[a.index_of("wfdb:E07500")]
    assert (c.report, c.rhythm, c.super_class) == ("CORRECTED: afib", ("AFIB",), ("CD",))
    np.testing.assert_array_equal(np.array(a.signals), sig)
    rc, stdout, err = import_wfdb(folder, out, reports)
    assert rc == 0 and "(0 imported now, 10 already there, 0 failed)" in stdout


def test_subset_rerun_with_smaller_limit_refuses(tmp_path, shared_data):
    out = tmp_path / "arc"
    rc, stdout, err = cli("import", "ptbxl", shared_data / "ptbxl-subset", out, "--limit", 5)
    assert rc == 0 and "5 cases (5 imported now" in stdout, err
    rc, _, err = cli("import", "ptbxl", shared_data / "ptbxl-subset", out, "--limit", 3)
    one_error(rc, err, "the archive there holds 2 case(s) this import does not list", "the plan differs")
    assert len(Archive.open(out)) == 5
    rc, stdout, err = cli("import", "ptbxl", shared_data / "ptbxl-subset", out, "--limit", 8)
    assert rc == 0 and "8 cases (3 imported now, 5 already there" in stdout, err


# ------------------------------------------------------------------------------------------------ 4: damaged state


def _damage(out: Path, how: str) -> None:
    parts = out / "import-parts"
    if how == "import-parts is a file":
        out.mkdir()
        parts.write_text("i am a file")
        return
    if how in ("truncated archive.json", "archive.json is a list"):
        out.mkdir()
        (out / "archive.json").write_text("{broken" if how.startswith("truncated") else "[1, 2]")
        return
    parts.mkdir(parents=True)
    if how == "truncated plan.json":
        (parts / "plan.json").write_text("{broken")
    elif how == "part-abc":
        (parts / "part-abc.npy").write_bytes(b"")
        (parts / "part-abc.jsonl").write_text("")
    elif how == "corrupt part":
        (parts / "part-000001.npy").write_text("x")
        (parts / "part-000001.jsonl").write_text('{"case_id": "wfdb:E07500"}\n')


@pytest.mark.parametrize("how, want", [
    ("truncated archive.json", "archive.json: the archive's archive.json is damaged (JSONDecodeError)"),
    ("archive.json is a list", "archive.json: the archive's archive.json is damaged (not a JSON object)"),
    ("truncated plan.json", "plan.json: the unfinished import's plan is damaged (JSONDecodeError)"),
    ("corrupt part", "part-000001.npy: unreadable"),
    ("import-parts is a file", "import-parts: is not a folder"),
])
def test_damaged_out_is_one_line(tmp_path, cinc, how, want):
    folder, reports = cinc
    out = tmp_path / "arc"
    _damage(out, how)
    rc, _, err = import_wfdb(folder, out, reports)
    one_error(rc, err, want)


def test_stray_part_name_is_ignored(tmp_path, cinc):
    folder, reports = cinc
    out = tmp_path / "arc"
    _damage(out, "part-abc")
    rc, stdout, err = import_wfdb(folder, out, reports)
    assert rc == 0 and "10 cases (10 imported now" in stdout, err


@pytest.mark.parametrize("cell", ["1e400", "inf", "-inf"])
def test_unrepresentable_fold_is_one_line(tmp_path, cinc, cell):
    folder, reports = cinc
    write_reports(reports, [("E07500", "ok", "SR", "NORM", "p1", cell)])
    rc, _, err = import_wfdb(folder, tmp_path / "arc", reports)
    one_error(rc, err, f"{reports}:2: column 'fold' is not an integer: {cell!r}")


def test_unhashable_scp_codes_is_one_line(tmp_path):
    d = tmp_path / "ptbxl"
    d.mkdir()
    (d / "scp_statements.csv").write_text(
        ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\nNORM,normal ECG,1,,,NORM,NORM\n")
    (d / "ptbxl_database.csv").write_text(
        "ecg_id,patient_id,scp_codes,strat_fold,filename_lr,filename_hr\n1,1,{[]: 1},1,records100/1,x\n")
    rc, _, err = cli("import", "ptbxl", d, tmp_path / "arc", "--no-progress")
    one_error(rc, err, "ptbxl_database.csv:2: scp_codes is not a dict literal")


def test_write_failure_is_one_line(tmp_path, cinc):
    import resource
    import subprocess
    import sys

    from edge.paths import repo_root

    folder, reports = cinc
    out = tmp_path / "arc"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # a write past 100 kB fails (EFBIG)

    r = subprocess.run([sys.executable, "-m", "convert.cli", "import", "wfdb", str(folder), str(out), "--reports",
                        str(reports), "--no-progress"], capture_output=True, text=True, cwd=repo_root(),
                       preexec_fn=small_files, timeout=300)
    one_error(r.returncode, r.stderr, f"{out}: the import stopped: ", "fix that and run the same command again")


# ------------------------------------------------------------------------------------------------ 5: evaluate


@pytest.fixture
def evaluated(tmp_path, cinc):
    """An imported 10-case archive (one fold-9 query) and a folder for embeddings."""
    folder, reports = cinc
    rc, _, err = import_wfdb(folder, tmp_path / "arc", reports)
    assert rc == 0, err
    ev = tmp_path / "ev"
    ev.mkdir()
    return tmp_path / "arc", ev


@pytest.mark.parametrize("what, want", [
    ("nan", "holds NaN or infinite values"),
    ("inf", "holds NaN or infinite values"),
    ("zero", "10 row(s) of zero (or overflowing) norm, the first row 0"),
    ("onezero", "1 row(s) of zero (or overflowing) norm, the first row 3"),
    ("d0", "expected shape (10, D) with D >= 1, got (10, 0)"),
    ("cplx", "expected real numbers (float or integer), got complex64"),
    ("bool", "expected real numbers (float or integer), got bool"),
    ("str", "expected real numbers (float or integer), got <U1"),
    ("npz", "not a .npy array (an .npz archive?)"),
    ("fifo", "not a regular file"),
    ("big", "expected shape (10, D) with D >= 1, got (100000, 1000)"),
])
def test_hostile_embeddings_are_refused(evaluated, what, want):
    import os

    arc, ev = evaluated
    f = ev / f"{what}.npy"
    ok = np.random.default_rng(0).random((10, 8)).astype(np.float32)
    if what == "npz":
        f = ev / "z.npz"
        np.savez(f, a=ok)
    elif what == "fifo":
        os.mkfifo(f)
    elif what == "big":  # 400 MB if read whole; only its header is read
        np.lib.format.open_memmap(f, mode="w+", dtype=np.float32, shape=(100_000, 1000))
    else:
        x = {"nan": np.full_like(ok, np.nan), "inf": np.full_like(ok, np.inf), "zero": np.zeros_like(ok),
             "d0": np.zeros((10, 0), np.float32), "cplx": ok.astype(np.complex64), "bool": ok > 0.5,
             "str": np.full((10, 8), "a"), "onezero": np.where(np.arange(10)[:, None] == 3, 0, ok)}[what]
        np.save(f, x)
    rc, out, err = cli("evaluate", "--archive", arc, "--embeddings", f"X={f}")
    one_error(rc, err, f"--embeddings X: {f}: {want}")
    assert "P@10" not in out


def test_embedding_names_must_be_new(evaluated):
    arc, ev = evaluated
    np.save(ev / "ok.npy", np.random.default_rng(0).random((10, 8)))
    rc, out, err = cli("evaluate", "--archive", arc, "--embeddings", f"X={ev / 'ok.npy'}")
    assert rc == 0 and "| X |" in out, err
    rc, _, err = cli("evaluate", "--archive", arc, "--embeddings", f"X={ev / 'ok.npy'}",
                     "--embeddings", f"X={ev / 'ok.npy'}")
    one_error(rc, err, "--embeddings X: the name is already taken")
    rc, _, err = cli("evaluate", "--archive", arc, "--embeddings", f"random={ev / 'ok.npy'}")
    one_error(rc, err, "--embeddings random: the name is already taken")


def test_evaluate_out_refuses_before_work_and_writes_atomically(evaluated, tmp_path):
    arc, ev = evaluated
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes")
    (tmp_path / "link.json").symlink_to(notes)
    for target, want in ((tmp_path / "link.json", "is a symbolic link"),
                         (notes, "exists and is not a JSON results file"),
                         (tmp_path / "nowhere" / "r.json", f"the folder {tmp_path / 'nowhere'} does not exist")):
        rc, out, err = cli("evaluate", "--archive", arc, "--out", target)
        assert rc == 2 and want in err and "Traceback" not in err and "P@10" not in out, err
    assert notes.read_text() == "my precious notes" and (tmp_path / "link.json").is_symlink()
    res = tmp_path / "r.json"
    for _ in range(2):  # an earlier results file is replaced
        rc, out, err = cli("evaluate", "--archive", arc, "--out", res)
        assert rc == 0, err
        assert '"protocol": "shared/docs/EVALUATION.md"' in res.read_text()


def test_reports_fifo_is_refused(tmp_path, cinc):
    import os

    folder, _ = cinc
    os.mkfifo(tmp_path / "fifo.csv")
    rc, _, err = import_wfdb(folder, tmp_path / "arc", tmp_path / "fifo.csv")
    one_error(rc, err, f"{tmp_path / 'fifo.csv'}: not a regular file")


# ------------------------------------------------------------------------------------------------ 6, 7: device rules


@pytest.mark.parametrize("spec", ["0-1000000", "1001", "5-1001"])
def test_fold_ranges_are_bounded(evaluated, spec):
    arc, _ = evaluated
    rc, _, err = cli("evaluate", "--archive", arc, "--query-folds", spec)
    assert rc == 2 and f"--query-folds '{spec}': folds are 0 to 1000" in err and "Traceback" not in err, err


@pytest.mark.parametrize("col, cell, field", [
    ("record", "E07500" + "x" * 200, "case_id"),
    ("fold", "-5", "fold"),
    ("fold", "1001", "fold"),
    ("rhythm", "S\x1bR", "rhythm"),
    ("super_class", "N" * 61, "super_class"),
])
def test_import_applies_the_devices_rules(tmp_path, cinc, col, cell, field):
    folder, reports = cinc
    row = {"record": "E07500", "report": "ok", "rhythm": "SR", "super_class": "NORM", "patient_id": "p", "fold": "1"}
    row[col] = cell
    if col == "record":
        shutil.copy(folder / "E07500.hea", folder / f"{cell}.hea")
    write_reports(reports, [tuple(row.values())], header=tuple(row))
    rc, _, err = import_wfdb(folder, tmp_path / "arc", reports)
    one_error(rc, err, f"{reports}:2: case ", f": {field} ", "(the device refuses a bundle holding it)")


def test_import_source_with_control_characters_is_refused(tmp_path, cinc):
    folder, reports = cinc
    rc, _, err = import_wfdb(folder, tmp_path / "arc", reports, "--source", "clinic\x1b[2J")
    one_error(rc, err, f"{reports}:2: case ", "(the device refuses a bundle holding it)")


def test_bundle_checks_archive_and_out_before_embedding(evaluated, tmp_path):
    import json

    from edge.paths import repo_root

    arc, _ = evaluated
    enc = repo_root() / "edge" / "bundles" / "default"
    f = tmp_path / "a-file"
    f.write_text("mine")
    rc, _, err = cli("bundle", "--encoder", enc, "--archive", arc, "--out", f, "--no-progress")
    one_error(rc, err, f"{f}: exists and is not a folder")
    assert f.read_text() == "mine"
    lines = (arc / "cases.jsonl").read_text().splitlines()
    c = json.loads(lines[0])
    c["fold"] = -5
    (arc / "cases.jsonl").write_text("\n".join([json.dumps(c), *lines[1:]]) + "\n")
    rc, _, err = cli("bundle", "--encoder", enc, "--archive", arc, "--out", tmp_path / "b", "--no-progress")
    one_error(rc, err, "case 'wfdb:E07500': fold -5 is out of range [0, 1000]")
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ 8, 9: sizes, text


def test_reports_csv_row_limit(tmp_path, cinc):
    from convert.importers import MAX_CSV_ROWS

    folder, reports = cinc
    with open(reports, "w", encoding="utf-8") as f:
        f.write("record,report\n")
        f.writelines(f"R{i},x\n" for i in range(MAX_CSV_ROWS + 1))
    rc, _, err = import_wfdb(folder, tmp_path / "arc", reports)
    one_error(rc, err, f"{reports}: more than 200,000 rows")


def test_skipped_records_are_counted_and_the_first_100_listed(tmp_path, cinc):
    folder, reports = cinc
    rows = [(r, "ok") for r in RECORDS] + [(f"GONE{i:03d}", "no such record") for i in range(105)]
    write_reports(reports, rows, header=("record", "report"))
    rc, stdout, err = import_wfdb(folder, tmp_path / "arc", reports)
    assert rc == 1 and "10 cases (10 imported now, 0 already there, 105 failed) of 115" in stdout, err
    meta = Archive.open(tmp_path / "arc").meta
    assert meta["n_skipped"] == 105 and len(meta["skipped"]) == 100
    assert meta["skipped"][0]["case_id"] == "wfdb:GONE000" and "record file missing" in meta["skipped"][0]["error"]


def test_bom_unbalanced_quote_and_long_cells(tmp_path, cinc):
    folder, reports = cinc
    reports.write_bytes(b"\xef\xbb\xbfrecord,report\nE07500,a\n")  # Excel's "CSV UTF-8"
    rc, stdout, err = import_wfdb(folder, tmp_path / "bom", reports)
    assert rc == 0 and "1 cases (1 imported now" in stdout, err
    reports.write_text('record,report\nE07500,"never closed\nE07501,ok\nE07502,ok\n')
    rc, _, err = import_wfdb(folder, tmp_path / "unbal", reports)
    one_error(rc, err, f"{reports}:2: unreadable CSV (unexpected end of data)")
    reports.write_text("record,report,fold\nE07500,a," + "x" * 100_000 + "\n")
    rc, _, err = import_wfdb(folder, tmp_path / "long", reports)
    line = one_error(rc, err, f"{reports}:2: column 'fold' is not an integer: 'xxxx")
    assert len(line) < 300 + len(str(reports)), len(line)


def test_bundle_over_other_files_says_the_option(evaluated, tmp_path):
    from edge.paths import repo_root

    arc, _ = evaluated
    out = tmp_path / "b"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    rc, _, err = cli("bundle", "--encoder", repo_root() / "edge" / "bundles" / "default", "--archive", arc,
                     "--out", out, "--no-progress")
    one_error(rc, err, "already holds files that are not a bundle; use --force to replace it")
    assert (out / "mine.txt").read_text() == "mine"
