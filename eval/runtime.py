"""The command-line options every runner shares: which model, on which device, in what batches."""
from __future__ import annotations

import argparse

from biolingual.loading import DEFAULT_MODEL


def add_runtime_args(ap: argparse.ArgumentParser, batch_size: int, batch_help: str = "clips per forward pass") -> None:
    ap.add_argument("--model", default=DEFAULT_MODEL, help="anything biolingual.load() accepts: a hub id or a folder")
    ap.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads/processes")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
