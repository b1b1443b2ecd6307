"""What the `biolingual` commands tell the user about their inputs while they run: each skipped file once, progress
through a long recording, and the labels file named when it holds no labels."""

from __future__ import annotations

import logging
import re

import numpy as np
import soundfile as sf

from biolingual.cli import main


def _command_logging(monkeypatch) -> None:
    """The command's own logging (logging.basicConfig in main, warnings to stderr): under pytest the root logger
    holds pytest's handlers, and basicConfig adds none where there are some."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


def test_each_skipped_file_is_reported_once(saved_model, clips, tmp_path, capsys, monkeypatch):
    """embed, predict and index printed every skipped file twice on stderr: the library's warning, then the
    command's own line. embed and predict print it (embed_files returns it, no longer logging it too); index's
    warning names it as it is skipped, in a run that may take hours, and the command ends with the count."""
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF" + bytes(100))
    good, model = str(clips["peeper_short.wav"]), str(saved_model)
    _command_logging(monkeypatch)
    for argv in (
        ["embed", good, str(bad), "--model", model, "--out", str(tmp_path / "e.npy")],
        ["predict", good, str(bad), "--model", model, "--labels", "Owl", "Loon"],
        ["index", good, str(bad), "--model", model, "--out", str(tmp_path / "index")],
    ):
        assert main([*argv, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        named = [line for line in err.splitlines() if str(bad) in line]
        assert len(named) == 1 and (argv[0] != "index" or "; 1 skipped (named above)" in err), (argv[0], err)


def test_a_long_recording_shows_progress_in_windows_with_a_total(saved_model, tmp_path, capsys):
    """`biolingual embed` of one long file showed nothing until it was done (27 minutes for 10 hours): the bar
    counts the 10 s windows of every input, its total read from the files' headers."""
    path = tmp_path / "night.flac"  # past STREAM_SECONDS (120 s): read block by block, as a 10-hour file is
    sf.write(path, 0.01 * np.random.default_rng(0).standard_normal(125 * 8000).astype(np.float32), 8000)
    assert (
        main(["embed", str(path), "--model", str(saved_model), "--out", str(tmp_path / "e.npy"), "--device", "cpu"])
        == 0
    )
    err = capsys.readouterr().err
    assert re.search(r"embedding audio: +100%.*\| 13/13 \[.*window/s\]", err), err


def test_a_labels_file_without_labels_is_named(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("# species to look for\n\n")
    assert (
        main(["predict", str(tmp_path / "x.wav"), "--model", str(tmp_path / "no-model"), "--labels-file", str(labels)])
        == 1
    )
    assert capsys.readouterr().err == (
        f"error: labels file '{labels}' holds no labels (one label per line; blank lines "
        "and lines starting with # are left out)\n"
    )
