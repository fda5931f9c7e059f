"""Bundle format: writer (convert.bundle) and reader (edge.bundle) on a real int8 test bundle."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge.bundle import default_bundle_path, load_bundle, resolve_bundle_path
from edge.bundle_format import BUNDLE_FILES, MANIFEST_FILE, WAVEFORMS_FILE
from edge.errors import ArchiveError, BundleError
from tests.fixtures_bundle import bundle_copy, test_bundle  # noqa: F401


def _manifest(d):
    return json.loads((d / MANIFEST_FILE).read_text())


def _save_manifest(d, m):
    (d / MANIFEST_FILE).write_text(json.dumps(m, indent=2))


def _rehash(d, m, fn):
    import hashlib
    data = (d / fn).read_bytes()
    m["files"][fn] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _inputs(d):
    """What write_bundle needs, recovered from an existing bundle (no TensorFlow needed)."""
    b = load_bundle(d, threads=1)
    emb = np.stack([b.index.item(i) for i in range(len(b.index))])
    m = b.manifest
    return dict(tflite_bytes=(d / "encoder.tflite").read_bytes(), embeddings=emb / np.linalg.norm(emb, axis=1,
                keepdims=True), cases=list(b.cases), preprocessing=m["preprocessing"], imaging=m["imaging"],
                n_trees=m["index"]["n_trees"], search_k=m["index"]["search_k"],
                recall_at_10=m["index"]["recall_at_10"], training=m["training"], evaluation=None, name=m["name"])


def test_load_verifies_and_matches_manifest(test_bundle):
    b = load_bundle(test_bundle, threads=1)
    m = b.manifest
    assert m["format"] == "ecgret-bundle" and m["format_version"] == 1
    enc = b.encoder.details()
    for k in ("input_shape", "input_dtype", "output_shape", "output_dtype", "input_zero_point", "output_zero_point"):
        assert enc[k] == m["encoder"][k]
    assert m["encoder"]["quantization"] == "int8-full"
    assert enc["input_dtype"] == "int8" and enc["output_dtype"] == "int8"
    assert len(b.index) == len(b.cases) == m["index"]["n_items"] == m["archive"]["n_cases"]
    assert m["index"]["dim"] == b.encoder.dim
    assert list(b.imaging_config.shape) == m["imaging"]["shape"] == enc["input_shape"][1:]
    assert set(m["files"]) == set(BUNDLE_FILES) | {WAVEFORMS_FILE}   # the shipped bundle carries waveforms
    assert len({c["case_id"] for c in b.cases}) == len(b.cases)
    assert m["index"]["recall_at_10"] >= 0.99
    assert {"python", "numpy", "annoy"} <= set(m["tools"])


def test_index_items_are_the_encoders_embeddings(test_bundle, shared_data):
    """Item i of the index is the device interpreter's embedding of case i (the archive row's image)."""
    from edge.imaging import ecg_image
    b = load_bundle(test_bundle, threads=1)
    sig = np.load(shared_data / "ptbxl-subset" / "signals_100hz.npy", mmap_mode="r")
    from convert.ptbxl import open_subset
    arc = open_subset(shared_data / "ptbxl-subset")
    for i in (0, len(b.cases) // 2, len(b.cases) - 1):
        row = arc.index_of(b.cases[i]["case_id"])
        x = np.asarray(sig[row], dtype=np.float32)
        v = b.encoder.encode(ecg_image(x, np.any(x != 0, axis=0), b.imaging_config, 1000))
        assert abs(np.linalg.norm(v) - 1) < 1e-5
        assert float(v @ b.index.item(i)) > 0.9999


@pytest.mark.parametrize("fn", BUNDLE_FILES)
def test_tampered_file_is_refused_by_name(bundle_copy, fn):
    p = bundle_copy / fn
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{fn}: sha256"):
        load_bundle(bundle_copy)


def test_missing_file_and_folder(bundle_copy, tmp_path):
    (bundle_copy / "index.ann").unlink()
    with pytest.raises(BundleError, match=r"index\.ann: file: missing"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="no bundle folder"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(tmp_path / "empty")


@pytest.mark.parametrize("path,value,field", [
    (("format_version",), 2, "format_version"),
    (("format",), "something-else", "format"),
    (("index", "dim"), 65, "index.dim"),
    (("index", "metric"), "euclidean", "index.metric"),
    (("index", "n_items"), -1, r"index\.n_items is"),   # -1: one less than the cases
    (("encoder", "input_scale"), 0.5, "encoder.input_scale"),
    (("encoder", "output_zero_point"), 17, "encoder.output_zero_point"),
    (("imaging", "shape"), [96, 128, 3], "imaging.shape"),
])
def test_inconsistent_manifest_names_the_field(bundle_copy, path, value, field):
    m = _manifest(bundle_copy)
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    if path == ("index", "n_items"):
        node["n_items"] = sum(1 for _ in (bundle_copy / "cases.jsonl").open()) - 1
    if path == ("index", "dim"):
        # a wrong dimension whose node size does not divide the file (65 does when the index has 272 nodes)
        from edge.index import node_size
        size = (bundle_copy / "index.ann").stat().st_size
        wrong = next(d for d in range(value, value + 16) if size % node_size(d))
        m["index"]["dim"] = m["encoder"]["embedding_dim"] = wrong
        m["encoder"]["output_shape"] = [1, wrong]
        field = "index.ann: dim"     # the index is checked (in numpy) before the encoder is opened
    _save_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match=field if "\\" in field else field.replace(".", r"\.")):
        load_bundle(bundle_copy)


def test_cases_and_index_count_must_agree(bundle_copy):
    """A cases.jsonl one line short (with a matching sha256) is refused: index and cases disagree."""
    p = bundle_copy / "cases.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:-1]))
    m = _manifest(bundle_copy)
    _rehash(bundle_copy, m, "cases.jsonl")
    _save_manifest(bundle_copy, m)
    n = len(lines)
    with pytest.raises(BundleError, match=rf"cases\.jsonl: lines: {n - 1} cases but index\.n_items is {n}"):
        load_bundle(bundle_copy)


def test_corrupted_encoder_with_matching_hash(bundle_copy):
    p = bundle_copy / "encoder.tflite"
    p.write_bytes(b"\x00" * 64 + p.read_bytes()[64:200])
    m = _manifest(bundle_copy)
    _rehash(bundle_copy, m, "encoder.tflite")
    _save_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match=r"encoder\.tflite"):
        load_bundle(bundle_copy)


def test_corrupted_index_with_matching_hash(bundle_copy):
    p = bundle_copy / "index.ann"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    m = _manifest(bundle_copy)
    _rehash(bundle_copy, m, "index.ann")
    _save_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match=r"index\.ann"):
        load_bundle(bundle_copy)


def test_bundle_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("ECGRET_BUNDLE", raising=False)
    assert resolve_bundle_path() == default_bundle_path()
    assert default_bundle_path().parts[-3:] == ("edge", "bundles", "default")
    monkeypatch.setenv("ECGRET_BUNDLE", str(tmp_path))
    assert resolve_bundle_path() == tmp_path
    assert resolve_bundle_path(tmp_path / "x") == tmp_path / "x"


@pytest.mark.slow
def test_write_bundle_roundtrip_and_overwrite_rules(test_bundle, tmp_path):
    from convert.bundle import write_bundle
    kw = _inputs(test_bundle)
    out = write_bundle(tmp_path / "b", **kw)
    b = load_bundle(out, threads=1)
    assert [c["case_id"] for c in b.cases] == [c["case_id"] for c in kw["cases"]]
    # same payload again: fine, no force needed
    write_bundle(tmp_path / "b", **kw)
    # a different bundle into the same folder: refused unless force
    kw2 = dict(kw, cases=kw["cases"][:150], embeddings=kw["embeddings"][:150])
    with pytest.raises(BundleError, match="different bundle"):
        write_bundle(tmp_path / "b", **kw2)
    assert load_bundle(out, threads=1).manifest["index"]["n_items"] == len(kw["cases"])  # untouched
    write_bundle(tmp_path / "b", force=True, **kw2)
    assert load_bundle(out, threads=1).manifest["index"]["n_items"] == 150
    # a folder with other things in it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle"):
        write_bundle(tmp_path / "other", **kw)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_write_bundle_refuses_duplicates_and_leaves_nothing(test_bundle, tmp_path, monkeypatch):
    from convert import bundle as cb
    kw = _inputs(test_bundle)
    cases = list(kw["cases"])
    cases[5] = dict(cases[5], case_id=cases[4]["case_id"])
    with pytest.raises(ArchiveError, match="duplicate case ids"):
        cb.write_bundle(tmp_path / "b", **dict(kw, cases=cases))
    with pytest.raises(ArchiveError, match="L2-normalised"):
        cb.write_bundle(tmp_path / "b", **dict(kw, embeddings=kw["embeddings"] * 2))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cb, "model_card", boom)
    with pytest.raises(OSError):
        cb.write_bundle(tmp_path / "b", **kw)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor a temporary folder


@pytest.mark.slow
def test_tune_index_recall_against_exact(test_bundle):
    from convert.index_build import annoy_recall, build_annoy, exact_topk, tune_index
    kw = _inputs(test_bundle)
    emb = kw["embeddings"].astype(np.float32)
    nt, sk, r = tune_index(emb, k=10, target_recall=0.99)
    assert r >= 0.99
    ann = build_annoy(emb, nt, 0)
    q = np.arange(len(emb))
    assert annoy_recall(ann, emb, q, exact_topk(emb, emb[q], 10), 10, sk) >= 0.98
    # exact search puts an item first for itself
    assert np.array_equal(exact_topk(emb, emb[:20], 1)[:, 0], np.arange(20))


def test_copy_elsewhere_still_loads(test_bundle, tmp_path):
    shutil.copytree(test_bundle, tmp_path / "moved")
    assert load_bundle(tmp_path / "moved", threads=1).hash == load_bundle(test_bundle, threads=1).hash


def test_model_card_sections_from_the_manifest():
    """The card written for the default bundle's manifest: attribution, intended use, the evaluation figures and
    the limitations, with the numbers taken from the manifest."""
    from convert.model_card import model_card
    m = json.loads((default_bundle_path() / MANIFEST_FILE).read_text())
    card = model_card(m)
    for heading in ("## Intended use", "## Data, licences and attribution", "## Evaluation", "## Known limitations",
                    "## Training"):
        assert heading in card
    assert "CC BY 4.0" in card and "Wagner P, Strodthoff N" in card and "*Scientific Data* 2020" in card
    assert "Similar past cases, not a diagnosis" in card
    int8 = m["evaluation"]["metrics"]["student int8 (int8 in/out, LiteRT)"]
    assert f"P@10 {int8['P@10']:.3f}" in card and f"kNN macro-AUROC {int8['kNN_macroAUROC']:.3f}" in card
    assert "AFLT 1" in card and "(SVARR, BIGU, SVTAC, PSVT, AFLT)" in card      # rhythm classes with few cases
    assert "z-scored per lead" in card and "1,625 cases" in card
    # a clinic's archive: its own source named, PTB-XL still credited for the encoder, no figures invented
    m2 = dict(m, archive=dict(m["archive"], sources={"clinic": 50}, n_cases=50, rhythm_counts={"SR": 50}),
              training={"encoder_training": m["training"], "reindexed": {"encoder_from": {"name": "ptbxl-default"}}})
    m2.pop("evaluation")
    card2 = model_card(m2)
    assert "50 cases of source `clinic`" in card2 and "Encoder training data: PTB-XL" in card2
    assert "No evaluation figures" in card2 and "Encoder not trained on this archive" in card2


def test_small_archive_is_one_leaf_and_loads(test_bundle, tmp_path):
    """At most K items (Annoy's leaf capacity): one tree, exact, and the bundle loads and finds itself."""
    from convert.bundle import write_bundle
    from convert.index_build import leaf_capacity, tune_index
    kw = _inputs(test_bundle)
    n = leaf_capacity(kw["embeddings"].shape[1])
    emb, cases = kw["embeddings"][:n], kw["cases"][:n]
    nt, sk, r = tune_index(emb)
    assert nt == 1 and r == 1.0
    with pytest.raises(ArchiveError, match="must be built with 1 tree"):
        write_bundle(tmp_path / "bad", **dict(kw, embeddings=emb, cases=cases, n_trees=8))
    b = load_bundle(write_bundle(tmp_path / "b", **dict(kw, embeddings=emb, cases=cases, n_trees=nt,
                                                        search_k=sk, recall_at_10=r)), threads=1)
    ids, scores = b.index.search(emb[5], 3)
    assert ids[0] == 5 and scores[0] > 0.999
