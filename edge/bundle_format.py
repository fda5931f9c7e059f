"""The bundle format's names: the format tag and version, the one index metric, the file names and the arrays
``waveforms.bin`` may hold (docs/BUNDLE.md). Apart from :mod:`edge.bundle` so that :mod:`edge.schema`, which
checks a manifest against them, does not import the loader that imports it."""

from __future__ import annotations

FORMAT = "ecgret-bundle"
FORMAT_VERSION = 1
METRIC = "angular"
ENCODER_FILE = "encoder.tflite"
INDEX_FILE = "index.ann"
CASES_FILE = "cases.jsonl"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
BUNDLE_FILES = (ENCODER_FILE, INDEX_FILE, CASES_FILE, MODEL_CARD_FILE)
WAVEFORMS_FILE = "waveforms.bin"
OPTIONAL_FILES = (WAVEFORMS_FILE,)  # listed in the manifest's "files" when present; checked when first used
WAVEFORM_ARRAYS = {"median_beats": 3, "rhythm_II": 2}  # the arrays waveforms.bin may hold, and their ndim
# a case's fields in cases.jsonl (and, with their own additions, in the overlay's cases)
CASE_LABEL_FIELDS = ("super_class", "sub_class", "form", "rhythm")  # lists of codes
CASE_TEXT_FIELDS = ("statements", "report", "source")  # strings
CASE_FIELDS = ("case_id", *CASE_LABEL_FIELDS, *CASE_TEXT_FIELDS)
