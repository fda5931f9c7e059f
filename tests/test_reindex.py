"""ecgret-convert bundle --encoder EXISTING --archive OUT --out NEW: a clinic's archive re-indexed with the shipped
encoder, without TensorFlow; the new bundle answers a record of that archive with the record itself."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge.bundle import default_bundle_path, verify_bundle
from edge.io_wfdb import write_wfdb
from edge.leads import LEADS12
from edge.paths import repo_root
from edge.record import Record
from tests.test_import import convert_cli, ludb_reports

pytestmark = pytest.mark.slow  # every test re-embeds an archive through ecgret-convert

# runs ecgret-convert in this process and exits 97 if TensorFlow was imported along the way
NO_TF = ("import runpy, sys\n"
         "sys.argv = ['ecgret-convert'] + sys.argv[1:]\n"
         "try:\n"
         "    runpy.run_module('convert.cli', run_name='__main__')\n"
         "    code = 0\n"
         "except SystemExit as e:\n"
         "    code = e.code or 0\n"
         "sys.exit(97 if 'tensorflow' in sys.modules else code)\n")


def reindex(archive, out, *extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(repo_root()), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("ECGRET_SIGNING_KEY", None)
    return subprocess.run([sys.executable, "-c", NO_TF, "bundle", "--encoder", default_bundle_path(), "--archive",
                           archive, "--out", out, "--no-progress", *extra], capture_output=True, text=True,
                          timeout=600, cwd=repo_root(), env=env)


def query(bundle, record, *extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(repo_root()), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("ECGRET_ALLOW_UNSIGNED", None)
    return subprocess.run([sys.executable, "-m", "edge.cli", "query", "--bundle", bundle, "--json", record, *extra],
                          capture_output=True, text=True, timeout=120, cwd=repo_root(), env=env)


def test_reindex_ludb_archive_and_query_itself(tmp_path, shared_data):
    reports = tmp_path / "reports.csv"
    records = ludb_reports(reports)
    arc, new = tmp_path / "ludb-archive", tmp_path / "ludb-bundle"
    r = convert_cli("import", "wfdb", shared_data / "ludb-dev" / "data", arc, "--reports", reports, "--source",
                    "ludb", "--no-progress")
    assert r.returncode == 0, r.stderr
    r = reindex(arc, new)
    assert r.returncode == 0, r.stderr            # 97: TensorFlow was imported
    assert f"ecgret-convert sign-bundle {new} --key" in r.stderr and "not signed" in r.stderr
    assert not (new / "signature.json").exists()
    v = verify_bundle(new, allow_unsigned=True)
    m, src = v.manifest, verify_bundle(default_bundle_path(), allow_unsigned=False)
    assert m["index"]["n_items"] == len(v.cases) == len(records) == 50
    assert m["index"]["n_trees"] == 1 and m["index"]["recall_at_10"] == 1.0     # 50 items: one leaf
    assert m["training"]["reindexed"]["encoder_from"]["bundle_id"] == src.id
    assert v.data["encoder.tflite"] == src.data["encoder.tflite"]               # the encoder, unchanged
    assert m["preprocessing"] == src.manifest["preprocessing"] and m["imaging"] == src.manifest["imaging"]
    assert m["rerank"]["weight"] == src.manifest["rerank"]["weight"]
    assert all(isinstance(c.get("measured"), dict) and c["measured"].get("heart_rate_bpm") for c in v.cases)
    assert m["archive"]["sources"] == {"ludb": 50}
    card = (new / "MODEL_CARD.md").read_text()
    assert "50 cases of source `ludb`" in card and "Encoder not trained on this archive" in card
    # the device refuses it unsigned, and answers with --allow-unsigned: each record finds itself first
    rec = shared_data / "ludb-dev" / "data" / records[0]
    r = query(new, rec)
    assert r.returncode == 1 and "signature" in r.stderr and r.stderr.count("ecgret: error:") == 1
    for n in (records[0], records[17], records[-1]):
        r = query(new, shared_data / "ludb-dev" / "data" / n, "--allow-unsigned")
        assert r.returncode == 0, r.stderr
        top = json.loads(r.stdout.splitlines()[0])["matches"]
        assert top[0]["case_id"] == f"ludb:{n}" and top[0]["score"] > 0.99, top[:3]
        assert top[1]["score"] < top[0]["score"]
    # the same archive again into the same folder: the same bundle, replaced silently
    r = reindex(arc, new)
    assert r.returncode == 0, r.stderr
    assert verify_bundle(new, allow_unsigned=True).data["index.ann"] == v.data["index.ann"]


@pytest.fixture
def ptbxl_download(tmp_path, shared_data):
    """A PTB-XL download made of 150 real subset records (records100 WFDB files and the two CSVs)."""
    import shutil

    from convert.ptbxl import read_scp_statements
    from tests.test_archive import _codes_for
    root = tmp_path / "ptbxl"
    root.mkdir()
    sub = shared_data / "ptbxl-subset"
    shutil.copy(sub / "scp_statements.csv", root / "scp_statements.csv")
    st = read_scp_statements(root / "scp_statements.csv")
    with open(sub / "cases.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["signal_row"]][::10][:150]
    sig = np.load(sub / "signals_100hz.npy", mmap_mode="r")
    with open(root / "ptbxl_database.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_lr", "filename_hr"])
        for r in rows:
            x = np.asarray(sig[int(r["signal_row"])], dtype=np.float64)
            d, name = r["filename_lr"].rsplit("/", 1)
            write_wfdb(Record(x, 100.0, LEADS12, name=name), root / d, name)
            w.writerow([r["ecg_id"], r["patient_id"], r["report_en"], repr(_codes_for(r, st)), r["strat_fold"],
                        r["filename_lr"], r["filename_hr"]])
    return root, rows


def test_reindex_ptbxl_download_with_limit(tmp_path, ptbxl_download):
    root, rows = ptbxl_download
    arc, new = tmp_path / "arc", tmp_path / "new"
    r = convert_cli("import", "ptbxl", root, arc, "--limit", "140", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "140 cases (140 imported now, 0 already there, 0 failed) of 140 records listed" in r.stdout
    r = reindex(arc, new, "--name", "clinic-test")
    assert r.returncode == 0, r.stderr
    m = verify_bundle(new, allow_unsigned=True).manifest
    assert m["name"] == "clinic-test" and m["index"]["n_items"] == 140
    assert m["index"]["n_trees"] >= 8 and m["index"]["recall_at_10"] >= 0.99     # more than one leaf
    for r_ in (rows[3], rows[120]):
        r = query(new, root / (r_["filename_lr"] + ".hea"), "--allow-unsigned")
        assert r.returncode == 0, r.stderr
        top = json.loads(r.stdout.splitlines()[0])["matches"]
        assert top[0]["case_id"] == f"ptbxl:{r_['ecg_id']}" and top[0]["score"] > 0.99, top[:3]


def test_reindex_refuses_bad_use(tmp_path, ptbxl_download):
    root, _ = ptbxl_download
    r = reindex(tmp_path / "nothing", tmp_path / "new")
    assert r.returncode == 1 and "not an archive folder" in r.stderr and "Traceback" not in r.stderr
    r = convert_cli("bundle", "--encoder", default_bundle_path(), "--out", tmp_path / "new")
    assert r.returncode == 2 and "--archive" in r.stderr
    arc = tmp_path / "arc"
    assert convert_cli("import", "ptbxl", root, arc, "--limit", "5", "--no-progress").returncode == 0
    r = convert_cli("bundle", "--encoder", default_bundle_path(), "--archive", arc, "--out", tmp_path / "new",
                    "--folds", "1-8")
    assert r.returncode == 2 and "without STUDENT_DIR or --folds" in r.stderr
    assert not (tmp_path / "new").exists()
