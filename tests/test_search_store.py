"""How an index stores its windows: each embedding once (parts/ folded into merged/ by the merge), recordings
relative to the index's root (so a moved archive is re-pointed with `biolingual index --relocate`), crash-safe
at every step of a merge, and indexes of the first format still open.

The writer tests feed :class:`IndexWriter` the tiny model's identity and seeded unit vectors (nothing to
decode): the storage is what is under test, and each build is a few milliseconds."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from biolingual.cli import main
from biolingual.search.index import IndexWriter, load_index, model_identity
from biolingual.synthetic import SPECIES, synth_call

RATE = 48_000
DIM_512 = 512


def _rows(path: str, n: int, dim: int) -> np.ndarray:
    """The same unit rows for the same recording name, whatever index it goes into."""
    seed = int(hashlib.sha1(Path(path).name.encode()).hexdigest()[:8], 16)
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def _recordings(folder: Path, names, seconds: float = 0.0) -> list[str]:
    """Recording files (real wavs of ``seconds`` when given; else bytes: the writer only stats them)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if seconds:
            sf.write(p, synth_call(list(SPECIES)[i % len(SPECIES)], seconds, RATE, seed=i), RATE)
        else:
            p.write_bytes(b"\0" * (100 + i))
        out.append(str(p))
    return out


def _write_parts(index: Path, model, files, windows: int = 4) -> IndexWriter:
    """Each of ``files`` written as `biolingual index` writes it (a part per recording), not merged yet."""
    writer = IndexWriter(index, model, 10.0, 10.0)
    for f in writer.start(files):
        for i in range(windows):
            writer.add_window(f, 10.0 * i, 10.0 * i + 10.0)
        writer.add_embeddings([f] * windows, _rows(f, windows, model.embedding_dim))
        writer.finish(f)
    return writer


def _arrays(index: Path) -> dict:
    m = index / "merged"
    return {
        "embeddings": np.load(m / "embeddings.npy"),
        "starts": np.load(m / "starts.npy"),
        "ends": np.load(m / "ends.npy"),
        "file_ids": np.load(m / "file_ids.npy"),
        "files": json.loads((m / "files.json").read_text()),
    }


def _assert_same(a: Path, b: Path) -> None:
    x, y = _arrays(a), _arrays(b)
    assert x["files"] == y["files"]
    for k in ("embeddings", "starts", "ends", "file_ids"):
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class _Model512:
    """What an index asks of its model (identity, window, rate), for a 512-d model without building one:
    the tiny preset is 32-d, where float64 window times alone are a third of a row."""

    name_or_path = "synthetic-512"
    embedding_dim = DIM_512
    sampling_rate = RATE
    window_samples = 10 * RATE

    def fingerprint(self) -> str:
        return "5" * 64


def test_an_index_holds_each_embedding_once(tmp_path):
    index = tmp_path / "index"
    files = _recordings(tmp_path / "audio", [f"rec{i}.wav" for i in range(8)])
    _write_parts(index, _Model512(), files[:4], windows=500).close()
    _write_parts(index, _Model512(), files[4:], windows=500).close()  # added later: merged again
    raw = 8 * 500 * DIM_512 * 2  # float16
    assert _size(index) < 1.25 * raw, (_size(index) / raw, sorted(p.name for p in index.rglob("*")))
    assert not list((index / "parts").glob("*.npz"))  # folded into merged/
    data = load_index(index)
    assert len(data) == 4000 and data.files == files
    np.testing.assert_array_equal(np.asarray(data.embeddings[data.file_ids == 5]), _rows(files[5], 500, DIM_512))


def test_files_added_after_a_merge_give_the_index_a_fresh_build_gives(tiny_model, tmp_path):
    files = _recordings(tmp_path / "audio", ["b.wav", "a.wav", "d.wav", "c.wav", "sub/e.wav"])
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    _write_parts(grown, tiny_model, files[:2]).close()
    _write_parts(grown, tiny_model, files[2:]).close()
    again = _write_parts(grown, tiny_model, files)  # everything is in the index already
    assert again.report.already == files and again.report.added == []
    again.close()
    _write_parts(fresh, tiny_model, files).close()
    _assert_same(grown, fresh)
    # rows in the order of the recordings' paths, stored relative to the folder that holds them all
    assert _arrays(grown)["files"] == ["a.wav", "b.wav", "c.wav", "d.wav", "sub/e.wav"]
    assert json.loads((grown / "index.json").read_text())["root"] == str(tmp_path / "audio")


MERGE_STEPS = ["index.merge_root", "index.merge_written", "index.merge_swapped", "index.merge_part_removed"]


@pytest.mark.parametrize("step", MERGE_STEPS)
def test_a_merge_killed_at_any_step_completes_when_run_again(tiny_model, tmp_path, step):
    files = _recordings(tmp_path / "audio", ["a.wav", "b.wav", "c.wav", "d.wav"])
    index, fresh = tmp_path / "index", tmp_path / "fresh"
    if step != "index.merge_root":  # the root is set by the first merge; the others are those of a grown index
        _write_parts(index, tiny_model, files[:2]).close()
    _write_parts(index, tiny_model, files)
    script = f"from biolingual.search.index import merge; merge({str(index)!r})"
    env = {**os.environ, "BIOLINGUAL_KILL_AT": step}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, f"expected a SIGKILL at {step}, got exit {proc.returncode}:\n{proc.stderr[-2000:]}"

    data = load_index(index)  # the merge runs again, or finishes what the killed one left
    assert len(data) == 16 and data.files == files
    _write_parts(fresh, tiny_model, files).close()
    _assert_same(index, fresh)
    assert not list((index / "parts").glob("*.npz")) and not list(index.glob(".merged.*"))
    again = _write_parts(index, tiny_model, files)  # and a re-run finds every recording done
    assert again.report.already == files


def _v1_index(folder: Path, model, files: list[str], windows: int = 3) -> Path:
    """An index as the first format (index.json "format": 1) left it: a full part per recording (absolute
    path) and merged/ holding every part's rows again, as `biolingual index` wrote it until this change."""
    parts = folder / "parts"
    parts.mkdir(parents=True)
    meta = {
        "format": 1,
        "model": model_identity(model),
        "window_s": 10.0,
        "hop_s": 10.0,
        "sampling_rate": RATE,
        "precision": ["float32"],
    }
    (folder / "index.json").write_text(json.dumps(meta, indent=2))
    for f in files:
        st = os.stat(f)
        starts = 10.0 * np.arange(windows)
        np.savez(
            parts / f"{hashlib.sha1(f.encode()).hexdigest()[:20]}.npz",
            embeddings=_rows(f, windows, model.embedding_dim),
            starts=starts,
            ends=starts + 10.0,
            path=np.array(f),
            size=np.array(int(st.st_size)),
            mtime=np.array(float(st.st_mtime)),
            precision=np.array("float32"),
        )
    names = sorted(p.name for p in parts.glob("*.npz"))
    merged = folder / "merged"
    merged.mkdir()
    emb, starts, ends, file_ids, paths = [], [], [], [], []
    for i, name in enumerate(names):
        with np.load(parts / name) as z:
            emb.append(z["embeddings"])
            starts.append(z["starts"])
            ends.append(z["ends"])
            file_ids.append(np.full(len(z["starts"]), i, np.int32))
            paths.append(str(z["path"]))
    np.save(merged / "embeddings.npy", np.concatenate(emb))
    np.save(merged / "starts.npy", np.concatenate(starts))
    np.save(merged / "ends.npy", np.concatenate(ends))
    np.save(merged / "file_ids.npy", np.concatenate(file_ids))
    (merged / "files.json").write_text(json.dumps(paths))
    listing = [[n, (parts / n).stat().st_mtime_ns, (parts / n).stat().st_size] for n in names]
    (merged / "parts.json").write_text(json.dumps(listing))
    return folder


def test_an_index_of_the_first_format_is_converted_on_first_open(saved_model, tiny_model, tmp_path, capsys, caplog):
    files = _recordings(tmp_path / "audio", ["owl.wav", "frog.wav", "site/loon.wav"], seconds=1.0)
    index = _v1_index(tmp_path / "index", tiny_model, files)
    before = {f: _rows(f, 3, 32) for f in files}
    size_before = _size(index)
    with caplog.at_level(logging.INFO, logger="biolingual.search.index"):
        data = load_index(index)
    assert any("converted" in r.getMessage() and str(index) in r.getMessage() for r in caplog.records)
    assert sorted(data.files) == sorted(files)  # the same recordings, named as before
    for f in files:
        np.testing.assert_array_equal(np.asarray(data.embeddings[data.file_ids == data.files.index(f)]), before[f])
    meta = json.loads((index / "index.json").read_text())
    assert meta["format"] == 2 and meta["root"] == str(tmp_path / "audio")
    assert not list((index / "parts").glob("*.npz")) and _size(index) < 0.75 * size_before
    # searched through the command as any index, and grown by it
    out = tmp_path / "hits.csv"
    assert (
        main(
            [
                "search",
                str(index),
                "an owl",
                "--no-merge",
                "--top",
                "9",
                "--csv",
                str(out),
                "--model",
                str(saved_model),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert sorted({r["file"] for r in csv.DictReader(out.open())}) == sorted(files)
    added = _recordings(tmp_path / "audio", ["zz.wav"], seconds=1.0)
    assert (
        main(["index", str(tmp_path / "audio"), "--out", str(index), "--model", str(saved_model), "--device", "cpu"])
        == 0
    )
    assert "indexed 1 new files (1 windows); 3 already in the index" in capsys.readouterr().err
    assert sorted(load_index(index).files) == sorted(files + added)


def test_a_moved_archive_is_re_pointed_and_found_there(saved_model, tmp_path, capsys):
    audio = tmp_path / "mount1" / "archive"
    files = _recordings(audio, ["owl.wav", "site/frog.wav"], seconds=3.0)
    index = tmp_path / "index"
    assert main(["index", str(audio), "--model", str(saved_model), "--out", str(index), "--device", "cpu"]) == 0
    assert main(["agile", "target", str(index), "--name", "owl", "--prompt", "an owl hooting", "--device", "cpu"]) == 0
    assert main(["agile", "label", str(index), "--target", "owl", "--at", files[0], "0", "--value", "positive"]) == 0
    moved = tmp_path / "mount2" / "archive"
    moved.parent.mkdir()
    shutil.move(str(audio), str(moved))
    capsys.readouterr()
    assert main(["index", "--out", str(index), "--relocate", str(tmp_path)]) == 1  # nothing of it there
    assert "none of the index's 2 recordings" in capsys.readouterr().err
    assert main(["index", "--out", str(index), "--relocate", str(moved)]) == 0
    assert f"2 of 2 recordings found under {moved}" in capsys.readouterr().err
    new = sorted(str(moved / Path(f).relative_to(audio)) for f in files)

    hits, clips = tmp_path / "hits.csv", tmp_path / "clips"
    assert (
        main(
            ["search", str(index), "an owl", "--no-merge", "--csv", str(hits), "--clips", str(clips), "--device", "cpu"]
        )
        == 0
    )
    assert sorted({r["file"] for r in csv.DictReader(hits.open())}) == new
    assert all(sf.info(c).duration > 0 for c in clips.glob("*.wav")) and len(list(clips.glob("*.wav"))) == 2
    calls = tmp_path / "calls.csv"
    assert (
        main(
            ["detect", str(index), "--labels", "Barred Owl", "--threshold", "0", "--csv", str(calls), "--device", "cpu"]
        )
        == 0
    )
    assert sorted({r["file"] for r in csv.DictReader(calls.open())}) == new
    # indexing the moved folder again embeds only what is new there: the others are the index's; a recording
    # that sorts first moves the old rows, and the label made before the move follows its window
    _recordings(moved, ["aaa.wav"], seconds=3.0)
    capsys.readouterr()
    assert main(["index", str(moved), "--out", str(index), "--device", "cpu"]) == 0
    assert "indexed 1 new files (1 windows); 2 already in the index" in capsys.readouterr().err
    assert main(["agile", "rank", str(index), "--target", "owl", "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert all(path in shown for path in new)
    owl = str(moved / "owl.wav")
    (row,) = [line.split()[0] for line in shown.splitlines() if owl in line]
    assert shown.splitlines()[0].split()[-1] == "label" and [
        line.split()[-1] for line in shown.splitlines() if owl in line
    ] == ["positive"]
    data = load_index(index)
    assert data.files[int(data.file_ids[int(row)])] == owl and int(row) == 1  # aaa.wav's window is row 0


def test_a_conversion_killed_after_the_root_is_written_still_opens_and_completes(tiny_model, tmp_path):
    """Killed between the two steps of converting a format-1 index: index.json is of format 2 with a root, merged/
    still of format 1 (absolute paths) beside the full parts. It opens as it is, and the next merge converts it."""
    from biolingual.search.index import open_merged

    files = _recordings(tmp_path / "audio", ["a.wav", "b.wav"])
    index = _v1_index(tmp_path / "index", tiny_model, files)
    script = f"from biolingual.search.index import merge; merge({str(index)!r})"
    env = {**os.environ, "BIOLINGUAL_KILL_AT": "index.merge_root"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert json.loads((index / "index.json").read_text())["format"] == 2
    assert open_merged(index).files == sorted(files, key=lambda f: hashlib.sha1(f.encode()).hexdigest())
    data = load_index(index)
    assert data.files == files and len(data) == 6 and not list((index / "parts").glob("*.npz"))
    for i, f in enumerate(files):
        np.testing.assert_array_equal(np.asarray(data.embeddings[data.file_ids == i]), _rows(f, 3, 32))


def test_a_recording_changed_since_it_was_merged_replaces_its_rows(tiny_model, tmp_path):
    files = _recordings(tmp_path / "audio", ["a.wav", "b.wav"])
    index = tmp_path / "index"
    _write_parts(index, tiny_model, files).close()
    Path(files[0]).write_bytes(b"\1" * 500)  # a.wav rewritten: another size
    again = _write_parts(index, tiny_model, files, windows=2)
    assert again.report.added == files[:1] and again.report.already == files[1:]
    again.close()
    data = load_index(index)
    assert data.files == files and np.bincount(data.file_ids).tolist() == [2, 4]
    records = json.loads((index / "merged" / "records.json").read_text())["records"]
    assert [(r["path"], r["size"], r["rows"]) for r in records] == [("a.wav", 500, 2), ("b.wav", 101, 4)]


def test_lost_records_are_rebuilt_from_the_rows_and_the_recordings_given_embedded_again(tiny_model, tmp_path):
    from biolingual.search.index import SearchIndexError

    files = _recordings(tmp_path / "audio", ["a.wav", "b.wav", "c.wav"])
    index = tmp_path / "index"
    _write_parts(index, tiny_model, files).close()
    before = np.array(load_index(index).embeddings)
    (index / "merged" / "records.json").unlink()
    with pytest.raises(SearchIndexError, match="records.json"):
        load_index(index)  # never merged over as if empty
    again = _write_parts(index, tiny_model, files[:1])  # the others are not given this time
    assert again.report.added == files[:1]  # sizes lost with the records: what is given is embedded again
    again.close()
    data = load_index(index)
    assert data.files == files
    np.testing.assert_array_equal(np.asarray(data.embeddings), before)  # b and c kept their rows
