"""The image encoder on the device: a TFLite model run by the lightest interpreter available.

Interpreter choice (:func:`interpreter_order`): ``ai_edge_litert`` (LiteRT), then ``tflite_runtime`` (in a
64-bit ARM process ``tflite_runtime`` first, see below), then ``tf.lite`` only when TensorFlow is already
installed (imported lazily, inside :func:`interpreter_class`, as a last resort; the device never needs it).
Note: TF 2.21's own ``tf.lite.Interpreter`` gives wrong int8 attention outputs with XNNPACK.

Kernels (``ECGRET_KERNELS``, :data:`KERNELS`): by default (``"builtin"``) the interpreter runs built-in
kernels without the default XNNPACK delegate, so that every machine computes the workstation's int8 outputs
bit for bit. The built-in integer kernels compute the same int8 arithmetic (TFLite's fixed-point
requantization) in LiteRT and tflite-runtime 2.14 on x86_64 and in tflite-runtime 2.14 on aarch64 and armv7l.
LiteRT's *optimized* int8 kernels on 64-bit ARM round differently. So on aarch64 the dependency markers install
tflite-runtime (Python 3.11, as on Pi OS Bookworm) and :func:`interpreter_order` prefers it; where only LiteRT is
there (Python >= 3.12), ``"builtin"`` means LiteRT's reference kernels (``BUILTIN_REF``,
:func:`op_resolver_name`): slower, and off x86's outputs only where x86's own reference kernels are too.
``"optimized"`` forces the optimized built-in kernels and ``"reference"`` the reference kernels on any machine;
``"xnnpack"`` selects the delegate (faster, but it requantizes in float32, so int8 outputs move by 1-2 steps).
Answers under those three may differ from another device's in near ties: they are for benchmarking. The
record-by-record comparison and the speed of each kernel set (``make pi-check``, ``ecgret bench``):
``docs/PERFORMANCE.md``.

The float image in [-1, 1] is quantized on the host with the input tensor's scale and zero point, the
int8 output is dequantized, and the embedding is L2-normalised on the host (the int8
``L2_NORMALIZATION`` op has a fixed 1/128 output scale, too coarse for retrieval).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from .errors import BundleError

__all__ = [
    "Encoder",
    "interpreter_class",
    "make_interpreter",
    "l2_normalise",
    "KERNELS",
    "kernels_choice",
    "interpreter_order",
    "op_resolver_name",
    "runtime_report",
]

# The kernel sets ECGRET_KERNELS may name (the manifest's encoder.kernels records the one a bundle was built with).
KERNELS = ("builtin", "optimized", "reference", "xnnpack")
# One interpreter thread by default: the 13.9 M-MAC student gains nothing from more, and the built-in int8
# kernels lose to thread hand-offs (``ecgret bench`` times encode at 1 thread and at all cores; docs/PERFORMANCE.md).
DEFAULT_THREADS = 1


def kernels_choice(kernels: str | None = None) -> str:
    """``kernels``, else ``$ECGRET_KERNELS``, else ``"builtin"``; anything else is a :class:`BundleError`."""
    k = (kernels or os.environ.get("ECGRET_KERNELS") or "builtin").strip().lower()
    if k not in KERNELS:
        raise BundleError(f"kernels {k!r} unknown (ECGRET_KERNELS); choose one of {', '.join(KERNELS)}")
    return k


def _is_64bit_arm(machine: str | None = None, pointer_bits: int | None = None) -> bool:
    """Whether this process runs 64-bit ARM code. ``platform.machine()`` alone is not enough: a 32-bit userland
    on a 64-bit kernel (32-bit Pi OS on a Pi 4/5) says ``aarch64`` too, so the pointer size decides as well."""
    import platform

    m = (platform.machine() if machine is None else machine).lower()
    bits = (64 if sys.maxsize > 2**32 else 32) if pointer_bits is None else pointer_bits
    return m in ("aarch64", "arm64", "armv8b", "aarch64_be") and bits == 64


def op_resolver_name(
    kernels: str | None = None, backend: str | None = None, machine: str | None = None, pointer_bits: int | None = None
) -> str | None:
    """The ``OpResolverType`` member the interpreter is created with for a kernel set, or None for the
    interpreter's default (its XNNPACK delegate).

    ``"builtin"``: ``BUILTIN_REF`` for LiteRT (``backend == "ai-edge-litert"``) in a 64-bit ARM process, whose
    optimized int8 kernels round differently from x86's; ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` everywhere else
    (x86_64, and tflite-runtime on any machine, which agree bit for bit). ``"optimized"``:
    ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``; ``"reference"``: ``BUILTIN_REF``; ``"xnnpack"``: None. ``backend``
    defaults to :func:`interpreter_class`'s, ``machine`` and ``pointer_bits`` to this process's.
    """
    k = kernels_choice(kernels)
    if k == "xnnpack":
        return None
    if k == "reference":
        return "BUILTIN_REF"
    if k == "builtin":
        if backend is None:
            _, backend = interpreter_class()
        if backend == "ai-edge-litert" and _is_64bit_arm(machine, pointer_bits):
            return "BUILTIN_REF"
    return "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


def interpreter_order(machine: str | None = None, pointer_bits: int | None = None) -> tuple[str, ...]:
    """The backends :func:`interpreter_class` tries, in order: LiteRT first, except in a 64-bit ARM process,
    where tflite-runtime 2.14 (whose optimized int8 kernels compute x86's outputs bit for bit, unlike LiteRT's)
    comes first; ``tensorflow`` last."""
    first = (
        ("tflite-runtime", "ai-edge-litert")
        if _is_64bit_arm(machine, pointer_bits)
        else ("ai-edge-litert", "tflite-runtime")
    )
    return (*first, "tensorflow")


def interpreter_class():
    """Return (Interpreter class, backend name), trying :func:`interpreter_order`: LiteRT and tflite-runtime,
    tf.lite as a last resort."""
    for backend in interpreter_order()[:2]:
        try:
            if backend == "ai-edge-litert":
                from ai_edge_litert.interpreter import Interpreter
            else:
                from tflite_runtime.interpreter import Interpreter
            return Interpreter, backend
        except ImportError:
            pass
    import importlib
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        # last resort, only where TensorFlow happens to be installed (never a dependency of the device)
        return importlib.import_module("tensorflow").lite.Interpreter, "tensorflow"
    raise BundleError("no TFLite interpreter: install ai-edge-litert (or tflite-runtime on 32-bit ARM)")


# (distribution, module with the Interpreter class), in the order interpreter_class() tries them
_INTERPRETERS = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow"),
)


def runtime_report() -> dict:
    """What this machine would run the encoder with, never raising (``ecgret info``, a doctor-style check).

    ``{"interpreter": backend name or None, "interpreter_version", "kernels": the kernel set a query would use
    (one of :data:`KERNELS`; "default" where the interpreter cannot leave out its default delegates),
    "op_resolver": the ``OpResolverType`` member it is created with (None: the default delegates), "kernels_env":
    $ECGRET_KERNELS, "installed": {distribution: version or None}, "numpy", "python", "error": why not, or None}``.
    TensorFlow is only named if it is installed; it is not imported unless it would be the interpreter.
    """
    import platform
    from importlib import metadata

    installed: dict[str, str | None] = {}
    for dist, _ in _INTERPRETERS:
        for name in (dist, "tensorflow-cpu") if dist == "tensorflow" else (dist,):
            try:
                installed[dist] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                installed[dist] = None
    out = {
        "interpreter": None,
        "interpreter_version": None,
        "kernels": None,
        "op_resolver": None,
        "kernels_env": os.environ.get("ECGRET_KERNELS") or None,
        "installed": installed,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "error": None,
    }
    try:
        cls, backend = interpreter_class()
    except BundleError as e:
        out["error"] = str(e)
        return out
    except Exception as e:  # noqa: BLE001 - a broken install (an ABI mismatch with numpy) must be reported too
        out["error"] = f"the TFLite interpreter does not import: {type(e).__name__}: {e}"
        return out
    out["interpreter"], out["interpreter_version"] = backend, installed.get(backend)
    try:
        k = kernels_choice()
    except BundleError as e:
        out["error"] = str(e)
        return out
    resolver = op_resolver_name(k, backend)
    if resolver is not None and getattr(sys.modules.get(cls.__module__), "OpResolverType", None) is None:
        k, resolver = "default", None  # no OpResolverType: the interpreter applies its default delegates (XNNPACK)
    out["kernels"], out["op_resolver"] = k, resolver
    return out


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code prints on file descriptor 2 (LiteRT's "INFO: Created TensorFlow Lite XNNPACK
    delegate" line) while loading; Python exceptions still carry the errors. ``ECGRET_DEBUG=1`` keeps it."""
    if os.environ.get("ECGRET_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def make_interpreter(
    model_path=None, model_content: bytes | None = None, threads: int | None = None, kernels: str | None = None
):
    """An allocated interpreter for a model file or bytes, on ``threads`` threads (None: 1), with the kernel
    set ``kernels`` (None: ``$ECGRET_KERNELS``, else ``"builtin"``; the op resolver: :func:`op_resolver_name`)."""
    cls, backend = interpreter_class()
    n = int(threads) if threads else DEFAULT_THREADS
    kw = {"model_path": str(model_path)} if model_path is not None else {"model_content": model_content}
    name = op_resolver_name(kernels, backend)
    if name is not None:
        resolver = getattr(sys.modules[cls.__module__], "OpResolverType", None)
        if resolver is not None:
            kw["experimental_op_resolver_type"] = getattr(resolver, name)
    with quiet_native_stderr():
        interp = cls(num_threads=n, **kw)
        check_graph(interp)  # before allocate_tensors: a hostile graph never gets its memory, never runs
        interp.allocate_tensors()
    return interp


CONTROL_FLOW_OPS = frozenset({"WHILE", "IF", "CALL_ONCE", "CALL"})  # an encoder is a feed-forward graph
MAX_TENSOR_BYTES = 256 << 20  # all tensors of the graph together (the shipped encoder: 0.8 MB; a float ViT: ~100)


def check_graph(interp) -> None:
    """Refuse, before any tensor is allocated, a model no image encoder needs and a hostile one uses: control flow
    (a WHILE that never ends hung every command, Ctrl-C included) or tensors of more than :data:`MAX_TENSOR_BYTES`
    together at their allocated shapes (a 2.7 kB model with TILE took 2 GB). Raises :class:`BundleError`. Not
    covered: an op that sizes its output from the input's values at run time (the bundle's signature is the
    defence there; these bounds are for ``--allow-unsigned``)."""
    ops_of = getattr(interp, "_get_ops_details", None)
    ops = {str(o.get("op_name", "")) for o in ops_of()} if callable(ops_of) else set()
    bad = sorted(ops & CONTROL_FLOW_OPS)
    if bad:
        raise BundleError(f"the encoder's graph uses control flow ({', '.join(bad)}); an image encoder has none")
    total = 0
    for t in interp.get_tensor_details():
        total += int(np.prod(np.asarray(t["shape"], dtype=np.float64))) * np.dtype(t["dtype"]).itemsize
        if total > MAX_TENSOR_BYTES:
            raise BundleError(
                f"the encoder's tensors need over {MAX_TENSOR_BYTES >> 20} MiB (a device encoder needs about 1)"
            )


def l2_normalise(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``v`` (float32) divided by its L2 norm along the last axis; a norm under ``eps`` divides by ``eps``."""
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, eps)


class Encoder:
    """An encoder loaded once and reused: ``encode(image (H, W, 3) float32) -> (D,) unit float32``."""

    def __init__(self, path, threads: int | None = None, kernels: str | None = None):
        self.path = Path(path)
        self.threads = int(threads) if threads else DEFAULT_THREADS
        self.kernels = kernels_choice(kernels)
        try:
            self._interp = make_interpreter(model_path=self.path, threads=self.threads, kernels=self.kernels)
        except BundleError as e:
            raise BundleError(f"{self.path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError on bad models
            raise BundleError(f"{self.path}: the interpreter cannot load the encoder ({e})") from None
        _, self.backend = interpreter_class()
        self.op_resolver = op_resolver_name(self.kernels, self.backend)  # what the interpreter was created with
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise BundleError(f"{self.path}: expected 1 input and 1 output, got {len(ins)} and {len(outs)}")
        self.input, self.output = ins[0], outs[0]
        self.input_shape = tuple(int(x) for x in self.input["shape"])
        self.output_shape = tuple(int(x) for x in self.output["shape"])
        self.input_dtype = np.dtype(self.input["dtype"])
        self.output_dtype = np.dtype(self.output["dtype"])
        self.in_scale, self.in_zp = (float(self.input["quantization"][0]), int(self.input["quantization"][1]))
        self.out_scale, self.out_zp = (float(self.output["quantization"][0]), int(self.output["quantization"][1]))
        self.dim = int(self.output_shape[-1])
        self._in_idx, self._out_idx = self.input["index"], self.output["index"]

    def details(self) -> dict:
        """What the manifest's ``encoder`` section records, as read from the model itself."""
        return {
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype.name,
            "input_scale": self.in_scale,
            "input_zero_point": self.in_zp,
            "output_shape": list(self.output_shape),
            "output_dtype": self.output_dtype.name,
            "output_scale": self.out_scale,
            "output_zero_point": self.out_zp,
            "embedding_dim": self.dim,
        }

    def quantize(self, image: np.ndarray) -> np.ndarray:
        """The input tensor for a float image (H, W, 3): int8 with the input scale/zero point, or float32."""
        x = np.asarray(image, dtype=np.float32).reshape(self.input_shape)
        if self.input_dtype == np.int8 or self.input_dtype == np.uint8:
            info = np.iinfo(self.input_dtype)
            q = np.rint(x / self.in_scale) + self.in_zp
            return np.minimum(np.maximum(q, info.min), info.max).astype(self.input_dtype)  # np.clip, cheaper
        return x.astype(self.input_dtype)

    def raw(self, image: np.ndarray) -> np.ndarray:
        """The dequantized, un-normalised output (D,) float32."""
        self._interp.set_tensor(self._in_idx, self.quantize(image))
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_idx).reshape(-1)
        if self.output_dtype == np.int8 or self.output_dtype == np.uint8:
            return (y.astype(np.float32) - self.out_zp) * self.out_scale
        return y.astype(np.float32)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """The L2-normalised embedding (D,) float32 of one image."""
        return l2_normalise(self.raw(image))
