"""A search index is checked when it is opened, and scores shown are cosines: real indexes made by
`biolingual index` on the tiny model, damaged the way disks, copies and float16 overflow damage them."""

from __future__ import annotations

import csv
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import biolingual
from biolingual.cli import main
from biolingual.synthetic import SPECIES, synth_call

RATE = 48_000  # the model's rate: the indexed window and the query clip are the same samples


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Twelve 2 s clips (one window each) and one 25 s recording (several windows)."""
    d = tmp_path_factory.mktemp("integrity_recordings")
    species = list(SPECIES)
    for i in range(12):
        sf.write(d / f"clip{i:02d}.wav", synth_call(species[i % len(species)], 2.0, RATE, seed=i), RATE)
    sf.write(d / "long.wav", synth_call(species[0], 25.0, RATE, seed=99), RATE)
    return d


@pytest.fixture(scope="module")
def built(saved_model, recordings, tmp_path_factory):
    index = tmp_path_factory.mktemp("integrity_index") / "index"
    assert (
        main(
            [
                "index",
                str(recordings),
                "--model",
                str(saved_model),
                "--out",
                str(index),
                "--hop",
                "5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return index


@pytest.fixture
def index(built, tmp_path):
    """A copy of the module's index for one test to damage."""
    return shutil.copytree(built, tmp_path / "index")


def _search(index, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["search", str(index), "a frog", "--top", "100", "--no-merge", "--device", "cpu"])  # every row
    return code, capsys.readouterr().err


def test_a_query_equal_to_an_indexed_window_never_scores_above_1(built, recordings, tmp_path):
    # float16 rounding lengthens about half of the stored rows: their plain dot product with the very
    # query they came from exceeded 1 (up to ~1.0002 at 32-d), and was shown so
    clips = sorted(str(p) for p in recordings.glob("clip*.wav"))
    out = tmp_path / "hits.csv"
    assert (
        main(
            ["search", str(built), "--audio", *clips, "--top", "1", "--no-merge", "--csv", str(out), "--device", "cpu"]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert all(float(r["cosine"]) <= 1.0 for r in rows), [r["cosine"] for r in rows]
    # each clip finds its own window first (the random tiny model's embeddings are close together: ranking
    # by the lengthened rows' dot products put another clip first)
    assert [r["file"] for r in rows] == clips
    assert min(float(r["cosine"]) for r in rows) > 0.9999


def test_nan_in_a_part_names_the_part_and_how_to_embed_it_again(index, recordings, saved_model, tmp_path, capsys):
    from biolingual.search import build_index

    # a part not merged yet, as the second process of a launch leaves it for the first to merge: the long
    # recording is the first's share, the new short one the second's
    extra = tmp_path / "extra.wav"
    shutil.copy(recordings / "clip00.wav", extra)
    model = biolingual.load(saved_model, device="cpu")
    build_index([recordings / "long.wav", extra], model, index, rank=1, world_size=2, progress=False)
    (part,) = (index / "parts").glob("*.npz")
    with np.load(part) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["embeddings"][0, 3] = np.nan
    np.savez(part, **arrays)
    code, err = _search(index, capsys)
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    recording = str(arrays["path"])
    assert str(part) in err and "NaN" in err and f"biolingual index {recording} --out {index}" in err

    part.unlink()  # as the message says
    assert main(["index", recording, "--out", str(index), "--device", "cpu"]) == 0
    assert _search(index, capsys)[0] == 0


def test_nan_in_merged_embeddings_is_an_error_until_reindexed(index, recordings, capsys):
    emb = np.load(index / "merged" / "embeddings.npy", mmap_mode="r+")
    emb[4, 0] = np.nan
    emb.flush()
    del emb
    code, err = _search(index, capsys)
    assert code == 1 and err.startswith("error: ")
    assert str(index) in err and "NaN" in err and "re-index with `biolingual index" in err
    capsys.readouterr()
    assert main(["detect", str(index), "--labels", "Barred Owl", "--device", "cpu"]) == 1  # the same one door
    assert "NaN" in capsys.readouterr().err

    assert (
        main(["index", str(recordings), "--out", str(index), "--device", "cpu"]) == 0
    )  # nothing embedded: merged/ rebuilt
    assert _search(index, capsys)[0] == 0
    assert np.isfinite(np.load(index / "merged" / "embeddings.npy")).all()


def test_merged_arrays_of_different_lengths_are_an_error_until_reindexed(index, recordings, capsys):
    starts = np.load(index / "merged" / "starts.npy")
    np.save(index / "merged" / "starts.npy", starts[:-1])  # e.g. a copy cut short
    code, err = _search(index, capsys)  # was: IndexError from deep inside the search
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "merged/starts.npy" in err and str(len(starts)) in err and "re-index with `biolingual index" in err
    assert main(["index", str(recordings), "--out", str(index), "--device", "cpu"]) == 0
    assert _search(index, capsys)[0] == 0


def test_embeddings_are_scanned_once_not_on_every_open(index, capsys):
    from biolingual.search import load_index

    check = index / "merged" / "check.json"
    written = check.stat().st_mtime_ns  # merge checked every row and recorded it
    load_index(index)
    assert check.stat().st_mtime_ns == written  # trusted: embeddings.npy unchanged since
    check.unlink()  # an index merged before the check existed: scanned once, then recorded
    load_index(index)
    assert check.is_file()


def test_a_model_giving_nan_embeddings_skips_the_file(tiny_model, recordings, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken_model"
    tiny_model.save_pretrained(broken)
    model = biolingual.load(broken, device="cpu")
    with torch.no_grad():
        for p in model.clap.audio_projection.parameters():
            p.fill_(float("nan"))
    model.save_pretrained(broken)
    capsys.readouterr()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the command's logging.basicConfig: warnings to stderr
    code = main(
        [
            "index",
            str(recordings / "clip00.wav"),
            "--model",
            str(broken),
            "--out",
            str(tmp_path / "index"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "clip00.wav" in err and "NaN" in err  # skipped with its reason, like an unreadable file
    assert not list((tmp_path / "index" / "parts").glob("*.npz"))
