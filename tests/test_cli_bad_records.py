"""Every bad record the foundation issue names gets one clear line from `ecgret query`, a non-zero exit and
no traceback (the API side, typed exceptions, is tested in test_io.py and test_signal.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.fixtures_bundle import ecgret_env, run_ecgret, test_bundle  # noqa: F401


def _hr06005(shared_data, tmp_path):
    for ext in (".hea", ".mat"):
        shutil.copy(shared_data / "cinc2021-sample" / f"HR06005{ext}", tmp_path / f"rec{ext}")
    hea = (tmp_path / "rec.hea").read_text().replace("HR06005", "rec")
    (tmp_path / "rec.hea").write_text(hea)
    return hea


def _truncated_header(d, hea):
    (d / "rec.hea").write_text("\n".join(hea.splitlines()[:5]) + "\n")
    return d / "rec.hea", "rec.hea"


def _inconsistent_header(d, hea):
    (d / "rec.hea").write_text(hea.replace("rec 12 500 5000", "rec 13 500 5000"))  # 13 signals, 12 lines
    return d / "rec.hea", "rec.hea"


def _bad_count(d, hea):
    (d / "rec.hea").write_text(hea.replace("rec 12 500 5000", "rec 12 500 abc"))
    return d / "rec.hea", "rec.hea"


def _short_signal_file(d, hea):
    data = (d / "rec.mat").read_bytes()
    (d / "rec.mat").write_bytes(data[: len(data) // 2])
    return d / "rec.hea", "rec"


def _wrong_shape(d, hea):
    np.save(d / "x.npy", np.zeros((2, 3, 4)))
    return d / "x.npy", "x.npy"


def _nan(d, hea):
    x = np.random.default_rng(0).standard_normal((5000, 12))
    x[100:110, 3] = np.nan
    np.save(d / "x.npy", x)
    return d / "x.npy", "x.npy"


def _inf(d, hea):
    x = np.random.default_rng(0).standard_normal((5000, 12))
    x[7, 0] = np.inf
    np.save(d / "x.npy", x)
    return d / "x.npy", "x.npy"


def _low_rate(d, hea):
    (d / "x.csv").write_text("I,II\n" + "\n".join(f"{np.sin(i / 5):.4f},{np.cos(i / 5):.4f}" for i in range(600)))
    return d / "x.csv", "x.csv"


def _too_short(d, hea):
    (d / "x.csv").write_text("I,II\n" + "\n".join(f"{np.sin(i / 5):.4f},{np.cos(i / 5):.4f}" for i in range(150)))
    return d / "x.csv", "x.csv"


def _unknown_leads(d, hea):
    (d / "x.csv").write_text("FOO,BAR\n" + "\n".join(f"{np.sin(i / 5):.4f},{np.cos(i / 5):.4f}" for i in range(1500)))
    return d / "x.csv", "x.csv"


CASES = {
    "truncated header": (_truncated_header, [], "rec.hea"),
    "inconsistent header": (_inconsistent_header, [], "rec.hea"),
    "non-numeric sample count": (_bad_count, [], "number of samples"),
    "signal file shorter than header": (_short_signal_file, [], "shorter"),
    "wrong array shape": (_wrong_shape, ["--fs", "500"], "shape"),
    "NaN samples": (_nan, ["--fs", "500"], "NaN"),
    "Inf samples": (_inf, ["--fs", "500"], "Inf"),
    "rate under 100 Hz": (_low_rate, ["--fs", "50"], "100 Hz"),
    "under 2 s": (_too_short, ["--fs", "100"], "2 s"),
    "unknown lead names": (_unknown_leads, ["--fs", "100"], "FOO"),
}


# a WFDB and an NPY case run in `make test-fast`; the rest are `slow` (two CLI runs each)
FAST = ("truncated header", "NaN samples")


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_bad_record_is_one_clear_line(case, ecgret_env, shared_data, tmp_path):
    make, opts, needle = CASES[case]
    path, _ = make(tmp_path, _hr06005(shared_data, tmp_path))
    p = run_ecgret(["query", *opts, str(path)], ecgret_env)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("ecgret: error:")]
    assert len(errors) == 1, p.stderr
    assert needle.lower() in errors[0].lower(), errors[0]
    j = run_ecgret(["query", "--json", *opts, str(path)], ecgret_env)
    rec = json.loads(j.stdout.splitlines()[0])
    assert rec["ok"] is False and rec["error_type"] in ("RecordError", "QualityError")


def test_report_never_replaces_a_record_a_device_or_a_fifo(ecgret_env, shared_data, tmp_path):
    """``--report`` replaced whatever was at its path: ``query --report *.hea`` turned the first record into the
    report (rc 0, the record lost), a FIFO or a device node (as root, /dev/null) became a regular file, and
    ``--report ''`` was silently skipped. Now each is refused before any work, and an earlier report is replaced."""
    import os
    _hr06005(shared_data, tmp_path)
    hea = (tmp_path / "rec.hea").read_bytes()
    p = run_ecgret(["query", "--no-overlay", "--top-k", "1", "--report", tmp_path / "rec.hea", tmp_path / "rec.hea"],
                   ecgret_env)
    assert p.returncode == 2 and "is not an ecgret report" in p.stderr and "Traceback" not in p.stderr
    assert (tmp_path / "rec.hea").read_bytes() == hea
    os.mkfifo(tmp_path / "pipe")
    p = run_ecgret(["query", "--no-overlay", "--report", tmp_path / "pipe", tmp_path / "rec.hea"], ecgret_env)
    assert p.returncode == 2 and "not a regular file" in p.stderr and (tmp_path / "pipe").is_fifo()
    p = run_ecgret(["query", "--no-overlay", "--report", "", tmp_path / "rec.hea"], ecgret_env)
    assert p.returncode == 2 and "empty file name" in p.stderr
    (tmp_path / "mine").write_bytes(b"")  # a user's empty file is theirs too (it was replaced)
    p = run_ecgret(["query", "--no-overlay", "--report", tmp_path / "mine", tmp_path / "rec.hea"], ecgret_env)
    assert p.returncode == 2 and "an empty file" in p.stderr and (tmp_path / "mine").read_bytes() == b""
    out = tmp_path / "r.html"
    for _ in range(2):  # a new file, then the earlier report replaced
        p = run_ecgret(["query", "--no-overlay", "--top-k", "1", "--report", out, tmp_path / "rec.hea"], ecgret_env)
        assert p.returncode == 0 and "report written" in p.stderr, p.stderr
    assert "rec" in out.read_text()
