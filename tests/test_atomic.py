"""edge.atomicio: every write users rely on goes through one helper that is atomic and never follows a planted
link; the callers (report, overlay, listen --save, the archive and the convert caches) use it; and the other
small safety nets of the same issue (terminal text, enroll arguments, simulate on SIGTERM)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edge.atomicio import atomic_open, atomic_path, atomic_write, publish, staging_dir
from edge.paths import repo_root
from edge.termtext import printable, unsafe_chars


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------- the helper

def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    t = tmp_path / "out.txt"
    atomic_write(t, "one")
    atomic_write(t, b"two")
    assert t.read_text() == "two" and _only(tmp_path) == ["out.txt"]


def test_a_symlink_planted_at_the_temp_name_is_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "report.html"
    # the old, predictable name of the report's temp file, and the first name mkstemp will try
    (tmp_path / f".report.html.tmp-{os.getpid()}").symlink_to(victim)
    first = ["planted", "fresh123"]
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(first))
    (tmp_path / ".report.html.tmp-planted").symlink_to(victim)
    atomic_write(target, "<html>")
    assert victim.read_text() == "precious"
    assert target.read_text() == "<html>" and not target.is_symlink()
    assert not (tmp_path / ".report.html.tmp-fresh123").exists()


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    target.symlink_to(victim)
    atomic_write(target, "{}")
    assert victim.read_text() == "precious" and not target.is_symlink() and target.read_text() == "{}"


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    t = tmp_path / "cases.jsonl"
    t.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(t, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert t.read_text() == "old\n" and _only(tmp_path) == ["cases.jsonl"]
    with pytest.raises(ZeroDivisionError):
        with atomic_path(t, suffix=".npz") as p:
            np.savez(p, a=np.arange(3))
            1 / 0
    assert t.read_text() == "old\n" and _only(tmp_path) == ["cases.jsonl"]


def test_errors_name_the_target_not_the_temp_file(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        atomic_write(tmp_path / "no" / "such" / "x.html", "x")
    assert ei.value.filename == str(tmp_path / "no" / "such" / "x.html")
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores the mode
            pytest.skip("running as root: cannot make a read-only folder")
        with pytest.raises(PermissionError) as ei:
            atomic_write(tmp_path / "x.html", "x")
        assert ei.value.filename == str(tmp_path / "x.html") and ".tmp" not in str(ei.value)
    finally:
        os.chmod(tmp_path, 0o700)


def test_no_clobber_and_modes(tmp_path):
    t = tmp_path / "rec.hea"
    atomic_write(t, "a", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write(t, "b", overwrite=False)
    assert t.read_text() == "a" and _only(tmp_path) == ["rec.hea"]
    os.chmod(t, 0o640)
    atomic_write(t, "c")
    assert t.stat().st_mode & 0o777 == 0o640          # replacing keeps the file's permissions
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write(tmp_path / "new.txt", "d")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask   # a new file follows the umask


def test_staging_and_publish(tmp_path):
    with staging_dir(tmp_path) as d:
        (d / "r.dat").write_bytes(b"\0\1")
        publish(d / "r.dat", tmp_path / "r.dat", overwrite=False)
        assert (d / "r.dat").exists() is False
    assert _only(tmp_path) == ["r.dat"]
    with pytest.raises(FileExistsError):
        with staging_dir(tmp_path) as d:
            (d / "r.dat").write_bytes(b"other")
            publish(d / "r.dat", tmp_path / "r.dat", overwrite=False)
    assert (tmp_path / "r.dat").read_bytes() == b"\0\1" and _only(tmp_path) == ["r.dat"]


def test_one_helper_no_predictable_temp_names_left():
    """Every file write that replaces a file goes through edge/atomicio.py: no other module names a temp file
    after the target plus a pid or '.tmp'/'.part' (mkstemp/mkdtemp prefixes are random-suffixed), and
    os.replace is left only in atomicio and the folder publication of convert (edge/atomicio.py publish_folder: mkdtemp
    folders renamed into place)."""
    root = repo_root()
    predictable = re.compile(r"""\.tmp["'\-]|tmp-\{os\.getpid|part-\{os\.getpid|\{os\.getpid\(\)\}\.(tmp|npz)|"""
                             r"""\.part["']\)""")
    allowed_replace = {"edge/atomicio.py"}
    bad = []
    for pkg in ("edge", "convert", "firmware_bridge"):
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            src = f.read_text(encoding="utf-8")
            for i, line in enumerate(src.splitlines(), 1):
                if predictable.search(line) and not re.search(r"mk[sd]temp\(|TMP_MARK =|_TMP_PREFIX =", line):
                    bad.append(f"{rel}:{i}: {line.strip()}")
                if re.search(r"\bos\.replace\(|\.replace\(\s*(tmp|d /)", line) and rel not in allowed_replace \
                        and rel != "firmware_bridge/simulator.py":  # the pty link: a fresh random name
                    bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------- the callers

def test_report_write_is_atomic_and_names_the_report(tmp_path, monkeypatch):
    from edge.report import write_report
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "r.html"
    (tmp_path / f".r.html.tmp-{os.getpid()}").symlink_to(victim)   # the old predictable temp name
    write_report(out, [])
    assert victim.read_text() == "precious" and "No query could be answered" in out.read_text()
    with pytest.raises(OSError) as ei:
        write_report("/nonexistent/x.html", [])
    assert ei.value.filename == "/nonexistent/x.html" and "cannot write the report" in str(ei.value)


def test_save_acquisition_publishes_whole_records_and_never_clobbers(tmp_path, shared_data):
    from edge.save import save_acquisition as _save_acquisition
    from edge.io import read_record
    rec = read_record(shared_data / "cinc2021-sample" / "HR06005")
    sig = rec.signal[:1000].copy()
    sig[10:20] = np.nan
    from edge.record import Record
    r = Record(sig, rec.fs, rec.leads, "board#1", {})
    _save_acquisition(r, {"ok": True}, tmp_path, "ecg-x-001")
    _save_acquisition(r, {"ok": False}, tmp_path, "ecg-x-001")
    assert _only(tmp_path) == ["ecg-x-001-2.dat", "ecg-x-001-2.hea", "ecg-x-001-2.json",
                               "ecg-x-001.dat", "ecg-x-001.hea", "ecg-x-001.json"]
    back = read_record(tmp_path / "ecg-x-001.hea")
    assert back.signal.shape == (1000, 12)
    assert json.loads((tmp_path / "ecg-x-001-2.json").read_text()) == {"ok": False}


def test_archive_writes_leave_no_partial_files(tmp_path):
    from convert.archive import Case
    from convert.archive_write import write_archive
    from edge.errors import EcgretError
    cases = [Case(case_id=f"c{i}") for i in range(3)]

    def load(i):
        if i == 1:
            raise EcgretError("unreadable")
        return np.zeros((100, 12), np.float32), 100

    arc = write_archive(tmp_path / "a", cases, load, T=100, on_error="skip", progress=False)
    assert _only(tmp_path / "a") == ["archive.json", "cases.jsonl", "signals.npy"]
    assert len(arc) == 2
    with pytest.raises(Exception):
        write_archive(tmp_path / "b", cases, load, T=100, on_error="raise", progress=False)
    assert not (tmp_path / "b").exists() or _only(tmp_path / "b") == []


# ------------------------------------------------------------------------------------------- terminal text

def test_printable_strips_escapes_controls_and_bidi():
    assert printable("plain ASCII stays") == "plain ASCII stays"
    assert printable("\x1b[2J\x1b[31mred\x1b[0m") == "red"
    assert printable("a\x1b]0;owned title\x07b") == "ab"
    assert printable("x\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\y") == "xlinky"
    assert printable("bell\x07 nul\x00 del\x7f c1\x9b31m") == "bell nul del c1"
    assert printable("admin\u202e\u2066txt.exe") == "admintxt.exe"
    assert printable("line1\r\nline2\rline3", newlines=True) == "line1\nline2\nline3"
    assert printable("tab\tand\nnewline") == "tab and newline"
    assert printable("bad \udcff byte") == "bad \ufffd byte"
    assert printable("Sinusrhythmus, Lagetyp ü, 心电图") == "Sinusrhythmus, Lagetyp ü, 心电图"
    assert unsafe_chars("ok\ntext") == [] and unsafe_chars("a\x1b[0m") == ["\x1b"]


def test_format_result_strips_escapes_from_case_text():
    from edge.answer import clip as _clip
    assert _clip("\x1b[2Jreport \x1b]0;x\x07text", 40) == "report text"


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, cwd=repo_root(),
                          timeout=120, **kw)


@pytest.mark.parametrize("opt", [*(pytest.param(o, marks=pytest.mark.slow) for o in ("--text", "--id", "--statements")),
                                 "--labels"])  # one option in `make test-fast`, all in `make test`
def test_enroll_refuses_invalid_utf8_and_escapes_without_a_traceback(opt, tmp_path):
    env = dict(os.environ, ECGRET_HOME=str(tmp_path / "home"), PYTHONPATH=str(repo_root()))
    rec = tmp_path / "r.csv"
    rec.write_text("I\n1\n")
    base = [b"enroll", str(rec).encode()] + ([] if opt == "--text" else [b"--text", b"ok"])
    for bad in (b"caf\xe9 \xff", b"\x1b[2Jcleared"):
        p = subprocess.run([sys.executable, "-m", "edge.cli", *base, opt.encode(), bad], capture_output=True,
                           cwd=repo_root(), env=env, timeout=120)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 2 and "Traceback" not in err, err
        assert opt in err and ("UTF-8" in err or "control characters" in err), err
        assert b"\x1b" not in p.stderr


# ------------------------------------------------------------------------------------------- simulate

@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_simulate_killed_by_sigterm_removes_its_temp_folder(shared_data, sig):
    p = subprocess.Popen([sys.executable, "-m", "edge.cli", "simulate", "--board", "native", "--speed", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo_root(),
                         env=dict(os.environ, PYTHONPATH=str(repo_root())))
    try:
        port = p.stdout.readline().strip()
        folder = Path(port).parent
        assert port and folder.is_dir() and folder.name.startswith("ecgret-sim-"), port
        time.sleep(0.3)
        p.send_signal(sig)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 128 + sig, p.stderr.read()
    assert not folder.exists(), list(folder.iterdir())
