"""`ecgret` end to end in subprocesses, on real records and the real test bundle."""
from __future__ import annotations

import json
import os
import resource
import shutil
import threading

import numpy as np
import pytest

from tests.fixtures_bundle import bundle_copy, ecgret_env, run_ecgret, test_bundle  # noqa: F401


@pytest.fixture
def cinc(shared_data):
    return shared_data / "cinc2021-sample"


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _one_line_errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("ecgret: error:")]


def test_query_many_files_one_bad_does_not_stop_the_others(ecgret_env, cinc, tmp_path):
    from edge.io import read_record
    rec = read_record(cinc / "HR06005.hea")
    short = tmp_path / "short.csv"
    np.savetxt(short, rec.signal[:750, :2], delimiter=",", header="I,II", comments="")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((5000, 12)))
    unknown = tmp_path / "ecg.xyz"
    unknown.write_text("hello")
    unreadable = tmp_path / "locked.npy"
    unreadable.write_bytes(b"\x93NUMPY garbage")
    files = [cinc / "HR06005.hea", tmp_path / "missing.hea", short, flat, unknown, unreadable, cinc / "E07500"]
    p = run_ecgret(["query", "--json", "--fs", "500", "--top-k", "3", *files], ecgret_env)
    assert p.returncode == 1
    out = _lines(p.stdout)
    assert [o["query"].split("/")[-1] for o in out][0] in ("HR06005", "HR06005.hea")
    assert len(out) == len(files)
    assert [o["ok"] for o in out] == [True, False, False, False, False, False, True]
    good = out[0]
    assert set(good) >= {"query", "quality", "consensus", "matches"}
    assert good["matches"][0]["case_id"] == "ptbxl:6005"
    # the recording is PTB-XL 6005, which is in the archive: the answer says so
    assert good["archive_twin"]["case_id"] == "ptbxl:6005" and "in the archive" in good["archive_twin"]["why"]
    import edge
    assert good["ecgret_version"] == edge.__version__ and len(good["bundle_id"]) == 64
    assert good["utc"].endswith("Z") and out[1]["bundle_id"] == good["bundle_id"]   # error lines too
    assert good["matches"][0]["names"]["NORM"] == "normal ECG"
    assert {"label", "support", "count", "name"} <= set(good["consensus"]["super_class"][0])
    assert set(good["matches"][0]) >= {"case_id", "score", "super_class", "sub_class", "rhythm", "statements",
                                       "report"}
    assert len(good["matches"]) == 3
    assert set(good["consensus"]) >= {"summary", "super_class", "rhythm", "statements"}
    errs = _one_line_errors(p.stderr)
    assert len(errs) == 5
    assert "missing.hea" in out[1]["error"]
    assert "2 s" in out[2]["error"]
    assert out[3]["error_type"] == "QualityError" and "no usable lead" in out[3]["error"]
    assert "ecg.xyz" in out[4]["error"]
    assert "locked.npy" in out[5]["error"]


def test_query_human_output(ecgret_env, cinc):
    import re
    p = run_ecgret(["query", "--top-k", "4", "--leads", "I,II,V2", cinc / "E07509"], ecgret_env)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    im, inot, isim = out.index("measured:"), out.index("NOT A DIAGNOSIS"), out.index(" of 4 similar cases: ")
    ilim = out.index("only leads I, II, III, aVR, aVL, aVF, V2 usable: these leads cannot")
    iq, it, ic = out.index("quality:"), out.index("rank"), out.index("consensus of 4 cases")
    assert im < inot < isim < ilim < iq < it < ic
    assert re.search(r"\d of 4 similar cases: .*\w \[[A-Z/]+\]", out)      # plain words, codes in brackets
    assert "LVH" in out[ilim:iq]                                                 # V5/V6 missing: not shown
    assert "missing: V1, V3, V4, V5, V6" in out
    assert re.search(r"^ecgret \S+, bundle [0-9a-f]{16}, \d{4}-\d\d-\d\dT[\d:]{8}Z$", out, re.M)
    rows = [line for line in out.splitlines() if re.match(r"^\s+\d+\s+\S+:\S+\s+\d\.\d{3}\s", line)]
    assert len(rows) == 4


def test_info(ecgret_env, test_bundle):
    m = json.loads((test_bundle / "manifest.json").read_text())
    n = m["index"]["n_items"]
    p = run_ecgret(["info"], ecgret_env)
    assert p.returncode == 0, p.stderr
    for word in (m["name"], "int8", f"{n} items", "superclasses", "NORM", "overlay", "evaluation"):
        assert word in p.stdout
    j = json.loads(run_ecgret(["info", "--json"], ecgret_env).stdout)
    assert j["index"]["n_items"] == n and j["overlay"]["n_cases"] == 0


@pytest.mark.parametrize("damage,needle", [
    ("version", "format_version"), ("index", "index.ann"), ("encoder", "encoder.tflite"), ("gone", "no bundle")])
def test_bad_bundle_is_one_line(bundle_copy, ecgret_env, cinc, damage, needle):
    if damage == "version":
        m = json.loads((bundle_copy / "manifest.json").read_text())
        m["format_version"] = 2
        (bundle_copy / "manifest.json").write_text(json.dumps(m))
    elif damage in ("index", "encoder"):
        p = bundle_copy / ("index.ann" if damage == "index" else "encoder.tflite")
        data = bytearray(p.read_bytes())
        data[100:140] = b"\xff" * 40
        p.write_bytes(bytes(data))
    else:
        shutil.rmtree(bundle_copy)
    p = run_ecgret(["query", "--bundle", bundle_copy, cinc / "HR06005"], ecgret_env)
    assert p.returncode == 1
    errs = _one_line_errors(p.stderr)
    assert len(errs) == 1 and needle in errs[0]
    assert p.stdout == ""


def test_usage_errors(ecgret_env, cinc):
    p = run_ecgret(["query", "--leads", "I,QQ", cinc / "HR06005"], ecgret_env)
    assert p.returncode == 2 and "unknown lead name 'QQ'" in p.stderr and "Traceback" not in p.stderr
    p = run_ecgret(["query", "--top-k", "0", cinc / "HR06005"], ecgret_env)
    assert p.returncode == 2


@pytest.mark.slow
def test_enroll_query_forget(ecgret_env, cinc, tmp_path):
    rec = cinc / "JS20001"
    p = run_ecgret(["enroll", rec, "--text", "confirmed: sinus rhythm, old inferior MI", "--labels", "MI,IMI,SR"],
                   ecgret_env)
    assert p.returncode == 0, p.stderr
    assert "enrolled local:1" in p.stdout
    p = run_ecgret(["query", "--json", rec], ecgret_env)
    top = _lines(p.stdout)[0]["matches"][0]
    assert top["case_id"] == "local:1" and top["source"] == "overlay" and top["score"] > 0.975   # float16 store9
    assert top["super_class"] == ["MI"] and top["sub_class"] == ["IMI"] and top["rhythm"] == ["SR"]
    p = run_ecgret(["query", "--json", "--no-overlay", rec], ecgret_env)
    assert _lines(p.stdout)[0]["matches"][0]["source"] == "bundle"
    # duplicate id and a full disk: one line, nothing changed
    p = run_ecgret(["enroll", rec, "--text", "x", "--id", "local:1"], ecgret_env)
    assert p.returncode == 1 and "already exists" in _one_line_errors(p.stderr)[0]
    ov_file = next((tmp_path / "ecgret-home" / "overlay").glob("*/overlay.json"))
    before = ov_file.read_bytes()

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 64, len(before) + 64))
    p = run_ecgret(["enroll", rec, "--text", "y" * 3000, "--force"], dict(ecgret_env, PYTHONDONTWRITEBYTECODE="1"),
                   preexec_fn=cap)
    assert p.returncode == 1
    assert "could not write the overlay" in _one_line_errors(p.stderr)[0]
    assert ov_file.read_bytes() == before
    p = run_ecgret(["forget", "local:1"], ecgret_env)
    assert p.returncode == 0 and "forgot local:1" in p.stdout
    p = run_ecgret(["forget", "local:1"], ecgret_env)
    assert p.returncode == 1 and "no enrolled case" in _one_line_errors(p.stderr)[0]


@pytest.mark.slow
def test_enroll_checks_labels_text_and_duplicates(ecgret_env, cinc, tmp_path):
    a, b = cinc / "JS20001", cinc / "E07509"
    p = run_ecgret(["enroll", a, "--text", "x", "--labels", "AFIBB,norm"], ecgret_env)
    assert p.returncode == 2 and "'AFIBB' is not a PTB-XL code; did you mean AFIB" in p.stderr, p.stderr
    p = run_ecgret(["enroll", a, "--text", "  "], ecgret_env)
    assert p.returncode == 2 and "--text" in p.stderr and "empty" in p.stderr
    p = run_ecgret(["enroll", a, "--text", "left atrial enlargement", "--labels", "LAO/LAE,norm,sr"], ecgret_env)
    assert p.returncode == 0, p.stderr
    assert "enrolled local:1" in p.stdout and "left atrial overload or enlargement [LAO/LAE]" in p.stdout
    p = run_ecgret(["enroll", a, "--text", "the same again"], ecgret_env)      # the same recording: refused
    assert p.returncode == 1 and "already enrolled as local:1" in _one_line_errors(p.stderr)[0]
    assert "--force" in p.stderr
    p = run_ecgret(["enroll", b, "--text", "RBBB, confirmed", "--labels", "CRBBB,SBRAD"], ecgret_env)
    assert p.returncode == 0 and "enrolled local:2" in p.stdout, p.stderr
    listed = _lines(run_ecgret(["cases", "list", "--json"], ecgret_env).stdout)
    assert [c["case_id"] for c in listed] == ["local:1", "local:2"]
    one = listed[0]
    assert one["super_class"] == ["HYP", "NORM"] and one["sub_class"] == ["LAO/LAE", "NORM"]
    assert one["rhythm"] == ["SR"] and one["statements"] == "sinus rhythm; left atrial overload/enlargement; normal ECG"
    assert one["names"]["LAO/LAE"] == "left atrial overload or enlargement"
    from edge.leads import LEADS12
    assert one["signal"] == {"fs": 100.0, "leads": list(LEADS12), "seconds": 10.0}   # the 12 leads recorded
    assert listed[1]["super_class"] == ["CD"] and listed[1]["sub_class"] == ["CRBBB"]
    text = " ".join(run_ecgret(["cases", "list"], ecgret_env).stdout.split())
    assert "local:2" in text and "complete right bundle branch block [CRBBB]" in text
    # forget of several ids is all or nothing; ids are never given twice
    p = run_ecgret(["forget", "local:1", "local:9"], ecgret_env)
    assert p.returncode == 1 and "nothing was removed" in p.stderr
    p = run_ecgret(["forget", "local:1", "local:2"], ecgret_env)
    assert p.returncode == 0 and "forgot local:1, local:2 (0 local case(s) left" in p.stdout
    p = run_ecgret(["enroll", b, "--text", "RBBB, confirmed"], ecgret_env)
    assert "enrolled local:3" in p.stdout, p.stderr


@pytest.mark.slow
def test_cases_reembed_moves_local_cases_to_a_new_bundle(ecgret_env, bundle_copy, cinc, test_bundle):
    from edge.bundle import load_bundle
    p = run_ecgret(["enroll", cinc / "E07509", "--text", "RBBB, confirmed", "--labels", "CRBBB"], ecgret_env)
    assert p.returncode == 0, p.stderr
    # a "new" bundle: another manifest (so another id), the same encoder
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["name"] = "test-bundle-upgraded"
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    new = dict(ecgret_env, ECGRET_BUNDLE=str(bundle_copy))
    old_id, new_id = load_bundle(test_bundle).id, load_bundle(bundle_copy).id
    assert old_id != new_id
    assert _lines(run_ecgret(["cases", "list", "--json"], new).stdout) == []
    p = run_ecgret(["cases", "reembed"], new)
    assert p.returncode == 0, p.stderr
    assert "moved 1 case(s)" in p.stdout and "local:1" in p.stdout
    moved = _lines(run_ecgret(["cases", "list", "--json"], new).stdout)
    assert [c["case_id"] for c in moved] == ["local:1"] and moved[0]["sub_class"] == ["CRBBB"]
    assert moved[0]["bundle_id"] == new_id
    # the same encoder: the re-embedded case answers its own recording at similarity ~1
    top = _lines(run_ecgret(["query", "--json", cinc / "E07509"], new).stdout)[0]["matches"][0]
    assert top["case_id"] == "local:1" and top["source"] == "overlay" and top["score"] > 0.975   # float16 store
    p = run_ecgret(["cases", "reembed", "--from", old_id], new)   # a rerun moves nothing twice
    assert p.returncode == 0 and "moved 0 case(s)" in p.stdout and "already here: local:1" in p.stderr


def test_demo_runs_the_simulated_board(ecgret_env):
    p = run_ecgret(["demo", "--speed", "0", "--json", "--top-k", "5"], ecgret_env, timeout=180)
    assert p.returncode == 0, p.stderr
    res = _lines(p.stdout)[0]
    assert res["ok"] and res["query"] == "demo:E07506" and len(res["matches"]) == 5
    assert res["leads"] == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert "acquired 5000 samples (10.0 s) at 500 Hz, 8 channels (" in p.stderr and "CRC errors" in p.stderr
    assert "not in the shipped archive" in p.stderr and "demo: E07506 is not in the archive" in p.stderr
    assert "\r" not in p.stderr                      # no progress lines when stderr is not a terminal
    assert res["archive_twin"] is None and res["bundle_id"]


def test_listen_saves_wfdb_and_result(ecgret_env, cinc, tmp_path):
    from edge.io import read_record
    from firmware_bridge.simulator import Simulator
    src = read_record(cinc / "HR06005.hea")
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    cols = [src.leads.index(x) for x in leads]
    save = tmp_path / "saved"
    with Simulator(src.signal[:, cols], src.fs, leads, board="native", speed=0) as sim:
        p = run_ecgret(["listen", "--port", sim.port, "--seconds", "4", "--json", "--save", save, "--any-speed"],
                       ecgret_env, timeout=120)
    assert p.returncode == 0, p.stderr
    res = _lines(p.stdout)[0]
    assert res["ok"] and len(res["matches"]) == 10
    heas = list(save.glob("*.hea"))
    assert len(heas) == 1
    saved = read_record(heas[0])
    assert saved.signal.shape == (2000, 8) and saved.fs == 500
    assert np.allclose(saved.signal, src.signal[:2000, cols], atol=2e-3)
    assert json.loads(heas[0].with_suffix(".json").read_text())["matches"] == res["matches"]
    assert json.loads(heas[0].with_suffix(".json").read_text())["bundle_id"] == res["bundle_id"]
    assert "acquired 2000 samples (4.0 s) at 500 Hz, 8 channels (" in p.stderr   # as demo says it


@pytest.mark.slow
def test_bench_reports(ecgret_env, tmp_path):
    p = run_ecgret(["bench", "--n", "6", "--warmup", "1", "--cold-runs", "1", "--json"], ecgret_env, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["machine"]["cores"] == os.cpu_count() and r["machine"]["cpu"]
    assert r["n_records"] == 6
    for th, st in r["threads"].items():
        assert set(st) >= {"preprocess", "quality", "image", "encode", "search", "total"}
        assert st["total"]["p50_ms"] > 0 and "_totals" not in st
    assert r["threads"]["1"]["measure"]["p50_ms"] > 0          # the measurement stage is timed ...
    assert r["without_measurements"]["measure"]["p50_ms"] < 0.05 < r["threads"]["1"]["measure"]["p50_ms"]
    assert r["measurement_cost_ms"]["n"] == 6                  # ... and its paired cost, query by query
    assert len(r["loadavg_start"]) == 3 and len(r["loadavg_end"]) == 3
    assert r["cold_start"]["peak_rss_mb"] > 0 and r["cold_start"]["first_result"]["p50_ms"] > 0
    # the README's latency table is rendered from this output (benchmarks/bench_table.py), values as measured
    import subprocess
    import sys

    from edge.paths import repo_root
    out = tmp_path / "bench.json"
    out.write_text(p.stdout)
    t = subprocess.run([sys.executable, str(repo_root() / "benchmarks" / "bench_table.py"), str(out)],
                       capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    assert f"| **end to end** | **{r['threads']['1']['total']['p50_ms']:.2f}** |" in t.stdout
    assert f"| encode | {r['threads']['1']['encode']['p50_ms']:.2f} |" in t.stdout
    held = r["threads"]["1"]["total"]["p50_ms"] <= 5.0
    assert f"end to end p50, 1 thread: {r['threads']['1']['total']['p50_ms']:.2f} ms (target <= 5 ms): " + (
        "held" if held else "not held") in t.stdout
    assert r["machine"]["cpu"] in t.stdout


@pytest.mark.slow
def test_listen_ctrl_c_answers_and_saves_what_arrived(ecgret_env, cinc, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from edge.io import read_record
    from edge.paths import repo_root
    from firmware_bridge.simulator import Simulator
    src = read_record(cinc / "HR06005.hea")
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    cols = [src.leads.index(x) for x in leads]
    save = tmp_path / "saved"
    with Simulator(src.signal[:, cols], src.fs, leads, board="native", speed=1.0, loop=True) as sim:
        p = subprocess.Popen([sys.executable, "-m", "edge.cli", "listen", "--port", sim.port, "--seconds", "600",
                              "--json", "--save", str(save)], env=ecgret_env, cwd=repo_root(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # as from a terminal: a test run started in the background (`cmd &`) has SIGINT
                             # ignored, the child would inherit that, and Python then never raises Ctrl-C
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        t0 = time.monotonic()
        while sim.stats["samples"] < 4 * src.fs and p.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.05)                 # about 4 s streamed in real time
        if p.poll() is not None:             # it must still be listening: 600 s were asked for
            out, err = p.communicate()
            pytest.fail(f"listen ended by itself after {time.monotonic() - t0:.1f} s, "
                        f"simulator stats {sim.stats}: {err[-2000:]}")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "Traceback" not in err and "interrupted" in err
    res = _lines(out)[0]
    assert res["ok"], res
    heas = list(save.glob("*.hea"))
    assert len(heas) == 1
    n = read_record(heas[0]).signal.shape[0]
    assert 2.0 * 500 <= n < 60 * 500


_RSS = ("import atexit, resource, sys\n"
        "atexit.register(lambda: print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
        "from edge.cli import main\n"
        "main(sys.argv[1:])\n")


def _query_rss_kb(env, files, *extra) -> tuple[int, object]:
    import subprocess
    import sys
    from edge.paths import repo_root
    p = subprocess.run([sys.executable, "-c", _RSS, "query", "--no-overlay", "--top-k", "1", "--json", *map(str, extra),
                        *map(str, files)], env=env, capture_output=True, text=True, timeout=300, cwd=repo_root())
    rss = [int(ln.split()[1]) for ln in p.stderr.splitlines() if ln.startswith("maxrss ")]
    return (rss[0] if rss else -1), p


def test_a_long_batch_takes_no_more_memory_than_a_short_one(ecgret_env, shared_data, tmp_path):
    """Every answer of a batch was held to the end, report or not: ~0.3 MB a file (542 MB for 1,600 files). Now
    only a report holds them, and it holds at most MAX_QUERIES (a longer batch with --report is refused at once)."""
    from edge.report import MAX_QUERIES
    rec = shared_data / "cinc2021-sample" / "E07500.hea"
    short, p1 = _query_rss_kb(ecgret_env, [rec] * 5)
    long, p2 = _query_rss_kb(ecgret_env, [rec] * 150)
    assert p1.returncode == p2.returncode == 0 and len(p2.stdout.splitlines()) == 150, p2.stderr
    assert long - short < 12_000, (short, long)     # the old code: +45 MB for the 145 more files
    _, p = _query_rss_kb(ecgret_env, [rec] * (MAX_QUERIES + 1), "--report", tmp_path / "r.html")
    assert p.returncode == 2 and f"at most {MAX_QUERIES} queries" in p.stderr and not p.stdout


def test_error_lines_and_json_lines_survive_any_lone_surrogate(capsys):
    """Undecodable bytes of a file name come as surrogates U+DC80-U+DCFF, but a JSON file's escapes can hold any
    (U+D800): the error line encoded that with surrogateescape and raised UnicodeEncodeError instead."""
    from edge.cli_common import echo_json, short
    assert short("bad \ud800 and \udcff name") == "bad \ufffd and \ufffd name"
    echo_json({"query": "x\ud800"})
    assert json.loads(capsys.readouterr().out) == {"query": "x\ufffd"}


def test_bench_reads_the_shared_array_as_the_readers_do(tmp_path):
    """``ecgret bench`` np.load-ed ``$ECGRET_DATA/ptbxl-subset/signals_100hz.npy``: a FIFO there hung it, an object
    array or a truncated file was an internal error. Now those records are left out, and real ones read as before."""
    import os

    from edge.bench import _archive_rows
    from edge.errors import RecordError
    good = np.arange(3 * 1000 * 12, dtype=np.float16).reshape(3, 1000, 12)
    np.save(tmp_path / "good.npy", good)
    rows = _archive_rows(tmp_path / "good.npy", 2)
    assert len(rows) == 2 and np.array_equal(rows[1], good[1].astype(np.float64))
    os.mkfifo(tmp_path / "fifo.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:5000])
    np.save(tmp_path / "flat.npy", np.zeros((3, 12)))
    for name in ("fifo.npy", "obj.npy", "trunc.npy", "flat.npy"):
        with pytest.raises(RecordError):
            _archive_rows(tmp_path / name, 2)


def test_reembed_from_a_foreign_overlay_reads_no_file_it_names(ecgret_env, cinc, tmp_path):
    """An overlay handed over from elsewhere (``--from DIR``) names files for its cases without a stored signal:
    they are not read (``/etc/passwd`` was opened, and another record copied into this device's overlay)."""
    d = tmp_path / "foreign"
    d.mkdir()
    doc = {"format": "ecgret-overlay", "format_version": 2, "bundle": "elsewhere", "dim": 16, "next_id": 2,
           "cases": [{"case_id": "local:1", "embedding": [1.0] + [0.0] * 15, "record": str(cinc / "E07509.hea")}]}
    (d / "overlay.json").write_text(json.dumps(doc))
    p = run_ecgret(["cases", "reembed", "--from", str(d)], ecgret_env)
    assert p.returncode == 1 and "moved 0 case(s)" in p.stdout, (p.stdout, p.stderr)
    assert "not read from an overlay that is not this device's own" in p.stderr and "Traceback" not in p.stderr
    assert _lines(run_ecgret(["cases", "list", "--json"], ecgret_env).stdout) == []


def test_listen_refuses_samples_arriving_at_another_rate_and_keeps_them(ecgret_env, cinc, tmp_path):
    """A board that says 250 Hz but delivers 500 samples a second (or a wrong --fs for an ASCII board): every
    interval would be measured twice as long (34 bpm "sinus bradycardia" for 68). Refused, not answered; kept with
    --save. The same board read with --any-speed (a simulator replaying fast) is answered."""
    from edge.io import read_record
    from firmware_bridge.simulator import Simulator
    src = read_record(cinc / "HR06005.hea")
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    x = src.signal[:, [src.leads.index(v) for v in leads]][::2]  # 250 Hz: streamed at twice real time
    save = tmp_path / "saved"
    with Simulator(x, 250.0, leads, board="native", speed=2.0) as sim:
        p = run_ecgret(["listen", "--port", sim.port, "--seconds", "8", "--json", "--save", save], ecgret_env,
                       timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "samples arrived at" in p.stderr and "x the stated 250 Hz" in p.stderr, p.stderr
    (out,) = _lines(p.stdout)
    assert out["ok"] is False and "samples arrived at" in out["error"]
    assert len(list(save.glob("*.hea"))) == 1 and len(list(save.glob("*.json"))) == 1
    with Simulator(x, 250.0, leads, board="native", speed=2.0) as sim:
        p = run_ecgret(["listen", "--port", sim.port, "--seconds", "8", "--json", "--any-speed"], ecgret_env,
                       timeout=120)
    assert p.returncode == 0 and _lines(p.stdout)[0]["ok"], p.stderr


def test_listen_checks_the_save_folder_before_acquiring(ecgret_env, tmp_path):
    """--save into a folder that cannot be made (a file in the way): refused before any acquisition (the whole
    recording was made first, then lost)."""
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    p = run_ecgret(["listen", "--port", "/dev/ecgret-no-such-port", "--save", blocker / "rec"], ecgret_env,
                   timeout=60)
    assert p.returncode == 1 and "--save" in p.stderr and "nothing was acquired" in p.stderr, p.stderr
    assert "no-such-port" not in p.stderr and blocker.read_text() == "mine"


def test_a_save_that_fails_half_way_leaves_no_part_of_the_record(tmp_path, monkeypatch, cinc):
    """A full disk after the .dat was published left a .dat without its .hea and .json: now removed again."""
    import edge.atomicio as aio
    from edge.errors import EcgretError
    from edge.io import read_record
    from edge.save import save_acquisition
    rec = read_record(cinc / "HR06005.hea")

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(aio, "atomic_write", full)
    with pytest.raises(EcgretError, match="No space left"):
        save_acquisition(rec, {"ok": True}, tmp_path / "s", "x")
    assert list((tmp_path / "s").iterdir()) == []
