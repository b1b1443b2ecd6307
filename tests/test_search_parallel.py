"""Indexing on GPU nodes: files shared over ranks by seconds of audio, and several decode workers per process
giving the very index one worker gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from biolingual.search.index import build_index, decoded_windows, default_decode_workers, share_by_duration
from biolingual.synthetic import synth_call

RATE = 8_000
# sorted by name, long and short alternate: a split by count ([rank::2]) gives rank 0 all the long ones
LENGTHS = {
    "a.wav": 30.0,
    "b.wav": 1.0,
    "c.wav": 25.0,
    "d.wav": 1.0,
    "e.wav": 20.0,
    "f.wav": 1.0,
    "g.wav": 15.0,
    "h.wav": 1.0,
}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uneven")
    for i, (name, seconds) in enumerate(LENGTHS.items()):
        sf.write(folder / name, synth_call("Barred Owl", seconds, RATE, seed=i), RATE)
    return folder


def _seconds(files) -> float:
    return sum(sf.info(f).duration for f in files)


def test_share_by_duration_gives_each_rank_near_equal_seconds(recordings):
    files = sorted(str(p) for p in recordings.iterdir())
    shares = share_by_duration(files, 2)
    assert sorted(f for s in shares for f in s) == files  # every file once
    assert shares == share_by_duration(files, 2)  # the same in every process
    assert all(s == [f for f in files if f in s] for s in shares)  # each keeps the order it was given
    by_duration = [_seconds(s) for s in shares]
    by_count = [_seconds(files[r::2]) for r in range(2)]
    assert by_count == [90.0, 4.0]  # what the split by count did: one rank 22x the other's audio
    assert abs(by_duration[0] - by_duration[1]) <= 1.0, by_duration  # 47 s and 47 s
    # a length unknown from the header counts as the mean of the known ones (10 s here), not as nothing
    assert share_by_duration(["x", "y", "z"], 2, [10.0, 0.0, 0.0]) == [["x", "z"], ["y"]]


def test_ranks_of_build_index_take_their_duration_share(recordings, tiny_model, tmp_path):
    out = tmp_path / "index"
    reports = [build_index([recordings], tiny_model, out, rank=r, world_size=2, progress=False) for r in range(2)]
    seconds = [_seconds(r.added) for r in reports]
    assert sorted(len(r.added) for r in reports) == [4, 4] and abs(seconds[0] - seconds[1]) <= 1.0, seconds


def test_decode_workers_give_the_same_index_as_one(recordings, tiny_model, tmp_path):
    """3 workers decode different files at once; the windows reach the model in the same order, in the same
    batches, so every array of the index is identical (batch 3 with a 5 s hop spans file boundaries)."""
    broken = tmp_path / "in" / "broken.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF not really a wav")
    inputs = [recordings, broken.parent]
    indexes = {}
    for workers in (1, 3):
        out = tmp_path / f"workers{workers}"
        report = build_index(inputs, tiny_model, out, hop_s=5.0, batch_size=3, decode_workers=workers, progress=False)
        assert list(report.skipped) == [str(broken)] and len(report.added) == len(LENGTHS)
        indexes[workers] = out / "merged"
    for name in ("embeddings.npy", "starts.npy", "ends.npy", "file_ids.npy"):
        assert np.array_equal(np.load(indexes[1] / name), np.load(indexes[3] / name)), name
    assert json.loads((indexes[1] / "files.json").read_text()) == json.loads((indexes[3] / "files.json").read_text())


def test_decoded_windows_keep_the_order_of_files_and_windows(recordings):
    files = sorted(str(p) for p in recordings.iterdir())

    def messages(workers):
        return [
            (kind, path, None if w is None else (w.start, w.samples.tobytes()))
            for kind, path, w in decoded_windows(files, 16_000, 16_000 * 10, 16_000 * 5, workers, ahead=2)
        ]

    one = messages(1)
    assert [p for k, p, _ in one if k == "done"] == files
    assert messages(4) == one


def test_default_decode_workers():
    assert default_decode_workers("cpu", cpus=64) == 1  # torch's threads use the cores; one niced decoder
    assert default_decode_workers("cuda:0", cpus=16, local_processes=2) == 7
    assert default_decode_workers("cuda", cpus=128, local_processes=1) == 8
    assert default_decode_workers("cuda", cpus=2, local_processes=4) == 1
