"""The project's words for things that several packages name, defined once (standard library only, so
the command line can use them before anything heavy loads).

* **precision**: how numbers are held while a model runs: ``float32``, ``bfloat16``, ``float16``, ``int8``
  (inference also takes ``auto``). Training takes the same names (``train.precision``); accelerate's
  ``no``/``bf16``/``fp16`` are its own spellings, read where a launcher sets them.
* **audio files**: :data:`AUDIO_EXTENSIONS` are the files every command that looks through folders picks
  up (``biolingual index``, the dataset builder's local source, the review page's uploads).
* **slug**: :func:`slug`, a name as a file name.
"""

from __future__ import annotations

import re

PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")
TRAINING_PRECISIONS = ("float32", "bfloat16", "float16")  # train.precision: float32, or mixed precision at 16 bits
ACCELERATE_SPELLINGS = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}  # accelerate's words for them

# Every format the one audio loader (biolingual.audio: libsndfile, then PyAV) reads; lower case, with the dot.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aif", ".aiff", ".w64", ".caf")


def slug(name: str, max_length: int = 60) -> str:
    """A file-name-safe form of ``name``: lower case, runs of anything but a-z and 0-9 as one ``-``
    ("Barred Owl" -> "barred-owl"), at most ``max_length`` characters; "target" for a name with none
    left. Head files of agile targets are named with it, so the rule must not change."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:max_length].strip("-")
    return s or "target"
