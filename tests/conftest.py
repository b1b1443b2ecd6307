"""Shared fixtures: a tiny model saved to a folder, synthetic clips written as real audio files, and a local
HTTP server."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one compute thread per test process (and the processes tests start, which inherit it): `make test` runs two
# workers on two cores, and two OpenMP threads each made every small torch op wait at a barrier for a thread the
# other worker held; test_probe's end-to-end test took 142 s of wall time that way, 29 s with one thread
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pytest
import soundfile as sf
import torch

import biolingual
from biolingual.synthetic import SPECIES, synth_call

from .http_server import LocalServer
from .shards import write_shards

LABELS = list(SPECIES)
TEMPLATE = "The sound of a {}"


@pytest.fixture(scope="session")
def tiny_model():
    texts = [t.format(s) for s in LABELS for t in (TEMPLATE, "A {} calling at night", "{} song")]
    return biolingual.create("tiny", tokenizer_texts=texts, seed=0, device="cpu")


@pytest.fixture(scope="session")
def saved_model(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Clips of several lengths, rates, channel counts and formats; name -> path."""
    d = tmp_path_factory.mktemp("clips")
    specs = {
        "peeper_short.wav": ("Spring Peeper", 2.5, 16000, 1),
        "owl_stereo.flac": ("Barred Owl", 7.0, 44100, 2),
        "loon_long.flac": ("Common Loon", 23.0, 22050, 1),
        "cricket_48k.wav": ("Field Cricket", 10.0, 48000, 1),
        "frog_odd_rate.ogg": ("American Bullfrog", 4.0, 11025, 1),
    }
    paths = {}
    for i, (name, (species, seconds, rate, channels)) in enumerate(specs.items()):
        mono = synth_call(species, seconds, rate, seed=i)
        data = np.stack([mono, 0.5 * mono], axis=1) if channels == 2 else mono
        sf.write(d / name, data, rate)
        paths[name] = d / name
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training shards (4 species; train 3 shards, valid 1) shared by test_training*.py, one set per module."""
    d = tmp_path_factory.mktemp("train_data")
    write_shards(d, "train", n_species=4, per_species=6, per_shard=8)
    write_shards(d, "valid", n_species=4, per_species=2, per_shard=100, seed=9)
    return d


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture()
def http_server():
    """``http_server(handler, quiet=False)`` starts a :class:`LocalServer` on 127.0.0.1 and returns it; every
    server started is closed when the test ends."""
    started = []

    def start(handler, quiet: bool = False) -> LocalServer:
        started.append(LocalServer(handler, quiet=quiet))
        return started[-1]

    yield start
    for server in started:
        server.close()


# The longest test files first: with two workers, a long test started last would leave one worker waiting
# for it at the end of the run (make test runs with --dist worksteal, so the rest spreads over both).
SLOW_FIRST = (
    "test_docs.py",
    "test_bench_gpu.py",
    "test_probe.py",
    "test_training_distributed.py",
    "test_eval_cli.py",
    "test_eval_finetune.py",
    "test_training.py",
    "test_core_install.py",
    "test_training_launch.py",
)


def pytest_collection_modifyitems(items):
    """Reorder whole files (their module-scoped fixtures stay shared): the slow ones, longest first, then the rest."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))
