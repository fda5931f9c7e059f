"""What one machine computes for the 48 raw CinC records, stage by stage (run by ``benchmarks/pi_check.py`` on the
host and inside each emulated Raspberry Pi root filesystem, with the installed wheel; numpy and ``edge`` only).

For every record: the sha256 of the int8 input tensor, and the int8 output of the encoder for that same input under
each kernel set named by ``--kernels`` (``builtin`` is what a query uses), with the median time of one ``invoke()``.
Prints one JSON object on stdout. A record the query path refuses is reported with its error type.

    python pi_probe.py --kernels builtin,optimized,reference RECORD.hea ...
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", help="WFDB headers of the records to encode")
    ap.add_argument("--kernels", default="builtin", help="comma-separated kernel sets (edge.encoder.KERNELS)")
    ap.add_argument("--repeats", type=int, default=3, help="invoke() calls timed per record and kernel set")
    a = ap.parse_args(argv)
    import numpy as np

    from edge.bundle import load_bundle
    from edge.encoder import Encoder, runtime_report
    from edge.errors import EcgretError
    from edge.io import read_record
    from edge.retrieval import Retriever

    r = Retriever(load_bundle(None, threads=1), threads=1)
    kernels = [k.strip() for k in a.kernels.split(",") if k.strip()]
    encoders = {k: Encoder(r.encoder.path, threads=1, kernels=k) for k in kernels}
    out = {"machine": platform.machine(), "pointer_bits": 64 if sys.maxsize > 2 ** 32 else 32,
           "python": platform.python_version(), "numpy": np.__version__, "runtime": runtime_report(),
           "op_resolvers": {k: e.op_resolver for k, e in encoders.items()}, "records": {}}
    for path in a.records:
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        try:
            r.embed_record(read_record(path))
        except EcgretError as e:
            out["records"][name] = {"ok": False, "error_type": type(e).__name__}
            continue
        q = r.encoder._interp.get_tensor(r.encoder._in_idx).copy()
        rec = {"ok": True, "input_sha256": hashlib.sha256(q.tobytes()).hexdigest(), "outputs": {}, "invoke_ms": {}}
        for k, e in encoders.items():
            e._interp.set_tensor(e._in_idx, q)
            times = []
            for _ in range(max(1, a.repeats)):
                t0 = time.perf_counter()
                e._interp.invoke()
                times.append(time.perf_counter() - t0)
            rec["outputs"][k] = e._interp.get_tensor(e._out_idx).reshape(-1).astype(int).tolist()
            rec["invoke_ms"][k] = round(1000 * float(np.median(times)), 3)
        out["records"][name] = rec
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
