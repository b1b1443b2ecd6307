"""Outputs the field's readers open (issue 28 item 4): Raven tables per recording and over a file sequence, read
back by crowsetta (the real package); Kaleidoscope-style CSV; Parquet. No model: the hits are written directly."""

from __future__ import annotations

import csv

import crowsetta
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from biolingual.search.export import (
    PER_FILE_SUFFIX,
    RAVEN_COLUMNS,
    read_raven,
    sequence_offsets,
    write_kaleidoscope,
    write_parquet,
    write_raven,
    write_raven_per_file,
)
from biolingual.search.query import Hit


@pytest.fixture
def recorder(tmp_path):
    """Three recorder-style files of 20, 30 and 12 s in a site folder; the middle one has no hit."""
    site = tmp_path / "SITE-A"
    site.mkdir()
    paths = {}
    for name, seconds in (
        ("SITE-A_20240512_050000.wav", 20),
        ("SITE-A_20240512_051000.wav", 30),
        ("SITE-A_20240512_052000.wav", 12),
    ):
        sf.write(site / name, np.zeros(8000 * seconds, np.float32), 8000)
        paths[name[-10:-4]] = str(site / name)
    return paths


def _hits(paths):
    first, third = paths["050000"], paths["052000"]
    # best first within each query, as search returns them: the tables must reorder them by time
    return [
        Hit(third, 2.0, 7.0, 0.9, "owl"),
        Hit(first, 10.0, 15.0, 0.8, "owl"),
        Hit(first, 1.0, 6.0, 0.7, "owl"),
        Hit(first, 11.0, 16.0, 0.6, "frog"),
    ]


def _boxes(path, audio=None):
    bboxes = crowsetta.formats.bbox.Raven.from_file(path, annot_col="Annotation", audio_path=audio).to_bbox()
    return [(round(b.onset, 3), round(b.offset, 3), b.label, b.low_freq, b.high_freq) for b in bboxes]


def test_raven_sequence_table_follows_the_file_sequence_convention_and_crowsetta_reads_it(recorder, tmp_path):
    recordings = list(recorder.values())[::-1]  # given in any order: the sequence is in path order
    assert sequence_offsets(recordings) == {recorder["050000"]: 0.0, recorder["051000"]: 20.0, recorder["052000"]: 50.0}
    write_raven(_hits(recorder), tmp_path / "seq.txt", recordings)
    rows = read_raven(tmp_path / "seq.txt")
    assert list(rows[0]) == RAVEN_COLUMNS
    assert [
        (r["Begin Time (s)"], r["End Time (s)"], r["File Offset (s)"], r["Begin File"], r["Annotation"], r["Rank"])
        for r in rows
    ] == [
        ("1.000", "6.000", "1.000", "SITE-A_20240512_050000.wav", "owl", "3"),
        ("10.000", "15.000", "10.000", "SITE-A_20240512_050000.wav", "owl", "2"),
        ("11.000", "16.000", "11.000", "SITE-A_20240512_050000.wav", "frog", "1"),
        ("52.000", "57.000", "2.000", "SITE-A_20240512_052000.wav", "owl", "1"),
    ]  # 20 s + 30 s of files before it
    assert [r["Selection"] for r in rows] == ["1", "2", "3", "4"] and rows[3]["Begin Path"] == recorder["052000"]
    assert _boxes(tmp_path / "seq.txt") == [
        (1.0, 6.0, "owl", 0.0, 4000.0),
        (10.0, 15.0, "owl", 0.0, 4000.0),
        (11.0, 16.0, "frog", 0.0, 4000.0),
        (52.0, 57.0, "owl", 0.0, 4000.0),
    ]


def test_raven_per_file_tables_one_per_recording_read_by_crowsetta(recorder, tmp_path):
    written = write_raven_per_file(_hits(recorder), tmp_path / "tables", list(recorder.values()))
    assert [p.name for p in written] == [f"SITE-A_20240512_0{t}{PER_FILE_SUFFIX}" for t in ("50000", "51000", "52000")]
    first, empty, third = written
    assert _boxes(first, recorder["050000"]) == [
        (1.0, 6.0, "owl", 0.0, 4000.0),
        (10.0, 15.0, "owl", 0.0, 4000.0),
        (11.0, 16.0, "frog", 0.0, 4000.0),
    ]
    assert _boxes(third, recorder["052000"]) == [(2.0, 7.0, "owl", 0.0, 4000.0)]  # times within its own file
    assert {r["Begin File"] for r in read_raven(first)} == {"SITE-A_20240512_050000.wav"}
    assert empty.read_text().splitlines() == ["\t".join(RAVEN_COLUMNS)]  # analysed, nothing found: a header alone


def test_kaleidoscope_and_parquet_outputs(recorder, tmp_path):
    hits = _hits(recorder)
    first = recorder["050000"]
    write_kaleidoscope(hits, tmp_path / "k.csv", "cosine", {first: (51.5, -0.25)})
    rows = list(csv.DictReader((tmp_path / "k.csv").open()))
    assert list(rows[0]) == ["INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "label", "cosine", "lat", "lon"]
    assert rows[0] == {
        "INDIR": str(tmp_path),
        "FOLDER": "SITE-A",
        "IN FILE": "SITE-A_20240512_050000.wav",
        "OFFSET": "1.000",
        "DURATION": "5.000",
        "label": "owl",
        "cosine": "0.700000",
        "lat": "51.500000",
        "lon": "-0.250000",
    }
    assert (
        rows[-1]["IN FILE"] == "SITE-A_20240512_052000.wav" and rows[-1]["lat"] == rows[-1]["lon"] == ""
    )  # unknown place

    write_parquet(hits, tmp_path / "h.parquet", "probability")
    table = pq.read_table(tmp_path / "h.parquet")
    assert table.column_names == [
        "rank",
        "query",
        "file",
        "start_s",
        "end_s",
        "recording",
        "site",
        "start_time",
        "end_time",
        "latitude",
        "longitude",
        "probability",
    ]
    assert table.column("rank").to_pylist() == [1, 2, 3, 1] and table.column("start_s").to_pylist() == [
        2.0,
        10.0,
        1.0,
        11.0,
    ]
    assert table.column("probability").to_pylist() == [0.9, 0.8, 0.7, 0.6]
