"""Bundle verification as a whole (issue 11, item 1): the bundle id covers the manifest and owns the overlay,
Ed25519 signatures against trusted publisher keys with an explicit --allow-unsigned, the manifest schema with one
error naming the field, index.ann checked before Annoy, hostile files (FIFO, symlink, oversize) refused at once,
and the verified bytes are what native code reads."""
from __future__ import annotations

import binascii
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from edge import ed25519
from edge.bundle import SIGNATURE_FILE, default_bundle_path, load_bundle, parse_manifest, verify_bundle
from edge.bundle_format import INDEX_FILE, MANIFEST_FILE
from edge.errors import BundleError, OverlayError
from edge.overlay import Overlay, overlay_dir
from edge.overlay_file import FILE
from edge.paths import repo_root
from edge.trust import TRUSTED_KEYS, check_signature, signed_message
from tests.bundle_small import build_small_bundle, rehash, unit_vectors, write_manifest

# ------------------------------------------------------------------ the verifier: RFC 8032 section 7.1

RFC8032 = [  # (secret key, public key, message, signature): TEST 1, 2, 3 and SHA(abc)
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
     "d25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
     "4a7c15e9716ed28dc027beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd"
     "454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e030"
     "3dca179c138ac17ad9bef1177331a704"),
]


@pytest.mark.parametrize("sk,pk,msg,sig", RFC8032)
def test_ed25519_rfc8032_vectors(sk, pk, msg, sig):
    sk, pk, msg, sig = map(binascii.unhexlify, (sk, pk, msg, sig))
    assert ed25519.public_key_from_seed(sk) == pk
    assert ed25519._sign(sk, msg) == sig
    ed25519.verify(pk, msg, sig)
    for i in (0, 31, 32, 63):                              # R and S damaged
        bad = bytearray(sig)
        bad[i] ^= 0x01
        with pytest.raises(ed25519.BadSignature):
            ed25519.verify(pk, msg, bytes(bad))
    with pytest.raises(ed25519.BadSignature):
        ed25519.verify(pk, msg + b"x", sig)


def test_ed25519_strictness():
    sk, pk, msg, sig = map(binascii.unhexlify, RFC8032[1])
    s = int.from_bytes(sig[32:], "little") + ed25519._L   # S + L verifies in a lax verifier: malleable
    with pytest.raises(ed25519.BadSignature, match="not reduced"):
        ed25519.verify(pk, msg, sig[:32] + s.to_bytes(32, "little"))
    noncanon = (2 ** 255 - 19 + 1).to_bytes(32, "little")  # y >= p
    with pytest.raises(ed25519.BadSignature):
        ed25519.verify(noncanon, msg, sig)
    with pytest.raises(ed25519.BadSignature):
        ed25519.verify(pk[:31], msg, sig)
    t = time.perf_counter()
    for _ in range(5):
        ed25519.verify(pk, msg, sig)
    print(f"\ned25519 verify: {(time.perf_counter() - t) / 5 * 1e3:.1f} ms")


# ------------------------------------------------------------------ the default bundle and the trust policy

def test_default_bundle_is_signed_by_the_shipped_key():
    b = load_bundle(default_bundle_path(), threads=1, allow_unsigned=False)
    mbytes = (default_bundle_path() / MANIFEST_FILE).read_bytes()
    assert b.id == hashlib.sha256(mbytes).hexdigest() and b.hash == b.id[:16]
    assert b.trust.trusted and b.trust.key_id in TRUSTED_KEYS
    sig = json.loads((default_bundle_path() / SIGNATURE_FILE).read_text())
    assert sig["bundle_id"] == b.id and "private" not in json.dumps(sig)


@pytest.fixture
def small(tmp_path):
    return build_small_bundle(tmp_path / "small")


def _run(args, env_extra=None, home=None):
    env = dict(os.environ, PYTHONPATH=str(repo_root()), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("ECGRET_ALLOW_UNSIGNED", None)
    env.pop("ECGRET_BUNDLE", None)
    if home:
        env["ECGRET_HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=repo_root())


def _errors(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("ecgret: error:")]


@pytest.mark.slow
def test_unsigned_bundle_needs_allow_unsigned(small, tmp_path):
    with pytest.raises(BundleError, match=r"signature: UNSIGNED.*--allow-unsigned"):
        load_bundle(small, allow_unsigned=False)
    p = _run(["info", "--bundle", small], home=tmp_path)
    assert p.returncode == 1 and p.stdout == ""
    errs = _errors(p.stderr)
    assert len(errs) == 1 and "UNSIGNED" in errs[0] and "--allow-unsigned" in errs[0]
    p = _run(["info", "--bundle", small, "--allow-unsigned"], home=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "signed   UNSIGNED" in p.stdout and "loaded with --allow-unsigned" in p.stdout
    p = _run(["info", "--json"], {"ECGRET_BUNDLE": str(small), "ECGRET_ALLOW_UNSIGNED": "1"}, home=tmp_path)
    j = json.loads(p.stdout)
    assert j["trust"]["status"] == "unsigned" and not j["trust"]["trusted"] and len(j["id"]) == 64
    p = _run(["info"], home=tmp_path)                    # the default bundle: signed, no flag needed
    assert p.returncode == 0, p.stderr
    assert "trusted" in p.stdout and "UNSIGNED" not in p.stdout


def _new_key(tmp_path, name="k"):
    from convert.signing import generate_signing_key
    path = tmp_path / "keys" / f"{name}.key"
    info = generate_signing_key(path, f"test publisher {name}")
    assert (path.stat().st_mode & 0o777) == 0o600
    return path, info


def test_signature_by_untrusted_then_trusted_key(small, tmp_path):
    from convert.signing import sign_bundle
    key, info = _new_key(tmp_path)
    sign_bundle(small, key)
    with pytest.raises(BundleError, match=rf"UNTRUSTED key {info['key_id']}"):
        load_bundle(small, allow_unsigned=False)
    assert load_bundle(small, allow_unsigned=True).trust.status == "untrusted"
    (tmp_path / "trusted").write_text(f"# our clinic's publisher\n{info['public_key']}\n")
    p = _run(["info", "--bundle", small], {"ECGRET_TRUSTED_KEYS": str(tmp_path / "trusted")}, home=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"key {info['key_id']}), trusted" in p.stdout


@pytest.mark.parametrize("edit", ["search_k", "duration_s", "notch_hz", "whitespace"])
def test_signed_manifest_edit_is_tampering(small, tmp_path, edit):
    """Editing a signed manifest (even a setting that changes answers but no file) breaks the signature:
    refused whatever the policy, --allow-unsigned included."""
    from convert.signing import sign_bundle
    key, _ = _new_key(tmp_path)
    sign_bundle(small, key)
    m = json.loads((small / MANIFEST_FILE).read_text())
    if edit == "search_k":
        m["index"]["search_k"] = 7
    elif edit == "duration_s":
        m["preprocessing"]["duration_s"] = 5.0
    elif edit == "notch_hz":
        m["preprocessing"]["notch_hz"] = 60.0
    write_manifest(small, m)
    if edit == "whitespace":
        (small / MANIFEST_FILE).write_bytes((small / MANIFEST_FILE).read_bytes() + b"\n")
    with pytest.raises(BundleError, match="signature.json: bundle_id: the signature is for another manifest"):
        load_bundle(small, allow_unsigned=True)
    p = _run(["query", "--bundle", small, "--allow-unsigned", "x.csv"], home=tmp_path)
    assert p.returncode == 1 and "signature is for another manifest" in _errors(p.stderr)[0]


def test_forged_signature_is_refused(small, tmp_path):
    from convert.signing import sign_bundle
    key, _ = _new_key(tmp_path)
    doc = sign_bundle(small, key)
    trusted = next(iter(TRUSTED_KEYS.values()))[0]
    forged = dict(doc, public_key=trusted, key_id=None)  # claims the shipped key, signature by another
    (small / SIGNATURE_FILE).write_text(json.dumps(forged))
    with pytest.raises(BundleError, match="signature: invalid"):
        load_bundle(small, allow_unsigned=True)
    for bad in (b"{", b"[]", json.dumps(dict(doc, signature="00" * 64)).encode(),
                json.dumps(dict(doc, algorithm="rsa")).encode(), b"\xff\xfe"):
        with pytest.raises(BundleError, match="signature.json"):
            check_signature(bad, (small / MANIFEST_FILE).read_bytes(), small / SIGNATURE_FILE)
    assert signed_message(b"x").startswith(b"ecgret-bundle-signature-v1\0")


def test_sign_bundle_command(small, tmp_path):
    key = tmp_path / "new.key"
    p = subprocess.run([sys.executable, "-m", "convert.cli", "sign-bundle", str(small), "--key", str(key), "--new-key"],
                       capture_output=True, text=True, timeout=120, cwd=repo_root(),
                       env=dict(os.environ, PYTHONPATH=str(repo_root())))
    assert p.returncode == 0, p.stderr
    assert "not yet trusted" in p.stdout and (small / SIGNATURE_FILE).exists()
    from convert.signing import read_signing_key, sign_bundle
    os.chmod(key, 0o644)
    with pytest.raises(BundleError, match="readable by others"):
        read_signing_key(key)
    with pytest.raises(BundleError, match="never overwritten"):
        _new_key_at(key)
    os.chmod(key, 0o600)
    m = json.loads((small / MANIFEST_FILE).read_text())
    m["index"]["search_k"] = "many"
    write_manifest(small, m)
    with pytest.raises(BundleError, match="index.search_k"):
        sign_bundle(small, key)                          # a bundle that does not load is never signed


def _new_key_at(path):
    from convert.signing import generate_signing_key
    generate_signing_key(path, "x")


def test_gitignore_keeps_keys_out():
    p = subprocess.run(["git", "check-ignore", "-q", "runs/keys/ecgret-default-2026.key"], cwd=repo_root())
    assert p.returncode == 0
    tracked = subprocess.run(["git", "ls-files"], cwd=repo_root(), capture_output=True, text=True).stdout
    assert "private_key" not in "".join(open(repo_root() / f, errors="ignore").read() for f in tracked.split()
                                        if f.endswith((".key", ".json")) and (repo_root() / f).is_file()
                                        and (repo_root() / f).stat().st_size < 1 << 20)


# ------------------------------------------------------------------ the id owns the overlay

def test_manifest_edit_changes_id_and_overlay(small, tmp_path, monkeypatch):
    monkeypatch.setenv("ECGRET_HOME", str(tmp_path / "home"))
    a = load_bundle(small, allow_unsigned=True)
    Overlay.for_bundle(a).enroll({"report": "confirmed"}, unit_vectors(1)[0])
    assert len(Overlay.for_bundle(a)) == 1
    for path, value in ((("preprocessing", "duration_s"), 5.0), (("preprocessing", "notch_hz"), 60.0),
                        (("index", "search_k"), 9)):
        m = json.loads((small / MANIFEST_FILE).read_text())
        m[path[0]][path[1]] = value
        write_manifest(small, m)
        b = load_bundle(small, allow_unsigned=True)
        assert b.id != a.id and b.legacy_hash == a.legacy_hash   # the old hash did not see the change
        assert len(Overlay.for_bundle(b)) == 0                     # a.id's overlay is not b's


def test_legacy_overlay_of_the_default_bundle_is_migrated(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGRET_HOME", str(tmp_path / "home"))
    b = load_bundle(default_bundle_path(), threads=1, check_encoder=False)
    old = Overlay(overlay_dir(b.legacy_hash), b.dim, b.legacy_hash)
    old.enroll({"report": "old local case"}, unit_vectors(1)[0])
    ov = Overlay.for_bundle(b)
    assert ov.migrated_from == old.file and [c["report"] for c in ov.cases] == ["old local case"]
    assert ov.dir == overlay_dir(b.id) and json.loads(ov.file.read_text())["bundle"] == b.id
    assert old.file.exists()                                       # left for an older ecgret
    assert Overlay.for_bundle(b).migrated_from is None             # once
    p = _run(["info"], home=tmp_path / "home")
    assert "1 enrolled case(s)" in p.stdout


def test_legacy_overlay_of_an_unsigned_bundle_is_not_migrated(small, tmp_path, monkeypatch):
    monkeypatch.setenv("ECGRET_HOME", str(tmp_path / "home"))
    b = load_bundle(small, allow_unsigned=True)
    Overlay(overlay_dir(b.legacy_hash), b.dim, b.legacy_hash).enroll({}, unit_vectors(1)[0])
    ov = Overlay.for_bundle(b)
    assert ov.migrated_from is None and len(ov) == 0


def test_corrupt_overlay_warns_on_query_path_refuses_writes(small, tmp_path):
    home = tmp_path / "home"
    b = load_bundle(small, allow_unsigned=True)
    d = home / "overlay" / b.id
    d.mkdir(parents=True)
    (d / FILE).write_text('{"format": "ecgret-overlay", "format_version": 1, "bundle": "' + b.id
                          + '", "dim": 128, "cases": [{"case_id": "x", "embedding": [1e999]}]}')
    p = _run(["info", "--bundle", small, "--allow-unsigned"], home=home)
    assert p.returncode == 0 and "IGNORED" in p.stdout and "cases[0].embedding" in p.stdout
    with pytest.raises(OverlayError, match=r"cases\[0\]\.embedding"):
        Overlay(d, 128, b.id)
    ov = Overlay(d, 128, b.id, strict=False)
    with pytest.raises(OverlayError):
        ov.enroll({"report": "x"}, unit_vectors(1)[0])
    with pytest.raises(OverlayError, match="report: not valid text"):
        Overlay(tmp_path / "o2", 128, b.id).enroll({"report": "bad \udcff"}, unit_vectors(1)[0])


def test_overlay_fifo_and_symlink_do_not_hang(tmp_path):
    d = tmp_path / "ov"
    d.mkdir()
    os.mkfifo(d / FILE)
    t = time.perf_counter()
    with pytest.raises(OverlayError, match="not a regular file"):
        Overlay(d, 8, "x")
    (d / FILE).unlink()
    (d / FILE).symlink_to("/dev/zero")
    with pytest.raises(OverlayError, match="symbolic link"):
        Overlay(d, 8, "x")
    assert time.perf_counter() - t < 5


# ------------------------------------------------------------------ the manifest schema: one error naming the field

def _m():
    return json.loads((default_bundle_path() / MANIFEST_FILE).read_text())


def _with(path, value):
    m = _m()
    cur = m
    for p in path[:-1]:
        cur = cur[p]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return json.dumps(m).encode()


DEEP = b'{"format": "ecgret-bundle", "training": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"

SCHEMA_CASES = [
    (_with(("index", "search_k"), "1280"), "index.search_k: must be an integer, got string"),
    (_with(("index",), [1, 2]), "index: must be an object, got array"),
    (_with(("imaging", "mtf_bins"), 0), r"imaging.mtf_bins: 0 is out of range"),
    (_with(("index", "search_k"), True), "index.search_k: must be an integer, got boolean"),
    (_with(("index", "search_k"), 10 ** 50), r"index.search_k: number 1{50}0* is out of range|index.search_k: .*out of range"),
    (_with(("index", "dim"), 64), "index.dim: 64 but encoder.embedding_dim is 128"),
    (_with(("index", "n_trees"), KeyError), "index.n_trees: missing"),
    (_with(("index", "metric"), "euclidean"), "index.metric: 'euclidean' is not one of 'angular'"),
    (_with(("preprocessing", "duration_s"), -1), r"preprocessing.duration_s: -1 is out of range"),
    (_with(("preprocessing", "notch_hz"), "50"), "preprocessing.notch_hz: must be a number, got string"),
    (_with(("preprocessing", "notch_hz"), 1e-300), r"preprocessing.notch_hz: 1e-300 is out of range \[45.0, 65.0\]"),
    (_with(("preprocessing", "bandpass_hz"), [0.3, 45]), r"preprocessing.bandpass_hz: .*applies \[0.5, 40.0\] only"),
    (_with(("imaging", "shape"), [64, 64, 3]), r"imaging.shape: \[64, 64, 3\] but mode 'rhythm' with tile 32"),
    (_with(("imaging", "tile"), 10 ** 6), "imaging.tile: 1000000 is out of range"),
    (_with(("encoder", "output_scale"), -1.0), "encoder.output_scale: -1.0 is out of range"),
    (_with(("files", "index.ann", "sha256"), "abc"), "files.index.ann.sha256"),
    (_with(("files", "index.ann", "bytes"), 1 << 40), "files.index.ann.bytes"),
    (_with(("files", "../../etc/passwd"), {"sha256": "0" * 64, "bytes": 1}), "files.../../etc/passwd: not a file"),
    (_with(("name",), "evil\x1b[2J"), "name: holds control characters"),
    (_with(("format_version",), 2), "format_version: bundle format version 2"),
    (_with(("training",), "x"), "training: must be an object"),
    (_with(("tools",), {"numpy": 2}), "tools.numpy: must be a string"),
    (DEEP, "nested more than 32 levels deep"),
    (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", r"a\[0\]\[0\].*nested more than 32 levels deep"),
    (_m_text := json.dumps(_m()).replace('"search_k": 1280', '"search_k": 1e999').encode(), "index.search_k: number 1e999 is out of range"),
    (json.dumps(_m()).replace('"search_k": 1280', '"search_k": NaN').encode(), "index.search_k: NaN is not a JSON number"),
    (json.dumps(_m()).replace('"search_k": 1280', '"search_k": ' + "9" * 5000).encode(), "index.search_k: number 9999"),
    (json.dumps(_m()).replace('"search_k": 1280', '"search_k": 1280, "search_k": 1').encode(), "duplicate key 'search_k'"),
    (b"\xff" + json.dumps(_m()).encode(), "not UTF-8"),
    (b" " * (5 << 20), "more than the 4,194,304 allowed"),
    (b"[]", "manifest: must be an object, got array"),
]


@pytest.mark.parametrize("data,needle", SCHEMA_CASES, ids=[f"case{i}" for i in range(len(SCHEMA_CASES))])
def test_manifest_schema_names_the_field(data, needle):
    import re
    with pytest.raises(BundleError) as ei:
        parse_manifest(data, "x/manifest.json")
    msg = str(ei.value)
    assert msg.startswith("x/manifest.json: ") and re.search(needle, msg), msg
    assert "\n" not in msg and len(msg) < 600


def test_schema_errors_are_one_cli_line(small, tmp_path):
    m = json.loads((small / MANIFEST_FILE).read_text())
    m["index"] = "fast"
    write_manifest(small, m)
    p = _run(["query", "--bundle", small, "--allow-unsigned", "x.csv"], home=tmp_path)
    errs = _errors(p.stderr)
    assert p.returncode == 1 and len(errs) == 1 and "index: must be an object, got string" in errs[0]
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------ files: hostile kinds, sizes, and what native code reads

def test_bundle_files_fifo_symlink_oversize(small):
    idx = small / INDEX_FILE
    data = idx.read_bytes()
    idx.unlink()
    os.mkfifo(idx)
    t = time.perf_counter()
    with pytest.raises(BundleError, match="index.ann: file: not a regular file"):
        verify_bundle(small, allow_unsigned=True)
    idx.unlink()
    idx.symlink_to("/dev/zero")
    with pytest.raises(BundleError, match="index.ann: file: is a symbolic link"):
        verify_bundle(small, allow_unsigned=True)
    idx.unlink()
    idx.write_bytes(data + b"\0" * 524)                  # bigger than the manifest says: not read past it
    with pytest.raises(BundleError, match="index.ann: bytes: .* manifest says"):
        verify_bundle(small, allow_unsigned=True)
    (small / MANIFEST_FILE).unlink()
    (small / MANIFEST_FILE).symlink_to("/dev/zero")
    with pytest.raises(BundleError, match="manifest.json: file: is a symbolic link"):
        verify_bundle(small, allow_unsigned=True)
    assert time.perf_counter() - t < 10


def test_index_checks_before_annoy(small):
    m = json.loads((small / MANIFEST_FILE).read_text())
    a = np.frombuffer((small / INDEX_FILE).read_bytes(), dtype="<i4").reshape(-1, 131).copy()
    n = a.shape[0]
    for col, val, needle in ((1, n, r"node \d+: (split children|leaf list entry)"), (0, -3, r"node \d+: n_descendants -3")):
        b = a.copy()
        b[n - 6, col] = val
        (small / INDEX_FILE).write_bytes(b.tobytes())
        write_manifest(small, rehash(small, json.loads(json.dumps(m)), INDEX_FILE))
        with pytest.raises(BundleError, match=needle):
            load_bundle(small, allow_unsigned=True)
    (small / INDEX_FILE).write_bytes(a.tobytes())
    mm = rehash(small, json.loads(json.dumps(m)), INDEX_FILE)
    mm["index"]["n_trees"] = 5
    write_manifest(small, mm)
    with pytest.raises(BundleError, match="index.ann: n_trees: index has 4 roots, manifest says 5"):
        load_bundle(small, allow_unsigned=True)


def test_native_code_reads_the_verified_bytes(small):
    """After loading, rewriting index.ann on disk changes nothing the process reads (sealed copy)."""
    b = load_bundle(small, allow_unsigned=True)
    q = unit_vectors(3, 9)
    before = [b.index.search(v, 10)[0].tolist() for v in q]
    size = (small / INDEX_FILE).stat().st_size
    with open(small / INDEX_FILE, "r+b") as f:          # in place, as an attacker with write access would
        f.write(b"\xff" * size)
    assert [b.index.search(v, 10)[0].tolist() for v in q] == before
    assert b.index.item(0).shape == (128,)


def test_moved_bundle_keeps_its_id(small, tmp_path):
    a = load_bundle(small, allow_unsigned=True)
    shutil.copytree(small, tmp_path / "moved")
    assert load_bundle(tmp_path / "moved", allow_unsigned=True).id == a.id


def test_trusted_keys_file_is_bounded_and_never_blocks(tmp_path, monkeypatch):
    """``$ECGRET_TRUSTED_KEYS`` was read whole with read_text: a FIFO hung every command that loads a signed
    bundle, a 1 GiB file took 2.2 GB. Now a regular file of at most 256 KiB (a link to one is fine)."""
    import os

    from edge.trust import ENV_TRUSTED_KEYS, trusted_keys
    fifo, big, good = tmp_path / "fifo", tmp_path / "big", tmp_path / "keys"
    os.mkfifo(fifo)
    big.write_bytes(b"# comment\n" * 30_000)
    good.write_text("# none yet\n")
    for p, match in ((fifo, "not a regular file"), (big, "over 256 KiB"), (tmp_path, "not a regular file")):
        monkeypatch.setenv(ENV_TRUSTED_KEYS, str(p))
        with pytest.raises(BundleError, match=match):
            trusted_keys()
    os.symlink(good, tmp_path / "link")
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(tmp_path / "link"))
    assert trusted_keys()


def test_the_card_prints_no_escape_sequence_and_survives_missing_fields():
    """``ecgret info`` printed the manifest's text raw: an escape sequence in the evaluation table set the terminal's
    title and cleared the screen, a lone surrogate was an encoding error on a strict UTF-8 stdout, and a manifest
    without the optional archive.n_cases was an internal KeyError."""
    import copy
    from types import SimpleNamespace

    from edge.bundle import load_bundle
    from edge.card import card_text
    b = load_bundle(None, threads=1)
    m = copy.deepcopy(b.manifest)
    m["name"] = "evil\ud800name"
    m["evaluation"] = {"table_markdown": "| a |\x1b]0;PWNED\x07\x1b[2J\x1b[31m\r| b |"}
    del m["archive"]["n_cases"]
    fake = SimpleNamespace(manifest=m, hash=b.hash, id=b.id, trust=b.trust, path=b.path)
    rt = {"interpreter": "x", "interpreter_version": "1", "kernels": "builtin", "numpy": "2", "python": "3.11"}
    class NoOverlay(list):
        file, error = "overlay.json", None

    text = card_text(fake, rt, NoOverlay())
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "PWNED" not in text  # OSC removed whole
    assert "| a |" in text and "| b |" in text
    text.encode("utf-8")                      # strict
    assert "evil\ufffdname" in text and "archive  ? cases" in text


def test_cases_are_checked_line_by_line_and_measured_is_typed(tmp_path):
    """cases.jsonl was decoded whole before any check (20 MiB of "0" lines: 247 MB and 13 s before the first
    error), and a case's ``measured`` of the wrong type reached the ranking as an internal error on every query."""
    from edge.bundle import _parse_cases
    p = tmp_path / "cases.jsonl"
    with pytest.raises(BundleError, match="lines: 1000000 cases but index.n_items is 3"):
        _parse_cases(b"0\n" * 1_000_000, p, 3)          # counted before anything is decoded
    with pytest.raises(BundleError, match=r"line 1\.case_id"):
        _parse_cases(b"0\n" * 1_000_000, p)             # the first line fails, not after a million decodes
    for bad in ('{"heart_rate_bpm": "fast"}', "[60, 70]", '{"rr_sd_ms": {}}', '{"heart_rate_bpm": NaN}',
                '{"paced": "yes"}', '{"qrs_ms": true}'):
        with pytest.raises(BundleError, match=r"line 2\.measured"):
            _parse_cases(b'{"case_id": "a"}\n{"case_id": "b", "measured": ' + bad.encode() + b"}\n", p)
    ok = _parse_cases(b'{"case_id": "a", "measured": {"heart_rate_bpm": 61.5, "pr_ms": null, "paced": false,'
                      b' "n_beats": 12}}\n', p, 1)
    assert ok[0]["measured"]["n_beats"] == 12


_HOSTILE_MODELS = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
out = sys.argv[1]
S = [tf.TensorSpec([1, 128, 128, 3], tf.float32)]
W = tf.constant(tf.random.normal([3, 128], seed=1))
emb = lambda x: tf.reshape(tf.reduce_mean(x, axis=[1, 2]) @ W, [1, 128])
def save(name, fn):
    conc = tf.function(fn, input_signature=S).get_concrete_function()
    open(os.path.join(out, name), "wb").write(tf.lite.TFLiteConverter.from_concrete_functions([conc], fn).convert())
save("tile.tflite", lambda x: emb(tf.tile(x, [1, 100, 100, 1])))   # a 2 GB intermediate from a 3 kB file
def forever(x):
    _, v = tf.while_loop(lambda i, v: i >= 0.0, lambda i, v: (i + 1.0, v * 1.0), [tf.constant(0.0), x])
    return emb(v)
save("while.tflite", forever)                                       # never ends (and ignores Ctrl-C)
'''


@pytest.mark.slow
def test_a_hostile_encoder_graph_is_refused_before_it_runs(tmp_path):
    """An unsigned bundle's encoder with a WHILE that never ends hung every command (Ctrl-C included), one with a
    TILE took 2 GB: every interpreter the device makes refuses control flow and tensors over
    256 MiB before anything is allocated (both TFLite interpreters; the models are made by TensorFlow in a
    subprocess: creating an interpreter after importing TensorFlow in one process crashed)."""
    import subprocess
    import sys

    from edge.encoder import Encoder
    subprocess.run([sys.executable, "-c", _HOSTILE_MODELS, str(tmp_path)], check=True, timeout=600,
                   capture_output=True)
    for name, match in (("while.tflite", "control flow \\(WHILE\\)"), ("tile.tflite", "over 256 MiB")):
        with pytest.raises(BundleError, match=f"{name}: .*{match}"):
            Encoder(tmp_path / name, threads=1)
