"""The dataset builder end to end on real files: synthetic and local sources, template captions,
real webdataset shards, the manifest, resume after kill -9, partitions, dedup and `status`."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf
import webdataset as wds
import yaml

from biolingual.data import eval_loader, train_loader
from biolingual.faults import ENV
from biolingual.synthetic import invented_species, synth_pattern
from data_pipeline.__main__ import main
from data_pipeline.build import build
from data_pipeline.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "text",
    "source",
    "source_id",
    "page_url",
    "audio_url",
    "license",
    "attribution",
    "recordist",
    "species_common",
    "species_scientific",
    "duration",
    "original_sample_rate",
}


def synthetic_config(**over) -> dict:
    raw = {
        "sources": [{"type": "synthetic", "species": 6, "clips_per_species": 5, "seconds": 1.5, "include_bad": True}],
        "audio": {"max_chunks": 4, "clip_seconds": 0.5},
        "shards": {"max_samples": 7},
        "splits": {"valid": 0.15, "test": 0.15, "unseen_species": 0.2, "seed": 0},
        "download": {"concurrency": 2},
    }
    raw.update(over)
    return resolve_config(raw)


def read_samples(out: Path) -> dict[str, tuple[bytes, dict]]:
    """Every sample of every shard via webdataset; asserts keys are unique across shards."""
    samples = {}
    for tar in sorted(out.glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            assert s["__key__"] not in samples, f"{s['__key__']} written twice"
            samples[s["__key__"]] = (s["flac"], json.loads(s["json"]))
    return samples


def test_build_writes_readable_shards_with_metadata_splits_and_reasons(tmp_path):
    out = tmp_path / "out"
    summary = build(synthetic_config(), out, progress=False)
    samples = read_samples(out)
    sizes = json.loads((out / "sizes.json").read_text())
    shard_of = {key: tar for tar in sizes for key in read_tar_keys(out / tar)}
    assert sizes == {t.name: sum(1 for _ in wds.WebDataset(str(t), shardshuffle=False)) for t in out.glob("*.tar")}
    assert sum(sizes.values()) == len(samples)
    assert all(1 <= n <= 7 for n in sizes.values())
    # 30 good recordings of 1.5 s, species with few recordings -> up to 4 clips of 0.5 s (3 here)
    assert len(samples) == 30 * 3
    for key, (flac, meta) in samples.items():
        assert "." not in key
        assert FIELDS <= set(meta), set(FIELDS) - set(meta)
        assert len(meta["text"]) == 2 and meta["species_common"] in meta["text"][0]
        assert meta["species_scientific"] in meta["text"][1] and meta["species_common"] not in meta["text"][1]
        audio, rate = sf.read(io.BytesIO(flac))
        assert rate == 48000 and audio.ndim == 1 and meta["original_sample_rate"] == 22050
        assert sf.info(io.BytesIO(flac)).format == "FLAC"
        assert shard_of[key].startswith(meta["split"] + "-")
    # splits: unseen species appear nowhere else; every split is present
    by_split = {}
    for _, meta in samples.values():
        by_split.setdefault(meta["split"], set()).add(meta["species_common"])
    assert set(by_split) == {"train", "valid", "test", "unseen"}
    others = by_split["train"] | by_split["valid"] | by_split["test"]
    assert by_split["unseen"] and not by_split["unseen"] & others
    stages = {(stage): n for _, stage, n in summary["stages"]}
    assert stages == {"written": 30, "rejected": 3, "excluded": 1}
    reasons = sorted(r[2].split(":")[0] for r in summary["reasons"])
    assert reasons == ["licence not accepted", "silent", "too short", "undecodable"]
    # rerunning a finished build changes nothing
    before = {t.name: t.stat().st_mtime_ns for t in out.glob("*.tar")}
    build(synthetic_config(), out, progress=False)
    assert {t.name: t.stat().st_mtime_ns for t in out.glob("*.tar")} == before


def read_tar_keys(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return {Path(m.name).name.split(".")[0] for m in tar}


def test_shards_feed_the_training_and_evaluation_loaders(tmp_path):
    out = tmp_path / "out"
    build(synthetic_config(), out, progress=False)
    n_valid = sum(1 for _ in wds.WebDataset(str(out / "valid-000000.tar"), shardshuffle=False))
    batches = list(eval_loader(str(out / "valid-000000.tar"), batch_size=4, workers=0, clip_samples=48000))
    assert sum(len(b["text"]) for b in batches) == n_valid and sum(b["skipped"] for b in batches) == 0
    assert batches[0]["audio"].shape[1] == 48000 and batches[0]["meta"][0]["license"] == "cc-by"
    train = sorted(str(p) for p in out.glob("train-*.tar"))
    loader = train_loader(train, batch_size=5, steps_per_epoch=3, workers=0, clip_samples=24000, shuffle_buffer=10)
    got = list(loader)
    assert len(got) == 3 and all(b["audio"].shape == (5, 24000) and len(b["text"]) == 5 for b in got)


def _run(config: Path, out: Path, *extra: str, **kw) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "data_pipeline",
            "build",
            "--config",
            str(config),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kw,
    )


def _build_until_killed(raw: dict, out: Path, kill_at: str) -> None:
    os.environ[ENV] = kill_at  # only in this forked child: it SIGKILLs itself at that fault point
    build(resolve_config(raw), out, progress=False)


def _manifest(out: Path, sql: str) -> set:
    """Rows of a query on the manifest a killed run left, opened read-only so that the next run, not
    this check, recovers it."""
    db = sqlite3.connect(f"file:{out / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute(sql)}
    finally:
        db.close()


def test_kill_9_at_any_moment_then_rerun_gives_exactly_the_uninterrupted_samples(tmp_path, capsys):
    raw = {
        "sources": [{"type": "synthetic", "species": 5, "clips_per_species": 12, "seconds": 1.0}],
        "audio": {"clip_seconds": 0.5},
        "shards": {"max_samples": 3},
        "download": {"concurrency": 2},
        "splits": {"valid": 0.2, "test": 0.2, "unseen_species": 0.2, "seed": 1},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    reference = tmp_path / "ref"
    build(resolve_config(raw), reference, progress=False)
    expected = read_samples(reference)
    out = tmp_path / "killed"

    def killed_at(point: str) -> None:
        # A real process (forked: no 6 s re-import) that SIGKILLs itself at a fault point in the code: the
        # same moment on an idle or a loaded machine, unlike killing it from outside after a wait.
        proc = multiprocessing.get_context("fork").Process(target=_build_until_killed, args=(raw, out, point))
        proc.start()
        proc.join(timeout=120)
        if proc.is_alive():  # never reached its point: stop it, and fail below
            proc.kill()
            proc.join()
        assert proc.exitcode == -signal.SIGKILL, f"the run should have died at {point}, exit code {proc.exitcode}"

    def staged_files() -> set[str]:
        return {p.name.split(".")[0] for p in (out / ".staging").glob("*/*.flac")}

    pending = "SELECT key FROM samples WHERE shard IS NULL"
    committed = "SELECT key FROM samples WHERE shard IS NOT NULL"
    shards = "SELECT name FROM shards"
    # Several runs on the same --out, each killed at another moment; each check shows the run left the
    # state that moment is for (the one the next run's recovery must handle).
    killed_at("build.start")
    assert (out / "manifest.sqlite").exists() and not list(out.glob("*.tar*"))
    killed_at("build.record_processed:3")  # a record's staged files written, the manifest not told
    assert staged_files() - _manifest(out, "SELECT key FROM samples")
    killed_at("build.record_staged:4")  # a record marked staged, not yet in a shard
    assert _manifest(out, pending) and _manifest(out, pending) <= staged_files()
    killed_at("build.shard_written")  # a fsynced shard .partial, not committed
    (partial,) = out.glob("*.partial")
    assert partial.name.removesuffix(".partial") not in _manifest(out, shards)
    killed_at("build.shard_committed")  # committed, still .partial (the one above was deleted)
    (partial,) = out.glob("*.partial")
    assert partial.name.removesuffix(".partial") in _manifest(out, shards)
    killed_at("build.shard_renamed")  # renamed (the one above too), its staged files still there
    assert not list(out.glob("*.partial")) and _manifest(out, committed) & staged_files()
    assert _manifest(out, "SELECT uid FROM records WHERE stage='listed'"), "records should be left for the final run"

    final = _run(config, out)  # the command line finishes the job
    assert final.wait(timeout=120) == 0, final.stderr.read().decode()[-2000:]
    got = read_samples(out)
    assert sorted(got) == sorted(expected)
    for key, (flac, meta) in expected.items():
        assert got[key][1] == meta and got[key][0] == flac
    assert not list(out.glob("*.partial")) and not [p for p in (out / ".staging").rglob("*") if p.is_file()]
    assert sum(json.loads((out / "sizes.json").read_text()).values()) == len(expected)
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert "| synthetic | 0 | 0 | 60 |" in status and "| unseen |" in status


def test_partitions_split_the_work_and_together_equal_one_run(tmp_path):
    config = synthetic_config(sources=[{"type": "synthetic", "species": 4, "clips_per_species": 5, "seconds": 1.0}])
    whole = read_samples(_build(config, tmp_path / "whole"))
    out = tmp_path / "parts"
    for part in (1, 2, 3):
        build(config, out, partition=(part, 3), progress=False)
    parts = read_samples(out)  # asserts no key twice
    assert sorted(parts) == sorted(whole)
    assert len(list(out.glob("manifest-*-of-3.sqlite"))) == 3
    assert sum(json.loads((out / "sizes.json").read_text()).values()) == len(whole)


def _build(config, out):
    build(config, out, progress=False)
    return out


def test_local_folder_with_metadata_csv_dedups_same_audio(tmp_path):
    folder = tmp_path / "recordings"
    (folder / "Marsh Whistler").mkdir(parents=True)
    species = invented_species(2, seed=3)
    (name_a, pa), (name_b, pb) = species.items()
    sf.write(folder / "a.wav", synth_pattern(pa, 3.0, 16000, seed=1), 16000)
    sf.write(folder / "b.ogg", np.stack([synth_pattern(pb, 2.0, 44100, seed=2)] * 2, axis=1), 44100)
    sf.write(folder / "Marsh Whistler" / "c.flac", synth_pattern(pa, 2.0, 48000, seed=3), 48000)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEnot audio")
    (folder / "metadata.csv").write_text(
        "file,species_common,species_scientific,description,license,recordist\n"
        f"a.wav,{name_a},{pa.scientific},near the lake,CC-BY 4.0,Ann\n"
        f"b.ogg,{name_b},{pb.scientific},,cc0,Bo\n"
        f"missing.wav,{name_b},{pb.scientific},,cc0,Bo\n"
        f"broken.wav,{name_b},{pb.scientific},,cc0,Bo\n"
    )
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "same_as_a.wav").symlink_to(folder / "a.wav")
    config = resolve_config(
        {
            "sources": [
                {"type": "local", "path": str(folder), "metadata": str(folder / "metadata.csv"), "license": "cc-by-nc"},
                {"type": "local", "path": str(twin), "license": "cc-by"},
            ],
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
        }
    )
    summary = build(config, tmp_path / "out", progress=False)
    samples = read_samples(tmp_path / "out")
    # keys: the file's path, key-safe, plus a stable hash of it (see test_pipeline_local_keys.py)
    a, c = "local_a_wav-d508577d52", "local_Marsh_Whistler_c_flac-e8e2bc3837"
    assert sorted(samples) == [c, a, "local_b_ogg-f9be3c7c9e"]
    assert samples[a][1]["license"] == "cc-by" and samples[a][1]["recordist"] == "Ann"
    assert samples[a][1]["source_id"] == "a.wav"
    assert samples[c][1]["species_common"] == "Marsh Whistler"
    assert samples[c][1]["license"] == "cc-by-nc"
    stages = {(src, st): n for src, st, n in summary["stages"]}
    assert stages[("local", "duplicate")] == 1 and stages[("local", "rejected")] == 2
    reasons = " ".join(r[2] for r in summary["reasons"])
    assert "missing.wav" in reasons and "broken.wav" in reasons


LOCAL_SPECIES = ["Copper Reed Frog", "Velvet Marsh Wren", "Ashen Tree Cricket", "Pale Pond Toad"]


def test_shards_and_batches_mix_sources_and_species(tmp_path):
    """Archives list a species' recordings together and sources one after another; shards written in that
    order held one source and a species or two each. Records are processed, and samples packed, in a stable
    hashed order instead: every shard and every training batch mixes both sources and several species."""
    folder = tmp_path / "recordings"
    species = invented_species(4, seed=0)  # the synthetic source's 4 species
    for k, name in enumerate(LOCAL_SPECIES):  # the local source's, listed folder by folder
        (folder / name).mkdir(parents=True)
        for i in range(6):
            sf.write(
                folder / name / f"{i}.wav", synth_pattern(list(species.values())[k], 1.0, 16000, seed=10 * k + i), 16000
            )
    config = resolve_config(
        {
            "sources": [
                {"type": "synthetic", "species": 4, "clips_per_species": 6, "seconds": 1.0},
                {"type": "local", "path": str(folder), "license": "cc-by"},
            ],
            "audio": {"max_chunks": 1, "clip_seconds": 0.5},
            "shards": {"max_samples": 12},
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            "download": {"concurrency": 2},
        }
    )
    out = tmp_path / "out"
    build(config, out, progress=False)
    source_of = {**{n: "synthetic" for n in species}, **{n: "local" for n in LOCAL_SPECIES}}
    named = {**{n: n for n in source_of}, **{p.scientific: n for n, p in species.items()}}  # captions use either name
    per_shard = {}
    for tar in sorted(out.glob("train-*.tar")):
        metas = [json.loads(s["json"]) for s in wds.WebDataset(str(tar), shardshuffle=False)]
        per_shard[tar.name] = ({m["source"] for m in metas}, {m["species_common"] for m in metas})
    assert len(per_shard) == 4  # 48 samples, 12 a shard
    # in listing order: 2 shards of synthetic only, 2 of local only with 2 species each
    assert all(sources == {"synthetic", "local"} for sources, _ in per_shard.values()), per_shard
    assert min(len(names) for _, names in per_shard.values()) >= 5, per_shard  # of the 8 species

    loader = train_loader(
        sorted(str(p) for p in out.glob("train-*.tar")),
        batch_size=8,
        steps_per_epoch=4,
        workers=0,
        clip_samples=24000,
        shuffle_buffer=1,
    )  # no shuffling to speak of: the variety is the shards'
    for batch in loader:
        names = {named[n] for text in batch["text"] for n in named if n in text}
        assert len(names) >= 4 and {source_of[n] for n in names} == {"synthetic", "local"}, batch["text"]


def test_bad_configs_and_partitions_are_clear_errors(tmp_path, capsys):
    import pytest

    from data_pipeline.config import ConfigError, load_config
    from data_pipeline.splits import parse_partition

    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{type: synthetic}]\naudio: {sample_rte: 44100}\n")
    with pytest.raises(ConfigError, match="sample_rte"):
        load_config(bad)
    bad.write_text("sources: [{type: synthetic, specie: 3}]\n")
    assert main(["build", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown option(s) ['specie']" in capsys.readouterr().err
    bad.write_text("sources: [{type: nowhere}]\n")
    assert main(["build", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown source type 'nowhere'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="500XB"):
        resolve_config({"sources": [{"type": "synthetic"}], "shards": {"max_bytes": "500XB"}})
    assert resolve_config({"sources": [{"type": "synthetic"}], "shards": {"max_bytes": "2GB"}}).shards.max_bytes == 2e9
    assert parse_partition("3/16") == (3, 16)
    for text in ("0/16", "17/16", "3-16"):
        with pytest.raises(ValueError, match="partition"):
            parse_partition(text)
    assert main(["status", "--out", str(tmp_path / "nothing")]) == 2


def test_a_full_disk_or_an_unwritable_out_is_one_error_line_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    """--out through a regular file (NotADirectoryError) or in a folder the process may not write (PermissionError,
    from the fault point: tests run as root, where chmod stops nothing) is one error line, exit 2; a bad config
    leaves no --out folder (it used to leave one with an empty build.log); a full disk while a shard is written
    (ENOSPC from the fault point in the shard writer, then 'write to closed file' from tarfile.__del__ before) is one
    error line saying nothing was lost, exit 1, and the rerun ends with the samples of an uninterrupted build."""
    import gc

    from biolingual import faults

    raw = {
        "sources": [{"type": "synthetic", "species": 3, "clips_per_species": 3, "seconds": 1.0}],
        "audio": {"clip_seconds": 0.5},
        "shards": {"max_samples": 3},
        "download": {"concurrency": 1},
        "splits": {"valid": 0.0, "test": 0.0, "unseen_species": 0.0, "seed": 1},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setattr(faults, "_reached", faults.Counter())
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def run(out: Path) -> tuple[int, str]:
        code = main(["build", "--config", str(config), "--out", str(out), "--no-progress"])
        gc.collect()  # a tar stream left open would write to its closed file now
        return code, capsys.readouterr().err

    code, err = run(tmp_path / "a-file" / "out")
    assert code == 2 and err.startswith(f"error: cannot create the output folder '{tmp_path / 'a-file' / 'out'}'"), err
    monkeypatch.setenv(faults.FAIL_ENV, "pipeline.out=EACCES")
    code, err = run(tmp_path / "locked")
    assert (
        code == 2
        and err
        == f"error: cannot create the output folder '{tmp_path / 'locked'}' and its build.log: Permission denied\n"
    )
    monkeypatch.delenv(faults.FAIL_ENV)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{type: synthetic}]\naudio: {clip_seconds: -1}\n")
    assert main(["build", "--config", str(bad), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()

    out = tmp_path / "out"
    monkeypatch.setenv(faults.FAIL_ENV, "shards.write:5=ENOSPC")  # the first shard is written whole, the second is not
    code, err = run(out)
    assert code == 1, err
    assert (
        f"error: could not write '{out}/train-000001.tar.partial': No space left on device. Nothing was lost" in err
    ), err
    assert "run the same command again" in err and "Traceback" not in err and not unraisable, (err, unraisable)
    assert sorted(p.name for p in out.glob("*.tar*")) == ["train-000000.tar"]  # the half-written shard removed
    monkeypatch.delenv(faults.FAIL_ENV)
    code, err = run(out)
    assert code == 0, err
    assert read_samples(out).keys() == read_samples(_build(resolve_config(raw), tmp_path / "straight")).keys()
