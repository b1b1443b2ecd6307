"""One build per output folder (or per --partition part of it), a lock that dies with its holder, and a
clear error for a manifest SQLite cannot read. Races are set up with a first build held at a fault point
(BIOLINGUAL_PAUSE_AT) while the second starts: no sleeps."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from biolingual.faults import ENV, PAUSE_ENV
from data_pipeline.__main__ import main
from data_pipeline.build import build
from data_pipeline.config import resolve_config
from tests.test_pipeline_build import read_samples

RAW = {
    "sources": [{"type": "synthetic", "species": 4, "clips_per_species": 4, "seconds": 1.0}],
    "audio": {"clip_seconds": 0.5},
    "shards": {"max_samples": 3},
    "download": {"concurrency": 2},
    "splits": {"valid": 0.2, "test": 0.2, "unseen_species": 0.2, "seed": 1},
}


def _config(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(RAW))
    return path


def _child(out: Path, partition, pause: str | None, kill: str | None) -> None:
    # forked (no re-import): the env only changes in the child, which pauses or dies at its point
    os.environ.pop(ENV, None)
    if pause:
        os.environ[PAUSE_ENV] = pause
    if kill:
        os.environ[ENV] = kill
    build(resolve_config(RAW), out, partition, progress=False)


def _held(out: Path, gate: Path, point: str, partition=(1, 1)):
    """A build of ``out`` in another process, held at ``point`` (lock taken, work half done) until ``gate`` exists."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(out, partition, f"{point}={gate}", None))
    proc.start()
    paused = Path(f"{gate}.paused")
    deadline = time.monotonic() + 120
    while not paused.exists():  # waits on the file the child writes at the point (not a timed race)
        assert proc.is_alive(), f"the first build ended (exit {proc.exitcode}) without reaching {point}"
        assert time.monotonic() < deadline, f"the first build never reached {point}"
        time.sleep(0.02)
    assert int(paused.read_text()) == proc.pid
    return proc


def _release(proc, gate: Path) -> int:
    gate.touch()
    proc.join(timeout=120)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return proc.exitcode


def test_second_build_of_a_folder_is_refused_naming_the_first_which_finishes_whole(tmp_path, capsys):
    config = _config(tmp_path)
    expected = read_samples(_built(tmp_path / "ref"))
    out, gate = tmp_path / "out", tmp_path / "go"
    first = _held(out, gate, "build.shard_renamed", (1, 1))  # a shard written, more to come
    try:
        capsys.readouterr()
        assert main(["build", "--config", str(config), "--out", str(out), "--no-progress"]) == 3
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"pid {first.pid} " in err and "Traceback" not in err
        assert "--partition" in err and "build.lock" in err
        # a partition run cannot slip in beside a whole build either
        assert main(["build", "--config", str(config), "--out", str(out), "--partition", "1/2", "--no-progress"]) == 3
        assert f"pid {first.pid} " in capsys.readouterr().err
        assert main(["status", "--out", str(out)]) == 0  # status reads while the build runs
    finally:
        assert _release(first, gate) == 0
    got = read_samples(out)
    assert sorted(got) == sorted(expected) and all(got[k] == expected[k] for k in expected)
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 0
    assert f"| synthetic | 0 | 0 | {len({m['source_id'] for _, m in expected.values()})} |" in capsys.readouterr().out


def _built(out: Path) -> Path:
    build(resolve_config(RAW), out, progress=False)
    return out


def test_partition_runs_share_a_folder_but_not_a_part(tmp_path, capsys):
    config = _config(tmp_path)
    expected = read_samples(_built(tmp_path / "ref"))
    out, gate = tmp_path / "parts", tmp_path / "go"
    first = _held(out, gate, "build.record_staged", (1, 2))
    try:
        args = ["build", "--config", str(config), "--out", str(out), "--no-progress", "--partition"]
        assert main([*args, "2/2"]) == 0  # the other part runs beside it
        capsys.readouterr()
        assert main([*args, "1/2"]) == 3  # the same part does not
        err = capsys.readouterr().err
        assert f"pid {first.pid} " in err and "part 1/2" in err and "build-1-of-2.lock" in err
        assert main(["build", "--config", str(config), "--out", str(out), "--no-progress"]) == 3  # nor a whole build
        assert f"pid {first.pid} " in capsys.readouterr().err
    finally:
        assert _release(first, gate) == 0
    assert sorted(read_samples(out)) == sorted(expected)
    # a folder built in parts is not resumed whole (shard names would collide)
    assert main(["build", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    assert "was built with --partition I/2" in capsys.readouterr().err


def test_a_build_killed_while_holding_the_lock_does_not_block_the_next(tmp_path):
    out = tmp_path / "out"
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(out, (1, 1), None, "build.shard_written"))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL
    assert (out / "build.lock").read_text().startswith(f"pid {proc.pid} ")  # the file stays, the lock does not
    assert build(resolve_config(RAW), out, progress=False)["stages"]
    assert sorted(read_samples(out)) == sorted(read_samples(_built(tmp_path / "ref")))


def test_corrupt_manifest_is_an_error_naming_the_file_and_what_to_do(tmp_path, capsys):
    config = _config(tmp_path)
    out = _built(tmp_path / "out")
    manifest = out / "manifest.sqlite"
    for damage in (b"not a database at all" * 10, manifest.read_bytes()[: manifest.stat().st_size // 2]):
        manifest.write_bytes(damage)
        capsys.readouterr()
        assert main(["status", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: '{manifest}' is not a readable build manifest") and "Traceback" not in err
        assert "mv " in err and "build again" in err
        assert main(["build", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
        assert capsys.readouterr().err.startswith(f"error: '{manifest}' is not a readable build manifest")


def test_a_shard_that_is_not_what_was_committed_is_redone(tmp_path):
    """What two builds before the lock left (issue 14): a truncated shard the manifest counts as written. The
    rerun sees its size differ from the committed one and redoes its samples, under the same shard name."""
    out = _built(tmp_path / "out")
    expected = read_samples(out)
    names = sorted(p.name for p in out.glob("*.tar"))
    victim = out / "unseen-000001.tar"  # a middle one: the next shard of its split must not take another's name
    os.truncate(victim, victim.stat().st_size // 2)
    build(resolve_config(RAW), out, progress=False)
    got = read_samples(out)  # asserts no key twice
    assert sorted(got) == sorted(expected) and all(got[k] == expected[k] for k in expected)
    assert sorted(p.name for p in out.glob("*.tar")) == names
    assert not [p for p in (out / ".staging").rglob("*") if p.is_file()]
