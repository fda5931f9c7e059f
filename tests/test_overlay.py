"""The local overlay: enroll, forget, exact search, atomic writes under SIGKILL and a full disk."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edge.errors import OverlayError
from edge.overlay import Overlay, overlay_dir, overlay_home
from edge.overlay_file import FILE
from edge.paths import repo_root

DIM = 16


def _vec(seed):
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_enroll_search_forget(tmp_path):
    ov = Overlay(tmp_path / "ov", DIM, "h1")
    assert len(ov) == 0 and ov.search(_vec(0), 5) == []
    a = ov.enroll({"report": "inferior MI, confirmed", "super_class": ["MI"]}, _vec(1))
    b = ov.enroll({"report": "normal", "case_id": "clinic:7"}, _vec(2) * 3)  # normalised on enrol
    assert (a, b) == ("local:1", "clinic:7")
    again = Overlay(tmp_path / "ov", DIM, "h1")
    assert [c["case_id"] for c in again.cases] == ["local:1", "clinic:7"]
    assert again.cases[0]["super_class"] == ["MI"] and again.cases[0]["source"] == "local"
    hits = again.search(_vec(2), 2)
    assert hits[0][0]["case_id"] == "clinic:7" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert hits[1][1] == pytest.approx(float(_vec(1) @ _vec(2)), abs=1e-5)
    with pytest.raises(OverlayError, match="already exists"):
        again.enroll({"case_id": "clinic:7"}, _vec(3))
    with pytest.raises(OverlayError, match="already exists"):
        again.enroll({"case_id": "ptbxl:1"}, _vec(3), reserved_ids={"ptbxl:1"})
    assert again.forget("local:1")["report"] == "inferior MI, confirmed"
    with pytest.raises(OverlayError, match="no enrolled case 'local:1'"):
        again.forget("local:1")
    assert again.next_id() == "local:2"  # ids are never given twice, not even after forget
    assert [c["case_id"] for c in Overlay(tmp_path / "ov", DIM, "h1").cases] == ["clinic:7"]


def test_a_local_id_past_the_limit_is_refused_and_the_overlay_stays_readable(tmp_path):
    """``--id local:<n>`` with n >= 10**12 once wrote next_id n + 1, which reading refuses: every enrolled case
    became unreadable. Now the id is refused and nothing is written; a file naming such an id is malformed."""
    ov = Overlay(tmp_path, DIM, "h1")
    ov.enroll({"report": "kept"}, _vec(0))
    with pytest.raises(OverlayError, match="local:999999999999"):
        ov.enroll({"case_id": "local:1000000000000"}, _vec(1))
    assert ov.enroll({"case_id": "local:999999999999"}, _vec(2)) == "local:999999999999"
    again = Overlay(tmp_path, DIM, "h1")
    assert [c["case_id"] for c in again.cases] == ["local:1", "local:999999999999"]
    with pytest.raises(OverlayError, match="used up"):  # the next automatic id would pass the limit
        again.enroll({"report": "one more"}, _vec(3))
    assert len(Overlay(tmp_path, DIM, "h1")) == 2
    doc = json.loads((tmp_path / FILE).read_text())
    doc["cases"][1]["case_id"] = "local:1000000000000"
    (tmp_path / FILE).write_text(json.dumps(doc))
    with pytest.raises(OverlayError, match=r"cases\[1\]\.case_id"):
        Overlay(tmp_path, DIM, "h1")


def test_overlay_belongs_to_one_bundle(tmp_path):
    Overlay(tmp_path, DIM, "h1").enroll({}, _vec(0))
    with pytest.raises(OverlayError, match="bundle"):
        Overlay(tmp_path, DIM, "h2")
    with pytest.raises(OverlayError, match="dim"):
        Overlay(tmp_path, DIM + 1, "h1")
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(OverlayError, match="not valid JSON"):
        Overlay(tmp_path, DIM, "h1")


def test_location(monkeypatch, tmp_path):
    monkeypatch.setenv("ECGRET_HOME", str(tmp_path / "home"))
    assert overlay_dir("abc") == tmp_path / "home" / "overlay" / "abc"
    monkeypatch.delenv("ECGRET_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert overlay_home() == tmp_path / "xdg" / "ecgret" / "overlay"


_WRITER = """
import sys, numpy as np
from edge.overlay import Overlay
ov = Overlay(sys.argv[1], {dim}, "h")
rng = np.random.default_rng(int(sys.argv[2]))
pad = "x" * 4000  # large entries: writes take long enough to be interrupted
while True:
    if len(ov) > 40:
        gone = ov.forget(ov.cases[0]["case_id"])["case_id"]
        print("F", gone, flush=True)
    cid = ov.enroll({{"report": pad}}, rng.normal(size={dim}))
    print("E", cid, flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_write_never_corrupts(tmp_path):
    """Kill a writer with SIGKILL at random points: the overlay is always readable and holds exactly the
    acknowledged state, give or take the one operation in flight."""
    d = tmp_path / "ov"
    env = dict(os.environ, PYTHONPATH=str(repo_root()))
    rng = np.random.default_rng(0)
    expected: set[str] = set()
    for round_ in range(12):
        p = subprocess.Popen([sys.executable, "-c", _WRITER.format(dim=DIM), str(d), str(round_)],
                             stdout=subprocess.PIPE, text=True, env=env)
        first = p.stdout.readline()   # the writer is up and has acknowledged one write (a loaded machine starts late)
        time.sleep(float(rng.uniform(0, 0.6)))
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        out = first + out
        assert p.returncode == -signal.SIGKILL
        for line in out.splitlines():
            op, cid = line.split()
            (expected.add if op == "E" else expected.discard)(cid)
        ov = Overlay(d, DIM, "h")  # must load: never half-written
        got = {c["case_id"] for c in ov.cases}
        # at most the one operation in flight differs from the acknowledged state
        assert len(got ^ expected) <= 1, (round_, sorted(got ^ expected))
        expected = got
        json.loads((d / FILE).read_text())
        assert np.allclose(np.linalg.norm(ov.embeddings, axis=1), 1.0, atol=1e-5)
    assert len(expected) > 5
    # a later write cleans the temporary files a killed writer left
    Overlay(d, DIM, "h").enroll({}, _vec(1000))  # (round 9's writer enrolled _vec(9) itself: a duplicate)
    assert not list(d.glob(".overlay.json.tmp-*"))


def test_full_disk_leaves_the_overlay_intact(tmp_path):
    d = tmp_path / "ov"
    ov = Overlay(d, DIM, "h")
    for i in range(3):
        ov.enroll({"report": "y" * 2000}, _vec(i))
    before = (d / FILE).read_bytes()
    code = (f"import sys\nfrom edge.overlay import Overlay\nfrom edge.errors import OverlayError\nimport numpy as np\n"
            f"ov = Overlay({str(d)!r}, {DIM}, 'h')\n"
            f"try:\n    ov.enroll({{'report': 'z' * 4000}}, np.ones({DIM}))\nexcept OverlayError as e:\n"
            f"    print(e); sys.exit(3)\n")
    limit = len(before) + 100   # the new file cannot be written in full: EFBIG, as on a full disk

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=cap,
                       env=dict(os.environ, PYTHONPATH=str(repo_root()), PYTHONDONTWRITEBYTECODE="1"))
    assert p.returncode == 3, p.stderr
    assert "could not write the overlay" in p.stdout and "nothing was changed" in p.stdout
    assert (d / FILE).read_bytes() == before
    assert not list(d.glob(".overlay.json.tmp-*"))
    assert len(Overlay(d, DIM, "h")) == 3


def test_no_write_leaves_a_file_reading_refuses(tmp_path, monkeypatch):
    """An enrol that took overlay.json past the 64 MiB reading limit reported success, and every later command was
    refused the whole overlay. Now the write is refused and the file stays as it was (limits made small here)."""
    import edge.overlay as eo
    import edge.overlay_file as ef
    monkeypatch.setattr(eo, "MAX_BYTES", 6000)
    monkeypatch.setattr(ef, "MAX_BYTES", 6000)
    ov = Overlay(tmp_path, DIM, "h1")
    n = 0
    with pytest.raises(OverlayError, match="over the .* one overlay may hold"):
        for n in range(1, 100):
            ov.enroll({"report": "x" * 500}, _vec(n))
    assert (tmp_path / FILE).stat().st_size <= 6000
    assert len(Overlay(tmp_path, DIM, "h1")) == n - 1 >= 3


def test_a_lone_surrogate_in_the_file_does_not_freeze_the_overlay(tmp_path):
    """JSON escapes can hold a lone surrogate; such a report was read, then every enrol, forget and reembed died
    with an internal UnicodeEncodeError (the overlay could no longer change). It is written back as U+FFFD."""
    ov = Overlay(tmp_path, DIM, "h1")
    ov.enroll({"report": "first"}, _vec(0))
    raw = (tmp_path / FILE).read_text().replace('"first"', '"rep \\udcff"')
    (tmp_path / FILE).write_text(raw)
    again = Overlay(tmp_path, DIM, "h1")
    assert again.enroll({"report": "second"}, _vec(1)) == "local:2"
    back = Overlay(tmp_path, DIM, "h1")
    assert [c["report"] for c in back.cases] == ["rep \ufffd", "second"]
    (tmp_path / FILE).read_bytes().decode("utf-8")   # strict: valid UTF-8


def test_the_lock_is_never_opened_through_a_link(tmp_path):
    """A planted overlay.lock link made enrol create (and lock) a file outside the overlay folder."""
    from edge.overlay import LOCK
    d = tmp_path / "ov"
    d.mkdir()
    os.symlink(tmp_path / "outside" / "made-through-the-link", d / LOCK)
    (tmp_path / "outside").mkdir()
    with pytest.raises(OverlayError, match="lock .*symbolic link"):
        Overlay(d, DIM, "h1").enroll({"report": "x"}, _vec(0))
    assert not (tmp_path / "outside" / "made-through-the-link").exists() and not (d / FILE).exists()
