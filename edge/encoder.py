"""The image encoder on the device: a TFLite model run by the lightest interpreter available.

Interpreter choice: ``ai_edge_litert`` (LiteRT), then ``tflite_runtime``, then ``tf.lite`` only when
TensorFlow is already installed (imported lazily, inside :func:`interpreter_class`, as a last resort;
the device never needs it). Note: TF 2.21's own ``tf.lite.Interpreter`` gives wrong int8 attention
outputs with XNNPACK, so LiteRT is preferred everywhere.

Kernels: the interpreter runs its built-in kernels without the default XNNPACK delegate
(``KERNELS = "builtin"``). The built-in integer kernels compute the same int8 arithmetic (TFLite's
fixed-point requantization) in LiteRT and in tflite-runtime 2.14, so a query gets bit-identical embeddings
and therefore the same top-10 on both; XNNPACK requantizes in float32 and rounds differently (about 40 % of
the int8 outputs moved by 1-2 steps, enough to swap near-tied neighbours). ``ECGRET_KERNELS=xnnpack``
selects the delegate (about 1 ms faster per query here) for benchmarking; answers may then differ from
another device's in near ties.

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

__all__ = ["Encoder", "interpreter_class", "make_interpreter", "l2_normalise", "KERNELS", "kernels_choice",
           "runtime_report"]

KERNELS = ("builtin", "xnnpack")
# One interpreter thread by default: the 13.9 M-MAC student gains nothing from more, and the built-in int8
# kernels lose to thread hand-offs (encode p50 2.1 ms at 1 thread, 10 ms at 2, on the 2-core dev machine).
DEFAULT_THREADS = 1


def kernels_choice(kernels: str | None = None) -> str:
    """``kernels``, else ``$ECGRET_KERNELS``, else ``"builtin"``; anything else is a :class:`BundleError`."""
    k = (kernels or os.environ.get("ECGRET_KERNELS") or "builtin").strip().lower()
    if k not in KERNELS:
        raise BundleError(f"kernels {k!r} unknown (ECGRET_KERNELS); choose one of {', '.join(KERNELS)}")
    return k


def interpreter_class():
    """Return (Interpreter class, backend name): LiteRT, tflite-runtime, or tf.lite as a last resort."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    import importlib
    import importlib.util
    if importlib.util.find_spec("tensorflow") is not None:
        # last resort, only where TensorFlow happens to be installed (never a dependency of the device)
        return importlib.import_module("tensorflow").lite.Interpreter, "tensorflow"
    raise BundleError("no TFLite interpreter: install ai-edge-litert (or tflite-runtime on 32-bit ARM)")


# (distribution, module with the Interpreter class), in the order interpreter_class() tries them
_INTERPRETERS = (("ai-edge-litert", "ai_edge_litert.interpreter"), ("tflite-runtime", "tflite_runtime.interpreter"),
                 ("tensorflow", "tensorflow"))


def runtime_report() -> dict:
    """What this machine would run the encoder with, never raising (``ecgret info``, a doctor-style check).

    ``{"interpreter": backend name or None, "interpreter_version", "kernels": the kernel set a query would use
    ("builtin" or "xnnpack"; "default" where the interpreter cannot leave out its default delegates), "kernels_env":
    $ECGRET_KERNELS, "installed": {distribution: version or None}, "numpy", "python", "error": why not, or None}``.
    TensorFlow is only named if it is installed; it is not imported unless it would be the interpreter.
    """
    import platform
    from importlib import metadata
    installed = {}
    for dist, _ in _INTERPRETERS:
        for name in ((dist, "tensorflow-cpu") if dist == "tensorflow" else (dist,)):
            try:
                installed[dist] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                installed[dist] = None
    out = {"interpreter": None, "interpreter_version": None, "kernels": None,
           "kernels_env": os.environ.get("ECGRET_KERNELS") or None, "installed": installed,
           "numpy": np.__version__, "python": platform.python_version(), "error": None}
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
    if k == "builtin" and getattr(sys.modules.get(cls.__module__), "OpResolverType", None) is None:
        k = "default"   # no OpResolverType: the interpreter applies its default delegates (XNNPACK)
    out["kernels"] = k
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


def make_interpreter(model_path=None, model_content: bytes | None = None, threads: int | None = None,
                     kernels: str | None = None):
    """An allocated interpreter for a model file or bytes, on ``threads`` threads (None: 1), with
    the built-in kernels (default) or the XNNPACK delegate (see :func:`kernels_choice`)."""
    cls, _ = interpreter_class()
    n = int(threads) if threads else DEFAULT_THREADS
    kw = {"model_path": str(model_path)} if model_path is not None else {"model_content": model_content}
    if kernels_choice(kernels) == "builtin":
        resolver = getattr(sys.modules[cls.__module__], "OpResolverType", None)
        if resolver is not None:
            kw["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native_stderr():
        interp = cls(num_threads=n, **kw)
        interp.allocate_tensors()
    return interp


def l2_normalise(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
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
        except BundleError:
            raise
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError on bad models
            raise BundleError(f"{self.path}: the interpreter cannot load the encoder ({e})") from None
        _, self.backend = interpreter_class()
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
        return {"input_shape": list(self.input_shape), "input_dtype": self.input_dtype.name,
                "input_scale": self.in_scale, "input_zero_point": self.in_zp,
                "output_shape": list(self.output_shape), "output_dtype": self.output_dtype.name,
                "output_scale": self.out_scale, "output_zero_point": self.out_zp, "embedding_dim": self.dim}

    def quantize(self, image: np.ndarray) -> np.ndarray:
        """The input tensor for a float image (H, W, 3): int8 with the input scale/zero point, or float32."""
        x = np.asarray(image, dtype=np.float32).reshape(self.input_shape)
        if self.input_dtype == np.int8 or self.input_dtype == np.uint8:
            info = np.iinfo(self.input_dtype)
            q = np.rint(x / self.in_scale) + self.in_zp
            return np.clip(q, info.min, info.max).astype(self.input_dtype)
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
