"""Subprocess that embeds texts with a sentence-transformers model (the only place torch is imported).

The training process never imports torch: :func:`convert.text.embed_texts` runs
``python -m convert.text_worker --model DIR --texts IN.json --out OUT.npy`` and reads the result.
Exit status 0 on success; 3 when the model cannot be loaded (the reason on stderr, one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    """Run the worker on ``argv`` (None: ``sys.argv``): embed the JSON list of texts and save float32 (n, d)
    L2-normalised rows; returns the exit status (0, or 3 when the model cannot be loaded)."""
    ap = argparse.ArgumentParser(prog="python -m convert.text_worker")
    ap.add_argument("--model", required=True, help="a local sentence-transformers model directory")
    ap.add_argument("--texts", required=True, help="JSON file: a list of strings")
    ap.add_argument("--out", required=True, help="output .npy: float32 (n, d), L2-normalised rows")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ECGRET_TEXT_THREADS", "2")))
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import torch

    torch.set_num_threads(max(1, a.threads))
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(a.model, device="cpu", local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any load failure is reported as one line
        print(
            f"cannot load sentence-transformers model {a.model}: {type(e).__name__}: {e}".replace("\n", " "),
            file=sys.stderr,
        )
        return 3
    with open(a.texts, encoding="utf-8") as f:
        texts = json.load(f)
    emb = model.encode(
        texts, batch_size=a.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    np.save(a.out, np.asarray(emb, dtype=np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
