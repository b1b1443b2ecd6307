"""Distinct files of a local folder are distinct samples: ids keep the extension and the folder, keys that
sanitizing would merge get a stable hash suffix, and no record stays `staged` forever (also in a dataset an
older build left with records stuck there)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import soundfile as sf

from biolingual.synthetic import invented_species, synth_pattern
from data_pipeline.__main__ import main
from data_pipeline.build import build
from data_pipeline.config import resolve_config
from data_pipeline.record import Record
from data_pipeline.splits import assign_split
from tests.test_pipeline_build import read_samples

# pairs that the old ids/keys merged: extension dropped, non-ASCII and '.' -> '_', '/' -> '_'
NAMES = ["x.wav", "x.flac", "a ü.wav", "a ä.wav", "b.c.wav", "b_c.wav", "sub/e.wav", "sub_e.wav", "d.wav"]


def _folder(tmp_path, names):
    folder = tmp_path / "rec"
    ((_, pattern),) = invented_species(1, seed=5).items()
    for i, name in enumerate(names):  # under a species folder: the species of files the CSV does not list
        path = folder / "Marsh Whistler" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth_pattern(pattern, 1.0, 16000, seed=i), 16000)
    return folder


def _config(folder):
    return resolve_config(
        {
            "sources": [{"type": "local", "path": str(folder), "license": "cc-by"}],
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
        }
    )


def test_every_file_of_a_local_folder_becomes_its_own_sample(tmp_path, capsys):
    folder = _folder(tmp_path, NAMES)
    summary = build(_config(folder), tmp_path / "out", progress=False)
    samples = read_samples(tmp_path / "out")  # asserts no key twice
    assert len(samples) == len(NAMES)  # the old ids and keys made 9 files 5 samples, 2 records stuck `staged`
    assert sorted(m["source_id"] for _, m in samples.values()) == sorted(f"Marsh Whistler/{n}" for n in NAMES)
    assert {(st, n) for _, st, n in summary["stages"]} == {("written", len(NAMES))}
    assert all(key.isascii() and "." not in key for key in samples)
    assert "local_Marsh_Whistler_d_wav-" in " ".join(samples)  # readable: the path, then the hash
    capsys.readouterr()
    assert main(["status", "--out", str(tmp_path / "out")]) == 0
    assert f"| local | 0 | 0 | {len(NAMES)} |" in capsys.readouterr().out


def test_keys_are_unique_and_unchanged_for_ids_that_were_already_safe():
    assert Record("xeno-canto", "694038").key == "xc_694038"
    assert Record("inaturalist", "123-456").key == "inat_123-456"
    tricky = ["a.b", "a_b", "a/b", "a b", "aü", "aä", "x", "x-c1", "x-c2", "x-0123456789", "x.-c1"]
    keys = [Record("local", sid).key for sid in tricky]
    clips = [f"{k}-c{j}" for k in keys for j in range(1, 4)]  # the build's keys for further clips
    assert len(set(keys + clips)) == len(keys) + len(clips)
    assert Record("local", "a.b").key == Record("local", "a.b").key  # stable: a hash, not a counter


def test_records_an_older_build_left_staged_forever_are_redone(tmp_path):
    """The old scheme let 'a ü' and 'a ä' share the key local_a__: the second's samples replaced the first's,
    which stayed `staged` with no sample. Resuming such a dataset with the new code must finish it."""
    folder = _folder(tmp_path, ["d.wav"])
    stuck_file = _folder(tmp_path / "old", ["a ü.wav"]) / "Marsh Whistler" / "a ü.wav"  # not in the listed folder
    out = tmp_path / "out"
    config = _config(folder)
    build(config, out, progress=False)
    before = read_samples(out)
    # the stuck record as the old code left it: its old-style id, staged, no samples
    stuck = Record(
        "local",
        "a ü",
        "Stuck Bird",
        audio_url=stuck_file.as_uri(),
        license="cc-by",
        extra={"path": str(stuck_file), "csv": ""},
    )
    db = sqlite3.connect(out / "manifest.sqlite")
    with db:
        db.execute(
            "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                stuck.uid,
                "local_a__",
                "local",
                stuck.audio_url,
                stuck.species,
                assign_split(stuck.uid, stuck.species, 0, 0, 0),
                1,
                "staged",
                "",
                stuck.to_json(),
                0.0,
            ),
        )
    db.close()
    build(config, out, progress=False)
    after = read_samples(out)
    assert {k: v for k, v in after.items() if k in before} == before  # what was written is untouched
    (new,) = set(after) - set(before)
    assert new.startswith("local_a__-") and after[new][1]["source_id"] == "a ü"
    db = sqlite3.connect(out / "manifest.sqlite")
    assert db.execute("SELECT stage FROM records WHERE uid=?", (stuck.uid,)).fetchone() == ("written",)
    assert db.execute("SELECT COUNT(*) FROM records WHERE stage='staged'").fetchone() == (0,)
    db.close()


def _as_a_user_file_modes_bind() -> list[str]:
    """The prefix that runs a command as a user whom file modes bind: none for an ordinary user; for root
    (which reads any file whatever its mode: tests in containers run as root) setpriv, dropping the two
    capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so that opening a mode-000 file or
    listing a mode-000 folder fails with EACCES in the kernel, as it does for everyone else."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--inh-caps", caps, "--bounding-set", caps, "--"]


def test_unreadable_files_are_retried_and_unreadable_folders_reported(tmp_path, capsys):
    """A file the build may not read is `failed` (retried by the next run), not `rejected` for ever; a
    sub-folder it may not list is named on stderr and the build exits 1, instead of leaving its files out
    in silence. Once both are readable, a rerun writes them all."""
    folder = _folder(tmp_path, ["a.wav", "b.wav", "c.wav"])
    ((_, pattern),) = invented_species(1, seed=6).items()
    locked = folder / "Locked Wren"
    locked.mkdir()
    sf.write(locked / "d.wav", synth_pattern(pattern, 1.0, 16000, seed=9), 16000)
    config, out = tmp_path / "c.yaml", tmp_path / "out"
    config.write_text(
        json.dumps(
            {
                "sources": [{"type": "local", "path": str(folder), "license": "cc-by"}],
                "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            }
        )
    )
    unreadable = folder / "Marsh Whistler" / "b.wav"
    os.chmod(unreadable, 0)
    os.chmod(locked, 0)
    try:
        run = subprocess.run(
            [
                *_as_a_user_file_modes_bind(),
                sys.executable,
                "-m",
                "data_pipeline",
                "build",
                "--config",
                str(config),
                "--out",
                str(out),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.chmod(unreadable, 0o644)
        os.chmod(locked, 0o755)
    assert run.returncode == 1, run.stderr
    assert f"cannot read the folder '{locked}'" in run.stderr and "Permission denied" in run.stderr, run.stderr
    assert "1 record failed" in run.stderr and "Traceback" not in run.stderr, run.stderr
    db = sqlite3.connect(out / "manifest.sqlite")
    stages = dict(db.execute("SELECT uid, stage || ': ' || reason FROM records").fetchall())
    db.close()
    assert (
        stages["local:Marsh Whistler/b.wav"].startswith("failed: ")
        and "Permission denied" in stages["local:Marsh Whistler/b.wav"]
    )
    assert stages["local:Marsh Whistler/a.wav"] == stages["local:Marsh Whistler/c.wav"] == "written: "
    assert "local:Locked Wren/d.wav" not in stages
    capsys.readouterr()
    assert main(["build", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert sorted(m["source_id"] for _, m in read_samples(out).values()) == [
        "Locked Wren/d.wav",
        "Marsh Whistler/a.wav",
        "Marsh Whistler/b.wav",
        "Marsh Whistler/c.wav",
    ]
