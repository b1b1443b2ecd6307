"""The `biolingual` command: predict and embed, through main() and as a real subprocess."""

import csv
import subprocess
import sys

import numpy as np
import pytest

from biolingual.cli import main

from .conftest import LABELS


def test_predict_prints_a_ranked_table_and_writes_csv(saved_model, clips, tmp_path, capsys):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# species\n" + "\n".join(LABELS[:4]) + "\n")
    out_csv = tmp_path / "pred.csv"
    paths = [str(p) for p in clips.values()]
    code = main(
        [
            "predict",
            *paths,
            "--model",
            str(saved_model),
            "--labels-file",
            str(labels_file),
            "--labels",
            "Humpback Whale",
            "--top-k",
            "3",
            "--csv",
            str(out_csv),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 3 * len(paths)
    assert {r["label"] for r in rows} <= set(LABELS[:4]) | {"Humpback Whale"}
    for path in paths:
        probs = [float(r["probability"]) for r in rows if r["file"] == path]
        assert probs == sorted(probs, reverse=True) and path in printed


def test_embed_writes_npy_with_row_order(saved_model, clips, tmp_path):
    out = tmp_path / "emb" / "emb.npy"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    paths = [str(p) for p in clips.values()]
    code = main(
        ["embed", paths[0], str(bad), *paths[1:], "--model", str(saved_model), "--out", str(out), "--device", "cpu"]
    )
    assert code == 2  # finished, but a file was skipped
    emb = np.load(out)
    assert emb.shape[0] == len(paths) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert out.with_suffix(".files.txt").read_text().split("\n")[:-1] == paths


def test_predict_needs_labels(saved_model, clips, capsys):
    assert main(["predict", str(next(iter(clips.values()))), "--model", str(saved_model)]) == 1
    assert "error: give labels with --labels" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_process(saved_model, clips):
    path = str(clips["cricket_48k.wav"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "biolingual",
            "predict",
            path,
            "--model",
            str(saved_model),
            "--labels",
            "Field Cricket",
            "Barred Owl",
            "--top-k",
            "1",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert path in result.stdout


def test_unknown_model_is_a_clear_error_not_a_traceback(clips, capsys):
    code = main(["embed", str(next(iter(clips.values()))), "--model", "./no/such/folder", "--out", "x.npy"])
    assert code == 1
    assert "no folder" in capsys.readouterr().err


def test_embed_out_without_npy_writes_exactly_that_file(saved_model, clips, tmp_path, capsys):
    out = tmp_path / "vectors.bin"  # np.save(path) would have written vectors.bin.npy
    code = main(
        ["embed", str(clips["peeper_short.wav"]), "--model", str(saved_model), "--out", str(out), "--device", "cpu"]
    )
    assert code == 0
    assert out.is_file() and not (tmp_path / "vectors.bin.npy").exists()
    assert f"wrote {out} " in capsys.readouterr().out
    assert np.load(out).shape[0] == 1


def test_labels_come_from_the_options_then_the_file_and_a_missing_file_is_named(tmp_path):
    import argparse

    from biolingual.cli_options import add_labels_args, read_labels
    from biolingual.errors import UsageError

    parser = argparse.ArgumentParser()
    add_labels_args(parser, "labels")
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# birds\nBarred Owl\n\nCommon Loon\n")
    args = parser.parse_args(["--labels", "Spring Peeper", "--labels-file", str(labels_file)])
    assert read_labels(args) == ["Spring Peeper", "Barred Owl", "Common Loon"]
    with pytest.raises(UsageError, match="labels file not found: '.*missing.txt'"):
        read_labels(parser.parse_args(["--labels-file", str(tmp_path / "missing.txt")]))
    with pytest.raises(UsageError, match="give labels with --labels"):
        read_labels(parser.parse_args([]))
    # through the command: one error line and exit 1, before any model is loaded
    from biolingual.cli import main

    assert (
        main(
            [
                "predict",
                str(labels_file),
                "--model",
                str(tmp_path / "no-model"),
                "--labels-file",
                str(tmp_path / "missing.txt"),
            ]
        )
        == 1
    )


def test_bad_top_k_templates_labels_and_queries_are_one_error_line(saved_model, clips, tmp_path, capsys):
    """--top-k below 1, a --template without exactly one '{}', a label given twice (in --labels, or in
    --labels and the file: the API's rule too), a blank label, and a blank search query are refused with
    an error line, never answered with a row or hits."""
    from biolingual.cli import main

    clip = str(clips["peeper_short.wav"])
    predict = ["predict", clip, "--model", str(saved_model), "--device", "cpu"]
    for k in ("0", "-2"):
        with pytest.raises(SystemExit) as exit_:
            main([*predict, "--labels", "Owl", "Loon", "--top-k", k])
        assert exit_.value.code == 2 and "--top-k" in capsys.readouterr().err
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("Loon\nOwl\n")
    for extra, message in (
        (["--labels", "Owl", "Loon", "--template", "{} and {}"], "template"),
        (["--labels", "Owl", "Loon", "--template", "A {name} calling"], "template"),
        (["--labels", "Owl", "Owl", "Loon"], "'Owl' is given more than once"),
        (["--labels", "Owl", "--labels-file", str(labels_file)], "'Owl' is given more than once"),
        (["--labels", "Owl", ""], "blank"),
    ):
        code = main([*predict, *extra])
        captured = capsys.readouterr()
        assert code == 1 and captured.out == "" and captured.err.startswith("error: ") and message in captured.err, (
            extra,
            captured,
        )
    index = tmp_path / "index"
    assert main(["index", clip, "--model", str(saved_model), "--out", str(index), "--device", "cpu"]) == 0
    for argv in (
        ["search", str(index), ""],
        ["search", str(index), "   "],
        ["search", str(index), "owl", " "],
        ["detect", str(index), "--labels", ""],
        ["detect", str(index), "--labels", "Owl", "  "],
        ["detect", str(index), "--labels", "Owl", "--template", "{} {}"],
    ):
        capsys.readouterr()
        code = main([*argv, "--csv", str(tmp_path / "hits.csv")])
        captured = capsys.readouterr()
        assert code == 1 and captured.err.startswith("error: ") and "Traceback" not in captured.err, (argv, captured)
        assert not (tmp_path / "hits.csv").exists()


def test_search_cli_no_longer_imports_the_biolingual_command():
    """The labels reader lives in biolingual.cli_options, so biolingual.search.cli does not import
    biolingual.cli (which imports it): no import circle."""
    code = "import sys, biolingual.search.cli; sys.exit(1 if 'biolingual.cli' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
