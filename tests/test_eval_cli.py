"""What every eval runner does with the obvious user mistakes: one ``error: ...`` line naming the option or
file and what to do, exit code 1, no traceback, and nothing heavy done first (exit codes: eval/runtime.py)."""
from __future__ import annotations

import pytest

from eval import beans, retrieval, zero_shot
from eval.probe.__main__ import main as probe_main

# cuda:99 is refused on every machine: with no CUDA ("no CUDA GPU"), and with a few GPUs ("torch sees N")
BAD_DEVICE = "cuda:99"


def _runners(tmp_path, out):
    """Each runner's argv with inputs that do not exist: a run that got past the first checks would fail
    on them with another message, so these only pass when the check comes first."""
    model, data = str(tmp_path / "no-model"), str(tmp_path / "no-data.csv")
    return {
        "zero_shot": (zero_shot.main, ["--model", model, "--data", data, "--out", str(out)]),
        "retrieval": (retrieval.main, ["--model", model, "--shards", str(tmp_path / "no-{0..1}.tar"), "--out", str(out)]),
        "beans": (beans.main, ["--model", model, "--beans-root", str(tmp_path / "no-beans"), "--tasks", "watkins",
                               "--out", str(out)]),
        "probe": (probe_main, ["--models", model, "--data", data, "--out", str(out)]),
    }


@pytest.mark.parametrize("runner", ["zero_shot", "retrieval", "beans", "probe"])
def test_a_device_this_machine_lacks_is_refused_first(runner, tmp_path, capsys):
    main, argv = _runners(tmp_path, tmp_path / "out")[runner]
    assert main(argv + ["--device", BAD_DEVICE]) == 1
    err = capsys.readouterr().err
    assert f"error: device '{BAD_DEVICE}' was asked for" in err and "--device cpu" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("runner", ["zero_shot", "retrieval", "beans", "probe"])
def test_an_out_that_is_a_file_is_refused_first(runner, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("not a folder\n")
    main, argv = _runners(tmp_path, out)[runner]
    assert main(argv + ["--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"error: --out '{out}' is a file; give a folder" in err and "Traceback" not in err
    assert out.read_text() == "not a folder\n"


def test_zero_shot_bad_data_and_labels_files(tmp_path, saved_model, capsys):
    common = ["--model", str(saved_model), "--out", str(tmp_path / "o"), "--device", "cpu"]
    missing = tmp_path / "nope.csv"
    assert zero_shot.main(common + ["--data", str(missing)]) == 1
    assert f"error: data file '{missing}' not found" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,species\nx.wav,Elk\n")
    assert zero_shot.main(common + ["--data", str(wrong)]) == 1
    assert "needs a header row with the columns path,label" in capsys.readouterr().err
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00path\x00\x80\x81")
    assert zero_shot.main(common + ["--data", str(binary)]) == 1
    assert f"error: '{binary}' is not a readable CSV file" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    good.write_text("path,label\nx.wav,Elk\n")
    labels = tmp_path / "labels.txt"
    assert zero_shot.main(common + ["--data", str(good), "--labels-file", str(labels)]) == 1
    err = capsys.readouterr().err
    assert f"error: --labels-file '{labels}' not found; give a text file with one label per line" in err
    assert "Traceback" not in err


def test_beans_bad_root_and_task_names(tmp_path, saved_model, capsys):
    common = ["--model", str(saved_model), "--out", str(tmp_path / "o"), "--device", "cpu"]
    root = tmp_path / "no-beans"
    assert beans.main(common + ["--beans-root", str(root), "--tasks", "watkins"]) == 1
    assert f"error: --beans-root '{root}' is not a folder" in capsys.readouterr().err
    assert beans.main(common + ["--beans-root", str(tmp_path), "--tasks", "watkins,birdsong"]) == 1
    assert "error: unknown BEANS task(s) ['birdsong']" in capsys.readouterr().err
