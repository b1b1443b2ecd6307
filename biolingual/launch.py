"""The ``biolingual`` command's entry point: settings of the process that must be made before torch is
imported, then :func:`biolingual.cli.main`.

In: the command line (``sys.argv``) and the environment. Out: for ``biolingual index``, ``OMP_WAIT_POLICY=PASSIVE``
in the environment unless the user set a policy; then the command runs.

Why: indexing decodes in a thread while torch's OpenMP threads compute on every core. By default OpenMP's idle
threads spin-wait between parallel regions and keep the cores the decoder needs; PASSIVE makes them sleep. On
2 cores (median of 3-6 interleaved runs, niced decoder): tiny, 30 min of audio, 1.59 s against 1.72 s; base,
6 min, 3.81 s against 4.30 s; one-shot ``embed_audio`` took 1.80 s and 4.26 s with the default policy. libgomp
reads the variable once, when torch loads it, so only an entry point can set it. Only for ``index``: where
decoding and compute take turns (``embed_audio`` on a long file) PASSIVE was slower (tiny 2.13 s against 1.80 s).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

# the commands that decode and compute at once, and gain when OpenMP's idle threads sleep
PASSIVE_WAIT_COMMANDS = frozenset({"index"})


def process_environment(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to the environment for the command line ``argv`` (without the program name)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in PASSIVE_WAIT_COMMANDS and "OMP_WAIT_POLICY" not in environ:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {}


def main() -> int:
    """``biolingual ...``: the settings above, then the command line interface (which imports torch)."""
    if "torch" not in sys.modules:  # too late once torch (and so OpenMP) is loaded
        os.environ.update(process_environment(sys.argv[1:], os.environ))
    from .cli import main as cli_main

    return cli_main()
