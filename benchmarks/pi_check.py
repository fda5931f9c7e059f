"""The emulated Raspberry Pi release check (``make pi-check``): the built wheel on Debian 12 arm64 and armhf under
qemu-user must give the x86 answers bit for bit.

What it does, as root on an x86_64 Debian/Ubuntu host (``apt-get install qemu-user-static binfmt-support
mmdebstrap``; binfmt_misc is mounted and the qemu handlers enabled if they are not):

1. builds (once, then cached under ``--cache``, default ``/var/cache/ecgret-pi``) Debian 12 (bookworm) root
   filesystems for arm64 and armhf with ``mmdebstrap`` from Debian's packages (python3, python3-venv,
   python3-dev, g++, ca-certificates; armhf also python3-numpy, as PyPI has no armv7l numpy wheels);
2. per target, in a fresh venv inside the root filesystem, ``pip install`` of the wheel (the dependency markers
   choose the interpreter), then ``ecgret info``, ``ecgret demo --speed 0`` (text and ``--json``), ``ecgret query
   --json`` on all 48 CinC records and ``benchmarks/pi_probe.py`` (the int8 input tensors and the encoder's int8
   outputs under several kernel sets);
3. the same on the host, with this Python (the checkout's device venv), as the reference;
4. compares: int8 inputs, encoder outputs, top-10 ids and scores (and the demo's) must be identical; writes
   ``--out`` (default ``results/pi_check.json``) and prints one line per target; exit 1 if any is not identical.

Emulation (qemu 7.2 user mode): the ARM processes are told ``QEMU_CPU=cortex-a72`` (a Pi 4's core; qemu's default
``max`` CPU made XNNPACK wrong) on arm64 and ``cortex-a15`` on armhf (an ARMv7-A with NEON and VFPv4, the feature
set a 32-bit kernel reports for a Pi 4), and see an ARM ``/proc/cpuinfo`` bind-mounted over the host's (LiteRT
crashed in ``invoke()`` reading the x86 one). The host's resolver and CA certificates are copied in for pip.
Targets: ``arm64`` (64-bit Pi OS: the markers install tflite-runtime 2.14), ``armhf`` (32-bit Pi OS),
``armhf-on-aarch64`` (below), and ``arm64-litert``, informational (it does not decide the exit code): LiteRT on
arm64, what aarch64 with Python >= 3.12 installs, running its reference kernels. ``armhf-on-aarch64`` is 32-bit
Pi OS on a 64-bit kernel: the armhf userland with ``uname()`` answering
``aarch64``, as the 64-bit kernel answers a 32-bit process (qemu-arm always says ``armv7l``; ``QEMU_UNAME`` sets
only the release), by a preloaded shim compiled inside the root filesystem.
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edge.atomicio import atomic_write  # noqa: E402  (the repository's one atomic writer)

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
BASE_PACKAGES = ("ca-certificates", "g++", "python3", "python3-dev", "python3-venv")
ROOTFS = {   # Debian architecture -> extra packages, qemu CPU, /proc/cpuinfo shown to the emulated processes
    "arm64": {"packages": (), "qemu_cpu": "cortex-a72", "cpuinfo": "a72-64"},
    "armhf": {"packages": ("python3-numpy",), "qemu_cpu": "cortex-a15", "cpuinfo": "a72-32"},
}
SHIM = "/root/ecgret-pi/uname-aarch64.so"
DEPS = ["annoy", "pyserial", "click"]
# name -> root filesystem, venv flags, the pip commands (each a list of arguments after `pip install`), uname shim
TARGETS = {
    "arm64": {"rootfs": "arm64", "venv": [], "install": [["{wheel}"]],
              "what": "64-bit Pi OS / Debian arm64: plain pip install of the wheel (tflite-runtime 2.14)"},
    "arm64-litert": {"rootfs": "arm64", "venv": [], "informational": True,
                     "install": [["--no-deps", "{wheel}"], ["ai-edge-litert", "numpy", *DEPS]],
                     "what": "Debian arm64 with LiteRT (what Python >= 3.12 on aarch64 gets): reference kernels"},
    "armhf": {"rootfs": "armhf", "venv": ["--system-site-packages"], "install": [["{wheel}"]],
              "what": "32-bit Pi OS / Debian armhf: plain pip install, Debian's python3-numpy"},
    "armhf-on-aarch64": {"rootfs": "armhf", "venv": ["--system-site-packages"], "install": [["{wheel}"]],
                         "shim": True,
                         "what": "32-bit userland, uname -m aarch64 (64-bit kernel): plain pip install"},
}
KERNEL_SETS = "builtin,optimized,reference"

# A Pi 4's /proc/cpuinfo as a 64-bit kernel shows it to 64-bit and to 32-bit processes (one block a host core).
_CPU64 = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
          "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n")
_CPU32 = ("processor\t: {i}\nmodel name\t: ARMv8 Processor rev 3 (v8l)\nBogoMIPS\t: 108.00\nFeatures\t: half thumb "
          "fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32\nCPU implementer\t: 0x41\n"
          "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n")
_PI4 = "Hardware\t: BCM2835\nRevision\t: c03112\nModel\t\t: Raspberry Pi 4 Model B Rev 1.2\n"
_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/utsname.h>
/* uname() as a 64-bit ARM kernel answers a 32-bit process that did not ask for the linux32 personality. */
int uname(struct utsname *u) {
    static int (*real)(struct utsname *);
    if (!real) real = (int (*)(struct utsname *))dlsym(RTLD_NEXT, "uname");
    int rc = real(u);
    if (rc == 0) { strncpy(u->machine, "aarch64", sizeof u->machine - 1); u->machine[sizeof u->machine - 1] = 0; }
    return rc;
}
"""


class CheckError(Exception):
    """A failure of the check itself (not a difference in the answers): one line, exit 1."""


def say(msg: str) -> None:
    print(f"pi-check: {msg}", file=sys.stderr, flush=True)


def sh(cmd, *, env=None, timeout=3600, check=True, input_text=None) -> subprocess.CompletedProcess:
    """Run a host command (list), capturing text output; a failure with ``check`` is a :class:`CheckError`."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, input=input_text)
    if check and r.returncode != 0:
        raise CheckError(f"{' '.join(map(str, cmd))[:200]} failed ({r.returncode}): "
                         f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['']}")
    return r


# --------------------------------------------------------------------------------------------- host set-up

def host_ready() -> dict:
    """Root, mmdebstrap, qemu-user-static and binfmt_misc with the qemu-aarch64/qemu-arm handlers enabled."""
    if os.geteuid() != 0:
        raise CheckError("run as root (mmdebstrap, chroot and bind mounts need it)")
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("qemu-aarch64-static", "qemu-user-static"),
                      ("qemu-arm-static", "qemu-user-static"), ("update-binfmts", "binfmt-support")):
        if shutil.which(tool) is None:
            raise CheckError(f"{tool} not found (package {pkg}): apt-get install qemu-user-static binfmt-support "
                             "mmdebstrap")
    bf = Path("/proc/sys/fs/binfmt_misc")
    if not (bf / "status").exists():
        sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(bf)])
    for h in ("qemu-aarch64", "qemu-arm"):
        if not (bf / h).exists() or "enabled" not in (bf / h).read_text():
            sh(["update-binfmts", "--enable", h])
        text = (bf / h).read_text()
        if "enabled" not in text or "F" not in text.split("flags:")[1].split("\n")[0]:
            raise CheckError(f"binfmt handler {h} is not enabled with the F (fix binary) flag")
    qemu = sh(["qemu-aarch64-static", "--version"]).stdout.splitlines()[0]
    return {"qemu": qemu, "mmdebstrap": sh(["mmdebstrap", "--version"]).stdout.strip()}


def rootfs(cache: Path, arch: str, rebuild: bool) -> tuple[Path, float]:
    """The cached root filesystem of ``arch`` (built when missing, stale or ``rebuild``), and the seconds spent."""
    spec = ROOTFS[arch]
    recipe = {"suite": SUITE, "arch": arch, "variant": "apt", "mirror": MIRROR,
              "include": sorted(BASE_PACKAGES + spec["packages"])}
    d, stamp_name = cache / f"{SUITE}-{arch}", ".ecgret-pi-rootfs.json"
    if not rebuild and (d / stamp_name).is_file() and json.loads((d / stamp_name).read_text()) == recipe:
        return d, 0.0
    t0 = time.monotonic()
    tmp = cache / f"{SUITE}-{arch}.tmp"
    for p in (tmp, d):
        if p.exists():
            unmount_all(p)
            shutil.rmtree(p)
    cache.mkdir(parents=True, exist_ok=True)
    say(f"building the {SUITE} {arch} root filesystem with mmdebstrap (a few minutes) ...")
    sh(["mmdebstrap", "--mode=root", "--variant=apt", f"--architectures={arch}",
        f"--include={','.join(recipe['include'])}", SUITE, str(tmp), MIRROR], timeout=3600)
    (tmp / stamp_name).write_text(json.dumps(recipe, sort_keys=True))
    tmp.rename(d)
    return d, time.monotonic() - t0


# ------------------------------------------------------------------------------------------ inside a chroot

def _mounts(root: Path) -> list[str]:
    """The mount points under ``root``, deepest first."""
    rp = str(root.resolve())
    pts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted({p for p in pts if p == rp or p.startswith(rp + "/")}, key=len, reverse=True)


def unmount_all(root: Path) -> None:
    """Unmount everything mounted under ``root`` (deepest first; lazily where busy)."""
    for p in _mounts(root):
        if subprocess.run(["umount", p], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", p], capture_output=True)


class Chroot:
    """A root filesystem prepared for running the emulated userland: /proc with an ARM cpuinfo, /dev, the shared
    data read-only at /mnt/ecgret-data, the host's resolver and CA certificates; unmounted on exit."""

    def __init__(self, root: Path, arch: str, data: Path):
        self.root, self.arch, self.data = root, arch, data

    def __enter__(self):
        r = self.root
        unmount_all(r)
        work = r / "root" / "ecgret-pi"
        work.mkdir(parents=True, exist_ok=True)
        cores = os.cpu_count() or 1
        block = _CPU64 if ROOTFS[self.arch]["cpuinfo"] == "a72-64" else _CPU32
        (work / "cpuinfo").write_text("".join(block.format(i=i) for i in range(cores)) + _PI4)
        sh(["mount", "-t", "proc", "proc", str(r / "proc")])
        sh(["mount", "--bind", str(work / "cpuinfo"), str(r / "proc" / "cpuinfo")])
        sh(["mount", "--rbind", "/dev", str(r / "dev")])
        sh(["mount", "--make-rslave", str(r / "dev")])
        (r / "mnt" / "ecgret-data").mkdir(parents=True, exist_ok=True)
        sh(["mount", "--bind", str(self.data), str(r / "mnt" / "ecgret-data")])
        sh(["mount", "-o", "remount,bind,ro", str(r / "mnt" / "ecgret-data")])
        shutil.copyfile("/etc/resolv.conf", r / "etc" / "resolv.conf")
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if ca.is_file():
            shutil.copyfile(ca, r / "etc" / "ssl" / "certs" / "ecgret-host-ca.crt")
        return self

    def __exit__(self, *exc):
        unmount_all(self.root)

    def env(self, shim: bool) -> dict:
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
             "LANG": "C.UTF-8", "QEMU_CPU": ROOTFS[self.arch]["qemu_cpu"], "PIP_DISABLE_PIP_VERSION_CHECK": "1",
             "PIP_NO_INPUT": "1", "PIP_ROOT_USER_ACTION": "ignore", "ECGRET_DATA": "/mnt/ecgret-data",
             "ECGRET_HOME": "/root/ecgret-pi/home", "PYTHONUNBUFFERED": "1"}
        if (self.root / "etc" / "ssl" / "certs" / "ecgret-host-ca.crt").is_file():
            e["PIP_CERT"] = "/etc/ssl/certs/ecgret-host-ca.crt"
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
            if k in os.environ:
                e[k] = os.environ[k]
        if shim:
            e["LD_PRELOAD"] = SHIM
        return e

    def run(self, script: str, *, shim: bool = False, timeout: int = 3600) -> subprocess.CompletedProcess:
        """``/bin/sh -c script`` inside, emulated; never raises on a non-zero exit."""
        return subprocess.run(["chroot", str(self.root), "/bin/sh", "-c", script], capture_output=True, text=True,
                              env=self.env(shim), timeout=timeout)


# ------------------------------------------------------------------------------------------------ one side

def _step(log: dict, name: str, r: subprocess.CompletedProcess, t0: float) -> subprocess.CompletedProcess:
    log[name] = {"rc": r.returncode, "seconds": round(time.monotonic() - t0, 1),
                 "stdout_tail": r.stdout[-1500:], "stderr_tail": r.stderr[-1500:]}
    return r


def _ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def _answers(query_out: str) -> dict:
    """``ecgret query --json`` NDJSON -> {record name: {"ok", "ids", "scores"} or {"ok": False, "error_type"}}."""
    out = {}
    for o in _ndjson(query_out):
        name = Path(o["query"]).name.rsplit(".", 1)[0]
        out[name] = ({"ok": True, "ids": [m["case_id"] for m in o["matches"]],
                      "scores": [m["score"] for m in o["matches"]]} if o.get("ok")
                     else {"ok": False, "error_type": o.get("error_type")})
    return out


def _demo(demo_out: str) -> dict | None:
    objs = [o for o in _ndjson(demo_out) if o.get("ok")]
    if not objs:
        return None
    return {"ids": [m["case_id"] for m in objs[-1]["matches"]], "scores": [m["score"] for m in objs[-1]["matches"]]}


def side(run, python: str, ecgret: str, probe: str, records: list[str]) -> dict:
    """The commands of the check through ``run(script) -> CompletedProcess`` (host or chroot)."""
    log, res = {}, {}
    q = " ".join(shlex.quote(r) for r in records)
    t0 = time.monotonic()
    r = _step(log, "info", run(f"{ecgret} info"), t0)
    res["info_line"] = next((ln.strip() for ln in r.stdout.splitlines() if "interpreter" in ln), None)
    t0 = time.monotonic()
    _step(log, "demo", run(f"{ecgret} demo --speed 0"), t0)
    t0 = time.monotonic()
    r = _step(log, "demo_json", run(f"{ecgret} demo --speed 0 --json"), t0)
    res["demo"] = _demo(r.stdout)
    t0 = time.monotonic()
    r = _step(log, "query", run(f"{ecgret} query --json --no-overlay {q}"), t0)
    res["answers"] = _answers(r.stdout)
    t0 = time.monotonic()
    r = _step(log, "probe", run(f"{python} {probe} --kernels {KERNEL_SETS} {q}"), t0)
    res["probe"] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else None
    for k in ("probe", "query", "demo", "demo_json", "info"):
        if log[k]["rc"] != 0 and k != "query":
            log[k]["failed"] = True
    res["log"] = log
    return res


def host_side(records: list[str], work: Path, wheel: Path) -> dict:
    """The reference: the same wheel in a fresh venv on the host (x86_64: LiteRT, its built-in kernels)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ECGRET_BUNDLE", "ECGRET_KERNELS", "PYTHONPATH",
                                                             "VIRTUAL_ENV")}
    env.update(ECGRET_HOME=str(work / "home"), PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    venv, log = work / "venv", {}

    def run(script):
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=3600,
                              cwd=str(work))
    t0 = time.monotonic()
    _step(log, "venv", run(f"{shlex.quote(sys.executable)} -m venv {venv}"), t0)
    t0 = time.monotonic()
    r = _step(log, "pip_install_0", run(f"{venv}/bin/pip install -q {shlex.quote(str(wheel))}"), t0)
    if r.returncode != 0:
        raise CheckError(f"the wheel does not install on the host: {r.stderr.strip()[-400:]}")
    res = side(run, f"{venv}/bin/python", f"{venv}/bin/ecgret",
               shlex.quote(str(ROOT / "benchmarks" / "pi_probe.py")), records)
    log.update(res.pop("log"))
    res["log"] = log
    return res


def target_side(name: str, ch: Chroot, wheel: Path, constraints: str, records: list[str]) -> dict:
    """A fresh venv inside the chroot, the wheel installed as the target says, then :func:`side`."""
    spec, work = TARGETS[name], ch.root / "root" / "ecgret-pi"
    shutil.copyfile(wheel, work / wheel.name)
    shutil.copyfile(ROOT / "benchmarks" / "pi_probe.py", work / "pi_probe.py")
    (work / "constraints.txt").write_text(constraints)
    shutil.rmtree(work / "home", ignore_errors=True)
    venv, log = f"/root/ecgret-pi/venv-{name}", {}
    shim = bool(spec.get("shim"))
    if shim:
        (work / "uname-aarch64.c").write_text(_SHIM_C)
        t0 = time.monotonic()
        r = _step(log, "shim", ch.run(f"gcc -shared -fPIC -O2 -o {SHIM} /root/ecgret-pi/uname-aarch64.c -ldl"), t0)
        if r.returncode != 0:
            raise CheckError(f"{name}: the uname shim does not compile: {r.stderr.strip()[-300:]}")
    t0 = time.monotonic()
    probe = ("uname -m; python3 -c 'import platform, struct, sys; print(platform.machine(), "
             "struct.calcsize(\"P\") * 8, platform.python_version())'")
    r = _step(log, "uname", ch.run(probe, shim=shim), t0)
    seen = r.stdout.split()
    t0 = time.monotonic()
    _step(log, "venv", ch.run(f"rm -rf {venv} && python3 -m venv {' '.join(spec['venv'])} {venv}"), t0)
    installed = True
    for i, args in enumerate(spec["install"]):
        argv = " ".join(shlex.quote(a.format(wheel=f"/root/ecgret-pi/{wheel.name}")) for a in args)
        t0 = time.monotonic()
        r = _step(log, f"pip_install_{i}", ch.run(
            f"{venv}/bin/pip install -c /root/ecgret-pi/constraints.txt {argv}", shim=shim), t0)
        if r.returncode != 0:
            installed = False
            break
    out = {"what": spec["what"], "qemu_cpu": ROOTFS[spec["rootfs"]]["qemu_cpu"],
           "uname_m": seen[0] if seen else None, "python_machine": seen[1] if len(seen) > 1 else None,
           "pointer_bits": int(seen[2]) if len(seen) > 2 else None, "python": seen[3] if len(seen) > 3 else None,
           "installed": installed}
    if installed:
        r = ch.run(f"{venv}/bin/pip list --format=json", shim=shim)
        try:
            out["packages"] = {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}
        except ValueError:
            out["packages"] = None
        res = side(lambda s: ch.run("cd /root/ecgret-pi && " + s, shim=shim), f"{venv}/bin/python",
                   f"{venv}/bin/ecgret", "/root/ecgret-pi/pi_probe.py",
                   [f"/mnt/ecgret-data/cinc2021-sample/{Path(p).name}" for p in records])
        log.update(res.pop("log"))
        out.update(res)
    out["log"] = log
    return out


# ---------------------------------------------------------------------------------------------- comparison

def compare(host: dict, tgt: dict) -> dict:
    """Per record: the int8 input, the encoder outputs under every kernel set (against the host's ``builtin``),
    the top-10 ids and scores of ``ecgret query``; and the demo's answer. ``identical``: the query path's."""
    if not tgt.get("installed") or tgt.get("probe") is None or not tgt.get("answers"):
        return {"identical": False, "why": "not installed or a command failed"}
    hp, tp = host["probe"]["records"], tgt["probe"]["records"]
    per, n_out, kernels = {}, {}, KERNEL_SETS.split(",")
    for name, h in sorted(hp.items()):
        t, ha, ta = tp.get(name), host["answers"].get(name), tgt["answers"].get(name)
        row = {"ok": h["ok"]}
        if t is None or ha is None or ta is None:
            row.update(identical=False, why="missing")
        elif not h["ok"] or not ha["ok"]:
            row.update(identical=(t == h and ta == ha), refused=h.get("error_type") or ha.get("error_type"))
        else:
            row["input"] = t.get("input_sha256") == h["input_sha256"]
            ref = h["outputs"]["builtin"]
            for k in kernels:
                d = sum(a != b for a, b in zip(ref, t["outputs"][k])) if t.get("ok") else len(ref)
                row[f"outputs_{k}_differing"] = d
                n_out.setdefault(k, 0)
                n_out[k] += d > 0
            row["top10_ids"] = ta.get("ids") == ha["ids"]
            row["scores"] = ta.get("scores") == ha["scores"]
            row["identical"] = bool(row["input"] and row["outputs_builtin_differing"] == 0 and row["top10_ids"]
                                    and row["scores"])
        per[name] = row
    demo = tgt.get("demo") is not None and tgt.get("demo") == host.get("demo")
    ok = all(r["identical"] for r in per.values()) and demo and len(per) == len(hp)
    answered = [r for r in per.values() if "input" in r]
    return {"identical": ok, "records_identical": sum(r["identical"] for r in per.values()),
            "records_int8_identical": sum(r["input"] and r["outputs_builtin_differing"] == 0 for r in answered),
            "records_top10_ids_identical": sum(r["top10_ids"] for r in answered),
            "records_scores_identical": sum(r["scores"] for r in answered), "records_answered": len(answered),
            "records": len(per), "demo_identical": demo,
            "records_with_outputs_differing": n_out, "per_record": per}


def speed(p: dict) -> dict:
    """Median invoke() milliseconds per kernel set over the records."""
    out = {}
    for k in KERNEL_SETS.split(","):
        v = sorted(r["invoke_ms"][k] for r in p["records"].values() if r.get("ok"))
        if v:
            out[k] = v[len(v) // 2]
    return out


# ----------------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", help="the wheel to install (default: the newest dist/ecgret-*.whl)")
    ap.add_argument("--cache", default="/var/cache/ecgret-pi", help="where the root filesystems are kept")
    ap.add_argument("--data", default=None, help="the shared data folder (default: ../shared/data or $ECGRET_DATA)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {', '.join(TARGETS)}")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the root filesystems even if cached")
    ap.add_argument("--out", default=str(ROOT / "results" / "pi_check.json"), help="the JSON result")
    a = ap.parse_args(argv)
    t_start = time.monotonic()
    try:
        targets = [t.strip() for t in a.targets.split(",") if t.strip()]
        bad = [t for t in targets if t not in TARGETS]
        if bad:
            raise CheckError(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(TARGETS)}")
        wheels = [Path(a.wheel)] if a.wheel else sorted(map(Path, glob.glob(str(ROOT / "dist" / "ecgret-*.whl"))),
                                                        key=lambda p: p.stat().st_mtime)
        if not wheels or not wheels[-1].is_file():
            raise CheckError("no wheel: run `make wheel` (or give --wheel)")
        wheel = wheels[-1].resolve()
        from edge.paths import shared_data_dir
        data = Path(a.data).resolve() if a.data else shared_data_dir().resolve()
        recs = sorted((data / "cinc2021-sample").glob("*.hea"))
        if len(recs) != 48:
            raise CheckError(f"expected the 48 CinC records in {data / 'cinc2021-sample'}, found {len(recs)}")
        tools = host_ready()
        cache = Path(a.cache)
        result = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "host": {"machine": platform.machine(), "cpu": _host_cpu(), "cores": os.cpu_count(),
                           "python": platform.python_version(), **tools},
                  "wheel": {"name": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
                  "records": len(recs), "kernel_sets": KERNEL_SETS.split(","), "seconds": {}, "targets": {}}
        say(f"host reference ({platform.machine()}) ...")
        t0 = time.monotonic()
        work = cache / "host"
        shutil.rmtree(work, ignore_errors=True)
        (work / "home").mkdir(parents=True)
        host = host_side([str(p) for p in recs], work, wheel)
        result["seconds"]["host"] = round(time.monotonic() - t0, 1)
        if host["probe"] is None or not host["answers"]:
            raise CheckError(f"the host reference failed: {json.dumps(host['log'])[-600:]}")
        result["host"].update(info_line=host["info_line"], runtime=host["probe"]["runtime"],
                              invoke_ms=speed(host["probe"]))
        pins = [f"{d}=={v}" for d, v in host["probe"]["runtime"]["installed"].items()
                if v and d == "ai-edge-litert"]   # the same LiteRT release on every 64-bit side
        ok = True
        for name in targets:
            arch = TARGETS[name]["rootfs"]
            d, built = rootfs(cache, arch, a.rebuild)
            if built:
                result["seconds"][f"rootfs_{arch}"] = round(built, 1)
            say(f"{name}: installing the wheel and running the commands under qemu ({ROOTFS[arch]['qemu_cpu']}) ...")
            t0 = time.monotonic()
            with Chroot(d, arch, data) as ch:
                tgt = target_side(name, ch, wheel, "\n".join(pins) + "\n", [str(p) for p in recs])
            result["seconds"][name] = round(time.monotonic() - t0, 1)
            tgt["comparison"] = cmp = compare(host, tgt)
            if tgt.get("probe"):
                tgt["invoke_ms"] = speed(tgt["probe"])
                tgt["runtime"] = tgt["probe"]["runtime"]
                tgt["op_resolvers"] = tgt["probe"]["op_resolvers"]
                tgt.pop("probe")
            tgt.pop("answers", None)
            result["targets"][name] = tgt
            tgt["informational"] = bool(TARGETS[name].get("informational"))
            ok = ok and (cmp["identical"] or tgt["informational"])
            print(f"{name}: {'IDENTICAL' if cmp['identical'] else 'DIFFERENT'}"
                  f"{' (informational)' if tgt['informational'] else ''} "
                  f"({cmp.get('records_identical', 0)}/{cmp.get('records', 0)} records, demo "
                  f"{'same' if cmp.get('demo_identical') else 'differs'}; "
                  f"{(tgt.get('runtime') or {}).get('interpreter')} {tgt.get('op_resolvers', {}).get('builtin')}; "
                  f"uname -m {tgt.get('uname_m')}; {'installed' if tgt['installed'] else 'NOT INSTALLED'}; "
                  f"{result['seconds'][name]} s)", flush=True)
        result["seconds"]["total"] = round(time.monotonic() - t_start, 1)
        result["identical"] = ok
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
        print(f"pi-check: {'all identical' if ok else 'NOT identical'}; wall time {result['seconds']['total']} s; "
              f"result in {out}", flush=True)
        return 0 if ok else 1
    except (CheckError, OSError, subprocess.TimeoutExpired) as e:
        print(f"pi-check: error: {e}", file=sys.stderr)
        return 1


def _host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


if __name__ == "__main__":
    sys.exit(main())
