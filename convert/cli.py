"""``ecgret-convert``: the workstation toolkit's command group. Commands are defined in the modules that
implement them and registered here with ``main.add_command``; this file stays thin and imports nothing heavy
(TensorFlow and torch load inside the commands)."""
from __future__ import annotations

import click

from . import index_build as _index_build
from . import pipeline as _pipeline
from . import teacher as _teacher
from . import text as _text
from .evaluate import evaluate_cmd as _evaluate_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train, evaluate, quantize and bundle ECG retrieval models."""


for _cmd in (_teacher.train_teacher_command, _teacher.teacher_report_command, _text.embed_text_command,
             _evaluate_cmd, _pipeline.distill_command, _pipeline.quantize_command, _pipeline.bundle_command,
             _pipeline.pipeline_command, _index_build.embed_archive_command, _index_build.merge_index_command):
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
