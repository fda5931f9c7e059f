"""Verified bytes handed to native code by a file name that cannot change under it.

Annoy and the TFLite interpreter open a *file name* and ``mmap`` it shared: after ecgret has checked a
bundle file, whoever can write that file could change what they read (between the check and the load, or
at any time while a ``listen --loop`` runs), and a crafted index then crashes the process. So the checked
bytes go into an anonymous, sealed in-memory file (Linux ``memfd_create`` with ``F_SEAL_WRITE | F_SEAL_GROW
| F_SEAL_SHRINK | F_SEAL_SEAL``) and native code opens ``/proc/self/fd/<n>``: exactly the verified bytes, for
the life of the process. Where memfd is unavailable (not Linux) :func:`sealed_copy` returns None and the
caller falls back to the file itself (docs/BUNDLE.md says so).
"""

from __future__ import annotations

import os

__all__ = ["SealedFile", "sealed_copy"]


class SealedFile:
    """An open, sealed memfd holding ``data``; ``path`` opens it (``/proc/self/fd/<n>``). Closed when freed."""

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size
        self.path = f"/proc/self/fd/{fd}"

    def close(self) -> None:
        """Close the memfd (idempotent); native code that mapped it keeps its mapping."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass


def sealed_copy(data, name: str) -> SealedFile | None:
    """A :class:`SealedFile` holding ``data``, or None where the platform has no sealed memfd."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        import fcntl

        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
        fd = memfd(f"ecgret:{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):
        return None
    try:
        view = memoryview(data).cast("B")
        while view:
            n = os.write(fd, view)
            view = view[n:]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:
        os.close(fd)
        return None
    return SealedFile(fd, len(data))
