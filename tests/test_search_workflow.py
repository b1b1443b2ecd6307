"""`biolingual index | search | detect` end to end: long synthetic recordings with calls planted at known times."""

from __future__ import annotations

import argparse
import csv
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import biolingual
from biolingual.audio import load_audio, split_windows
from biolingual.search.cli import add_subcommands
from biolingual.search.export import RAVEN_COLUMNS, read_raven
from biolingual.synthetic import synth_call

RATE = 22_050
OWL = "Barred Owl"
CLASSES = [f"The sound of a {OWL}", "background noise"]
PLANTED = {"a.flac": (20.0, 28.0), "b.wav": (61.0, 67.0)}  # owl calls; the rest is noise
SECONDS = 80.0


def _training_window(model, owl: bool, rng) -> np.ndarray:
    """10 s of noise, with an owl call over part of it or not, recorded at RATE like the test recordings."""
    n = int(model.window_samples / model.sampling_rate * RATE)
    x = (rng.uniform(0.01, 0.04) * rng.standard_normal(n)).astype(np.float32)
    if owl:
        length = int(rng.integers(n // 3, n))
        at = int(rng.integers(0, n - length + 1))
        x[at : at + length] += synth_call(OWL, length / RATE, RATE, seed=int(rng.integers(1e6)), noise=0)[:length]
    return split_windows(load_audio(x, model.sampling_rate, sampling_rate=RATE), model.window_samples)[0]


@pytest.fixture(scope="module")
def owl_model(tmp_path_factory):
    """A tiny model taught in seconds to tell an owl from background noise, saved to a folder.

    The audio tower stays random: its input batch-norm statistics are set from the data (a random
    model's are not, which makes all its embeddings nearly equal), then the audio projection and the
    text tower are fitted with the contrastive loss on cached audio features.
    """
    torch.manual_seed(0)
    model = biolingual.create("tiny", tokenizer_texts=CLASSES, seed=0, device="cpu")
    rng = np.random.default_rng(0)
    labels = torch.tensor([0, 1] * 16)
    waves = torch.from_numpy(np.stack([_training_window(model, i == 0, rng) for i in labels.tolist()]))
    clap = model.clap
    with torch.no_grad():
        features = model.front_end(waves)
        norm = clap.audio_model.audio_encoder.batch_norm
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over this one batch
        clap.audio_model.train()
        clap.audio_model(input_features=features)
        clap.audio_model.eval()
        pooled = clap.audio_model(input_features=features).pooler_output
    params = [*clap.audio_projection.parameters(), *clap.text_model.parameters(), *clap.text_projection.parameters()]
    optimizer = torch.optim.Adam(params, lr=5e-3)
    tokens = model.tokenize(CLASSES)
    for _ in range(100):
        audio = F.normalize(clap.audio_projection(pooled), dim=-1)
        loss = F.cross_entropy(20 * audio @ model.encode_text(**tokens).T, labels)
        if loss.item() < 0.05:  # stop before the tiny text tower overfits these few windows
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    path = tmp_path_factory.mktemp("owl_model") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("recordings")
    for i, (name, (start, end)) in enumerate(PLANTED.items()):
        rng = np.random.default_rng(100 + i)
        audio = (0.02 * rng.standard_normal(int(SECONDS * RATE))).astype(np.float32)
        a, b = int(start * RATE), int(end * RATE)
        audio[a:b] += synth_call(OWL, end - start, RATE, seed=7 + i, noise=0)[: b - a]
        sf.write(d / name, audio, RATE)
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00 not audio")
    return d


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biolingual")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def overlaps(start, end, interval) -> bool:
    return start < interval[1] and end > interval[0]


def test_index_then_search_finds_the_planted_calls(owl_model, recordings, tmp_path, capsys, monkeypatch):
    index = tmp_path / "index"
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the command's logging.basicConfig: warnings to stderr
    code = run(
        [
            "index",
            str(recordings),
            "--model",
            str(owl_model),
            "--out",
            str(index),
            "--window",
            "10",
            "--hop",
            "5",
            "--device",
            "cpu",
        ]
    )
    assert code == 2  # done, but broken.wav was skipped
    err = capsys.readouterr().err
    assert "skipped" in err and sum("broken.wav" in line for line in err.splitlines()) == 1  # named once, as skipped
    assert "broken.wav" in (index / "skipped-0.tsv").read_text()
    meta = json.loads((index / "index.json").read_text())
    assert meta["window_s"] == 10 and meta["hop_s"] == 5 and meta["model"]["dim"] == 32

    out = tmp_path / "out"
    code = run(
        [
            "search",
            str(index),
            f"The sound of a {OWL}",
            "--top",
            "2",
            "--csv",
            str(out / "hits.csv"),
            "--raven",
            str(out / "hits.txt"),
            "--audacity",
            str(out / "labels"),
            "--clips",
            str(out / "clips"),
            "--device",
            "cpu",
            "--raven-per-file",
            str(out / "tables"),
            "--kaleidoscope",
            str(out / "k.csv"),
            "--parquet",
            str(out / "hits.parquet"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "a.flac" in printed and "b.wav" in printed
    rows = list(csv.DictReader((out / "hits.csv").open()))
    assert len(rows) == 2
    for row in rows:  # each hit lies on the call planted in its file
        planted = PLANTED[row["file"].rsplit("/", 1)[-1]]
        assert overlaps(float(row["start_s"]), float(row["end_s"]), planted), row
    assert {r["file"].rsplit("/", 1)[-1] for r in rows} == set(PLANTED)

    raven = read_raven(out / "hits.txt")
    assert list(raven[0]) == RAVEN_COLUMNS
    assert [int(r["Selection"]) for r in raven] == [1, 2]
    assert all(
        r["View"] == "Spectrogram 1" and r["Channel"] == "1" and float(r["High Freq (Hz)"]) == RATE / 2 for r in raven
    )
    # a file sequence of the indexed recordings in path order: a.flac (80 s) first, then b.wav
    by_name = {r["file"].rsplit("/", 1)[-1]: (float(r["start_s"]), float(r["end_s"])) for r in rows}
    offsets = {"a.flac": 0.0, "b.wav": sf.info(recordings / "a.flac").duration}
    assert [r["Begin File"] for r in raven] == ["a.flac", "b.wav"]
    assert [(float(r["Begin Time (s)"]), float(r["End Time (s)"])) for r in raven] == [
        (by_name[n][0] + offsets[n], by_name[n][1] + offsets[n]) for n in ("a.flac", "b.wav")
    ]
    assert [float(r["File Offset (s)"]) for r in raven] == [by_name["a.flac"][0], by_name["b.wav"][0]]
    tables = sorted(p.name for p in (out / "tables").iterdir())  # every indexed recording, broken.wav was skipped
    assert tables == ["a.BioLingual.selection.table.txt", "b.BioLingual.selection.table.txt"]
    assert [r["Begin File"] for r in read_raven(out / "tables" / tables[1])] == ["b.wav"]
    assert [r["IN FILE"] for r in csv.DictReader((out / "k.csv").open())] == ["a.flac", "b.wav"]
    assert "wrote" in printed and (out / "hits.parquet").stat().st_size > 0

    labels = sorted((out / "labels").glob("*.txt"))
    assert [p.name for p in labels] == ["a.txt", "b.txt"]
    start, end, text = labels[0].read_text().splitlines()[0].split("\t")
    assert overlaps(float(start), float(end), PLANTED["a.flac"]) and OWL in text

    clips = sorted((out / "clips").glob("*.wav"))
    assert len(clips) == 2
    for clip, row in zip(clips, rows):
        info = sf.info(clip)
        assert info.samplerate == RATE
        assert info.duration == pytest.approx(float(row["end_s"]) - float(row["start_s"]), abs=1e-3)


def test_query_by_example_and_detect(owl_model, recordings, tmp_path, capsys):
    index = tmp_path / "index"
    assert (
        run(
            [
                "index",
                str(recordings / "a.flac"),
                str(recordings / "b.wav"),
                "--model",
                str(owl_model),
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
    example = tmp_path / "example.wav"
    sf.write(example, synth_call(OWL, 6.0, 16_000, seed=99), 16_000)
    assert (
        run(["search", str(index), "--audio", str(example), "--top", "1", "--csv", str(tmp_path / "similar.csv")]) == 0
    )
    (row,) = csv.DictReader((tmp_path / "similar.csv").open())
    assert overlaps(float(row["start_s"]), float(row["end_s"]), PLANTED[row["file"].rsplit("/", 1)[-1]])

    code = run(
        [
            "detect",
            str(recordings / "a.flac"),
            str(recordings / "b.wav"),
            "--model",
            str(owl_model),
            "--labels",
            OWL,
            "--threshold",
            "0.5",
            "--hop",
            "5",
            "--raven",
            str(tmp_path / "detections.txt"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    events = read_raven(tmp_path / "detections.txt")
    found = {}
    for e in events:
        name = e["Begin File"]
        assert e["Annotation"] == OWL
        begin = float(e["File Offset (s)"])  # Begin Time is in sequence time: a.flac, then b.wav
        assert overlaps(begin, begin + float(e["End Time (s)"]) - float(e["Begin Time (s)"]), PLANTED[name]), (
            e
        )  # no false alarm
        found[name] = found.get(name, 0) + 1
    assert found == {"a.flac": 1, "b.wav": 1}  # each call found once: its windows merged into one event


def test_incremental_indexing_adds_only_new_files(owl_model, recordings, tmp_path):
    from biolingual.search import build_index, load_index

    model = biolingual.load(owl_model, device="cpu")
    index = tmp_path / "index"
    first = build_index([recordings / "a.flac"], model, index, hop_s=5, progress=False)
    assert len(first.added) == 1 and first.windows == 15  # 80 s: windows at 0, 5, ..., 70 s
    rows = np.array(load_index(index).embeddings)
    again = build_index([recordings / "a.flac", recordings / "b.wav"], model, index, progress=False)
    assert [p.rsplit("/", 1)[-1] for p in again.added] == ["b.wav"] and len(again.already) == 1
    data = load_index(index)
    np.testing.assert_array_equal(data.embeddings[data.file_ids == 0], rows)  # a.flac's rows, carried over
    assert len(data) == 30 and data.embeddings.dtype == np.float16
    assert sorted(f.rsplit("/", 1)[-1] for f in data.files) == ["a.flac", "b.wav"]
    assert data.starts[data.file_ids == 0].tolist() == [5.0 * i for i in range(15)]
    assert (data.ends - data.starts == 10.0).all()


def test_other_model_and_corrupt_index_are_clear_errors(owl_model, recordings, tmp_path, capsys):
    from biolingual.search import load_index

    index = tmp_path / "index"
    assert (
        run(["index", str(recordings / "a.flac"), "--model", str(owl_model), "--out", str(index), "--device", "cpu"])
        == 0
    )
    other = tmp_path / "other"
    biolingual.create("tiny", tokenizer_texts=CLASSES, seed=1, device="cpu").save_pretrained(other)
    capsys.readouterr()
    assert run(["index", str(recordings / "b.wav"), "--model", str(other), "--out", str(index), "--device", "cpu"]) == 1
    assert "was built with model" in capsys.readouterr().err
    assert run(["search", str(index), "owl", "--model", str(other), "--device", "cpu"]) == 1
    assert "cannot be compared" in capsys.readouterr().err
    assert len(load_index(index)) == 8  # the index itself is untouched (a.flac: 80 s in 10 s windows)

    records = index / "merged" / "records.json"
    records.write_bytes(b"not json")
    assert run(["search", str(index), "owl", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "merged/records.json" in err and "corrupt" in err
    (index / "index.json").write_text("{ truncated")
    assert run(["search", str(index), "owl", "--device", "cpu"]) == 1
    assert "index.json" in capsys.readouterr().err
    assert run(["search", str(tmp_path), "owl", "--device", "cpu"]) == 1
    assert "not a biolingual index" in capsys.readouterr().err


def _index_until_killed(folder, owl_model, index, kill_at: str, **options) -> None:
    """Index ``folder`` in a child process that SIGKILLs itself at the fault point ``kill_at`` (a real crash at a
    chosen moment: killing from outside after a sleep raced with the indexing on a loaded machine)."""
    import os
    import subprocess
    import sys

    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    script = (
        f"import biolingual; from biolingual.search import build_index; "
        f"build_index([{str(folder)!r}], biolingual.load({str(owl_model)!r}, device='cpu'), {str(index)!r}, "
        f"progress=False, {args})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BIOLINGUAL_KILL_AT": kill_at}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, f"expected a SIGKILL at {kill_at}, got exit {proc.returncode}:\n{proc.stderr[-2000:]}"


def test_indexing_resumes_after_the_process_is_killed(owl_model, recordings, tmp_path):
    """A real crash: the indexing process is killed with SIGKILL just after its second file; running again
    keeps those two and indexes the other three."""
    from biolingual.search import build_index, load_index

    folder = tmp_path / "many"
    folder.mkdir()
    audio, rate = sf.read(recordings / "a.flac", frames=int(30 * RATE))
    sf.write(folder / "rec0.flac", audio, rate)
    for i in range(1, 5):
        (folder / f"rec{i}.flac").symlink_to(folder / "rec0.flac")
    index = tmp_path / "index"
    _index_until_killed(folder, owl_model, index, "index.file_done:2", hop_s=5, batch_size=4)
    done = [str(folder / f"rec{i}.flac") for i in range(2)]  # files are indexed in sorted order
    written = []
    for part in (index / "parts").glob("*.npz"):
        with np.load(part) as z:
            written.append(str(z["path"]))
    assert sorted(written) == done
    assert not (index / "merged").exists()  # killed before the merge

    report = build_index([folder], biolingual.load(owl_model, device="cpu"), index, progress=False)
    assert report.already == done and report.added == [str(folder / f"rec{i}.flac") for i in range(2, 5)]
    data = load_index(index)
    assert len(data.files) == 5 and len(data) == 5 * 5  # 30 s: windows at 0, 5, ..., 20 s
    first = np.asarray(data.embeddings[data.file_ids == 0], np.float32)
    for f in range(1, 5):  # the same audio gives the same embeddings, before and after the crash
        np.testing.assert_allclose(np.asarray(data.embeddings[data.file_ids == f], np.float32), first, atol=2e-3)


def test_a_long_recording_resumes_mid_file_after_a_kill(owl_model, recordings, tmp_path):
    """Killed in the middle of one long recording, indexing resumes from the file's last checkpoint (not its
    start), and the index equals that of an uninterrupted run."""
    from biolingual.search import build_index, load_index

    folder = tmp_path / "long"
    folder.mkdir()
    audio, rate = sf.read(recordings / "a.flac")
    sf.write(folder / "rec.flac", np.concatenate([audio] * 3), rate)
    index = tmp_path / "index"
    # checkpoint_s=0: a checkpoint after every batch of 2 windows; killed right after the second one
    _index_until_killed(folder, owl_model, index, "index.file_checkpoint:2", hop_s=5, batch_size=2, checkpoint_s=0)
    assert not list((index / "parts").glob("*.npz")), "killed mid-file: no part yet"
    (partial,) = (index / "parts").glob("*.partial")
    with np.load(partial) as z:
        assert z["starts"].tolist() == [0.0, 5.0, 10.0, 15.0] and z["embeddings"].shape == (4, 32)

    model = biolingual.load(owl_model, device="cpu")
    report = build_index([folder], model, index, progress=False)
    assert report.added == [str(folder / "rec.flac")] and report.resumed == 4 and report.windows == 47  # 240 s
    assert not list((index / "parts").glob("*.partial"))
    straight = tmp_path / "straight"
    build_index([folder], model, straight, hop_s=5, progress=False)
    a, b = load_index(index), load_index(straight)
    assert len(a) == len(b) == report.windows
    np.testing.assert_array_equal(a.starts, b.starts)
    np.testing.assert_allclose(np.asarray(a.embeddings, np.float32), np.asarray(b.embeddings, np.float32), atol=2e-3)
