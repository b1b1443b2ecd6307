"""eval.zero_shot and eval.retrieval end to end: real audio files, CSVs and webdataset shards, the tiny model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from biolingual.synthetic import SPECIES, synth_call
from eval import retrieval, zero_shot
from eval.embedding_cache import EmbeddingCache

from .shards import add_member, write_shards

LABELS = list(SPECIES)[:3]


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("zs")
    rows = []
    for i in range(6):
        label = LABELS[i % 3]
        sf.write(d / f"clip{i}.wav", synth_call(label, 2.0, 22050, seed=i), 22050)
        rows.append([f"clip{i}.wav", label])
    rows.append(["missing.wav", LABELS[0]])
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00 not audio at all")  # exists, does not decode
    rows.append(["broken.wav", LABELS[1]])
    with open(d / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    return d / "labels.csv"


def test_zero_shot_csv_outputs_and_cache(labelled_csv, saved_model, tmp_path):
    out = tmp_path / "zs"
    args = [
        "--model",
        str(saved_model),
        "--data",
        str(labelled_csv),
        "--out",
        str(out),
        "--workers",
        "0",
        "--template",
        "The sound of a {}",
        "--template",
        "A {} calling",
    ]
    # finished with skipped rows: exit code 2 (as `biolingual predict`), results written, each row named
    assert zero_shot.main(args) == 2
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 6 and m["n_labels"] == 3 and m["templates"] == ["The sound of a {}", "A {} calling"]
    assert 0 <= m["top1"] <= m["top5"] == 1.0  # 3 labels: the true one is always in the top 5
    assert m["n_skipped"] == 2 and len(m["problems"]) == 2
    assert any(f"'{labelled_csv}' row 8: audio file 'missing.wav' not found; row skipped" in p for p in m["problems"])
    assert any(f"{labelled_csv.parent / 'broken.wav'}" in p and p.endswith("skipped") for p in m["problems"])
    assert np.array(m["confusion"]).sum() == 6
    assert (out / "confusion.png").stat().st_size > 1000
    per_class = list(csv.DictReader(open(out / "per_class.csv")))
    assert [r["label"] for r in per_class] == sorted(LABELS) and all(r["n"] == "2" for r in per_class)
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 6
    with EmbeddingCache(out / "embeddings.sqlite") as cache:
        assert len(cache) == 6
    # a second run reads every embedding from the cache and gives the same numbers
    stamp = (out / "embeddings.sqlite").stat().st_mtime_ns
    assert zero_shot.main(args) == 2
    assert json.loads((out / "metrics.json").read_text())["top1"] == m["top1"]
    assert (out / "embeddings.sqlite").stat().st_mtime_ns == stamp


def test_zero_shot_bad_input(tmp_path, saved_model):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,species\nx.wav,Elk\n")
    assert zero_shot.main(["--model", str(saved_model), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert (
        zero_shot.main(
            ["--model", str(saved_model), "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]
        )
        == 1
    )


def test_zero_shot_and_retrieval_on_shards(tmp_path, saved_model):
    write_shards(tmp_path / "shards", prefix="test", n_species=3, per_species=3, per_shard=5)
    pattern = str(tmp_path / "shards" / "test-{000000..000001}.tar")
    assert (
        zero_shot.main(
            ["--model", str(saved_model), "--shards", pattern, "--out", str(tmp_path / "zs"), "--workers", "0"]
        )
        == 0
    )
    m = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert m["n"] == 9 and m["n_labels"] == 3

    assert (
        retrieval.main(
            [
                "--model",
                str(saved_model),
                "--shards",
                pattern,
                "--out",
                str(tmp_path / "ret"),
                "--workers",
                "0",
                "--chunk-size",
                "4",
            ]
        )
        == 0
    )
    r = json.loads((tmp_path / "ret" / "metrics.json").read_text())
    assert r["n_items"] == 9 and r["distinct_captions"] == 3
    for rule in ("caption", "strict"):
        for direction in ("text_to_audio", "audio_to_text"):
            assert 0 <= r[rule][f"{direction}/R@1"] <= r[rule][f"{direction}/R@5"] <= r[rule][f"{direction}/R@10"] <= 1
    # 3 clips share each caption: the caption rule can only find more matches than the strict one
    assert r["caption"]["text_to_audio/R@1"] >= r["strict"]["text_to_audio/R@1"]
    assert r["caption"]["audio_to_text/R@10"] == 1.0  # only 9 items: everything is in the top 10
    assert "| caption | text to audio |" in (tmp_path / "ret" / "results.md").read_text()
    assert (
        retrieval.main(
            [
                "--model",
                str(saved_model),
                "--shards",
                str(tmp_path / "none-{0..1}.tar"),
                "--out",
                str(tmp_path / "ret2"),
            ]
        )
        == 1
    )

    # a sample that does not decode: both runners finish, count it, and exit 2 as predict does
    add_member(tmp_path / "shards" / "test-000001.tar", "broken.flac", b"not flac at all")
    add_member(tmp_path / "shards" / "test-000001.tar", "broken.json", b'{"text": ["a broken clip"], "species": "x"}')
    assert (
        retrieval.main(
            ["--model", str(saved_model), "--shards", pattern, "--out", str(tmp_path / "ret3"), "--workers", "0"]
        )
        == 2
    )
    r = json.loads((tmp_path / "ret3" / "metrics.json").read_text())
    assert r["n_items"] == 9 and r["n_skipped"] == 1 and "did not decode" in r["problems"][0]
    assert (
        zero_shot.main(
            ["--model", str(saved_model), "--shards", pattern, "--out", str(tmp_path / "zs3"), "--workers", "0"]
        )
        == 2
    )
    m = json.loads((tmp_path / "zs3" / "metrics.json").read_text())
    assert m["n"] == 9 and m["n_skipped"] == 1
