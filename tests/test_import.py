"""ecgret-convert import: real LUDB and PTB-XL records into archive folders; bad records, resuming, interruption."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convert.archive import PARTS_DIR, Archive, Case
from convert.archive_write import import_records
from convert.importers import import_wfdb_folder
from convert.ptbxl import open_subset
from edge.errors import ArchiveError, EcgretError
from edge.io import read_record
from edge.paths import repo_root
from edge.signal import preprocess

LUDB_PICK = ("4", "8", "12", "16", "20", "24", "28", "32")


def convert_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    """``ecgret-convert ARGS`` in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(repo_root()), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "convert.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=repo_root(), env=env)


def ludb_reports(path: Path, records=None) -> list[str]:
    """A reports CSV for LUDB records (record, report = the cardiologists' diagnoses, PTB-XL rhythm and
    superclasses mapped by convert.ludb); returns the records written."""
    from edge.paths import shared_data_dir

    from convert.ludb import load_cases
    root = shared_data_dir() / "ludb-dev"
    if not (root / "cases.csv").is_file():
        from tests.shared import missing_data
        missing_data(f"ludb-dev not found in {shared_data_dir()}")
    cases = [c for c in load_cases(root) if records is None or c.record in records]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["record", "report", "rhythm", "super_class"])
        for c in cases:
            w.writerow([c.record, c.diagnoses, c.rhythm or "", ";".join(c.super_class)])
    return [c.record for c in cases]


@pytest.fixture
def ludb_copy(tmp_path, shared_data):
    """Eight real LUDB records (.hea + .dat) in a private folder, with their reports CSV."""
    src = shared_data / "ludb-dev" / "data"
    folder = tmp_path / "records"
    folder.mkdir()
    for r in LUDB_PICK:
        for ext in (".hea", ".dat"):
            shutil.copy(src / f"{r}{ext}", folder / f"{r}{ext}")
    reports = tmp_path / "reports.csv"
    ludb_reports(reports, set(LUDB_PICK))
    return folder, reports


@pytest.mark.slow
def test_import_wfdb_command_bad_records_then_fixed(tmp_path, ludb_copy):
    folder, reports = ludb_copy
    good_dat = (folder / "8.dat").read_bytes()
    good_hea = (folder / "12.hea").read_text()
    (folder / "8.dat").write_bytes(good_dat[:30000])                               # truncated signal file
    lines = good_hea.splitlines()
    (folder / "12.hea").write_text("\n".join(["12 12 five_hundred 5000"] + lines[1:]) + "\n")   # malformed
    out = tmp_path / "arc"
    r = convert_cli("import", "wfdb", folder, out, "--reports", reports, "--source", "ludb", "--no-progress")
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ecgret-convert: error: ludb:")]
    assert len(errors) == 2, r.stderr
    assert "ludb:8: " in errors[0] and "8.dat is shorter than the header says" in errors[0]
    assert "ludb:12: " in errors[1] and "five_hundred" in errors[1]
    assert "Traceback" not in r.stderr
    assert "6 cases (6 imported now, 0 already there, 2 failed) of 8 records listed" in r.stdout
    a = Archive.open(out)
    assert a.ids == tuple(f"ludb:{n}" for n in LUDB_PICK if n not in ("8", "12"))
    assert [s["case_id"] for s in a.meta["skipped"]] == ["ludb:8", "ludb:12"]
    assert not (out / PARTS_DIR).exists()
    # the archive holds what the device's reader and preprocessing make of each record
    for i, n in enumerate(n for n in LUDB_PICK if n not in ("8", "12")):
        ref = preprocess(read_record(folder / n), notch_hz=50.0)
        np.testing.assert_allclose(a.signals[i].astype(np.float32), ref.signal, atol=0.01)
    assert a.cases[0].rhythm == ("SR",) and a.cases[0].report.startswith("Rhythm: Sinus rhythm.")
    before = {n: np.array(a.signals[i]) for i, n in enumerate(a.ids)}
    # fixed: the same command imports the two and keeps the six (in the order of the CSV)
    (folder / "8.dat").write_bytes(good_dat)
    (folder / "12.hea").write_text(good_hea)
    r = convert_cli("import", "wfdb", folder, out, "--reports", reports, "--source", "ludb", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "8 cases (2 imported now, 6 already there, 0 failed)" in r.stdout
    b = Archive.open(out)
    assert b.ids == tuple(f"ludb:{n}" for n in LUDB_PICK) and "skipped" not in b.meta
    for cid, x in before.items():
        np.testing.assert_array_equal(b.signals[b.index_of(cid)], x)
    # once more: nothing to do
    r = convert_cli("import", "wfdb", folder, out, "--reports", reports, "--source", "ludb", "--no-progress")
    assert r.returncode == 0 and "(0 imported now, 8 already there, 0 failed)" in r.stdout


@pytest.mark.slow
def test_import_refuses_other_settings_and_bad_input(tmp_path, ludb_copy):
    folder, reports = ludb_copy
    out = tmp_path / "arc"
    import_wfdb_folder(folder, reports, out, source="ludb", progress=False)
    with pytest.raises(ArchiveError, match=r"made with notch_hz = 50\.0, this import has 60\.0"):
        import_wfdb_folder(folder, reports, out, source="ludb", notch_hz=60.0, progress=False, resume=True)
    with pytest.raises(ArchiveError, match="already holds an archive"):
        import_wfdb_folder(folder, reports, out, source="ludb", progress=False)
    r = convert_cli("import", "wfdb", tmp_path / "nowhere", tmp_path / "x", "--reports", reports)
    assert r.returncode == 1 and r.stderr.strip() == f"ecgret-convert: error: {tmp_path / 'nowhere'}: no such folder"
    r = convert_cli("import", "ptbxl", folder, tmp_path / "y")
    assert r.returncode == 1 and "neither a PTB-XL download" in r.stderr and "Traceback" not in r.stderr
    r = convert_cli("import", "wfdb", folder, tmp_path / "z")
    assert r.returncode == 2 and "--reports" in r.stderr


def _cases(n):
    return [Case(case_id=f"t:{i}", statements=f"case {i}", source="t") for i in range(n)]


def _signal(i):
    return np.full((100, 12), i / 10.0, np.float32)


def test_interrupted_import_resumes_and_loses_nothing(tmp_path):
    """Ctrl-C in the middle: what was read is committed; the next run loads only the rest."""
    cases, calls, interrupted = _cases(11), [], []

    def load(i):
        calls.append(i)
        if i == 7 and not interrupted:
            interrupted.append(i)
            raise KeyboardInterrupt
        return _signal(i), 100

    with pytest.raises(KeyboardInterrupt):
        import_records(tmp_path / "a", cases, load, T=100, chunk=3, resume=True, progress=False)
    assert not (tmp_path / "a" / "archive.json").exists()
    with pytest.raises(ArchiveError, match="did not finish; run the same import command again"):
        Archive.open(tmp_path / "a")
    calls.clear()
    s = import_records(tmp_path / "a", cases, load, T=100, chunk=3, resume=True, progress=False)
    assert calls == [7, 8, 9, 10] and (s.n_new, s.n_already, s.n_failed) == (4, 7, 0)
    assert s.archive.ids == tuple(c.case_id for c in cases)
    np.testing.assert_allclose(s.archive.signals[:, 0, 0].astype(np.float32), np.arange(11) / 10.0, atol=1e-3)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["archive.json", "cases.jsonl", "signals.npy"]


KILLED = r"""
import os, sys
import numpy as np
from convert.archive import Case
from convert.archive_write import import_records
cases = [Case(case_id=f"t:{i}") for i in range(20)]
def load(i):
    if i == int(sys.argv[2]):
        os._exit(9)          # killed: no cleanup, no commit of the part being filled
    with open(sys.argv[3], "a") as f:
        f.write(f"{i}\n")
    return np.full((100, 12), i / 10.0, np.float32), 100
s = import_records(sys.argv[1], cases, load, T=100, chunk=4, resume=True, progress=False)
print(s.n_new, s.n_already)
"""


@pytest.mark.slow
def test_killed_import_keeps_committed_parts(tmp_path):
    out, log = tmp_path / "a", tmp_path / "loaded.txt"
    env = dict(os.environ, PYTHONPATH=str(repo_root()))
    r = subprocess.run([sys.executable, "-c", KILLED, str(out), "10", str(log)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 9
    parts = sorted(p.name for p in (out / PARTS_DIR).iterdir())
    assert parts == ["part-000000.jsonl", "part-000000.npy", "part-000001.jsonl", "part-000001.npy", "plan.json"]
    log.unlink()
    r = subprocess.run([sys.executable, "-c", KILLED, str(out), "-1", str(log)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["12", "8"]                    # records 0-7 were committed, 8 and 9 were lost
    assert [int(x) for x in log.read_text().split()] == list(range(8, 20))
    a = Archive.open(out)
    assert len(a) == 20 and not (out / PARTS_DIR).exists()
    np.testing.assert_allclose(a.signals[:, 50, 3].astype(np.float32), np.arange(20) / 10.0, atol=1e-2)


def test_failed_run_without_resume_leaves_nothing(tmp_path):
    def load(i):
        if i == 5:
            raise EcgretError("bad record")
        return _signal(i), 100
    with pytest.raises(ArchiveError, match=r"t:5: bad record"):
        import_records(tmp_path / "a", _cases(8), load, T=100, chunk=2, progress=False)
    assert list((tmp_path / "a").iterdir()) == []


@pytest.mark.slow
def test_import_ptbxl_subset_command(tmp_path, shared_data):
    out = tmp_path / "sub"
    r = convert_cli("import", "ptbxl", shared_data / "ptbxl-subset", out, "--folds", "9", "--limit", "40")
    assert r.returncode == 0, r.stderr
    a = Archive.open(out)
    assert len(a) == 40 and {c.fold for c in a.cases} == {9} and not (out / "signals.npy").exists()
    full = open_subset(shared_data / "ptbxl-subset")
    i = full.index_of(a.ids[7])
    np.testing.assert_array_equal(a.signals[7], full.signals[i])
    r = convert_cli("import", "ptbxl", shared_data / "ptbxl-subset", out, "--folds", "9", "--limit", "40")
    assert r.returncode == 0 and "(0 imported now, 40 already there, 0 failed)" in r.stdout
