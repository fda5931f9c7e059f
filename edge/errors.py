"""Typed exceptions for everything a user can get wrong.

Every error a clinic user can cause derives from :class:`EcgretError`; the CLI turns
those into one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class EcgretError(Exception):
    """Base class of all user-facing errors."""


class RecordError(EcgretError):
    """A record could not be read or is unusable (format, shape, values, rate, length, leads)."""


class QualityError(RecordError):
    """The quality gate found no usable lead in a record."""


class BundleError(EcgretError):
    """A model bundle is missing, tampered with or inconsistent."""


class ConfigError(EcgretError):
    """A configuration or command-line setting is impossible."""


class ArchiveError(EcgretError):
    """A case archive is malformed (duplicate ids, missing fields, unreadable files)."""


class OverlayError(EcgretError):
    """The local overlay of enrolled cases could not be read or written."""
