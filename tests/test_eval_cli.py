"""What every eval runner does with the obvious user mistakes: one ``error: ...`` line naming the option or
file and what to do, exit code 1, no traceback, and nothing heavy done first (exit codes: eval/runtime.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
        "retrieval": (
            retrieval.main,
            ["--model", model, "--shards", str(tmp_path / "no-{0..1}.tar"), "--out", str(out)],
        ),
        "beans": (
            beans.main,
            ["--model", model, "--beans-root", str(tmp_path / "no-beans"), "--tasks", "watkins", "--out", str(out)],
        ),
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


def test_the_installed_biolingual_eval_command_runs_the_benchmarks_from_any_folder(
    tmp_path, saved_model, clips, capsys
):
    """`python -m eval.zero_shot` outside the repository root said "No module named 'eval'": the installed
    `biolingual-eval RUNNER` runs each runner from anywhere (here a folder outside the checkout), an unknown runner
    is named with the list, and a runner's own mistakes come back as its exit status."""
    command = Path(sys.executable).with_name("biolingual-eval")
    data = tmp_path / "clips.csv"
    data.write_text(
        "path,label\n"
        + "".join(
            f"{clips[n]},{label}\n"
            for n, label in (("peeper_short.wav", "Spring Peeper"), ("owl_stereo.flac", "Barred Owl"))
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run([str(command), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    done = run(
        "zero_shot", "--data", str(data), "--model", str(saved_model), "--out", str(tmp_path / "zs"), "--device", "cpu"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "zs" / "metrics.json").read_text())["n"] == 2
    unknown = run("zero-shoot")
    assert (
        unknown.returncode == 2
        and unknown.stderr.startswith("error: no benchmark runner 'zero-shoot'")
        and "zero_shot" in unknown.stderr
    )
    # the same dispatcher in this process (python -m eval RUNNER): the list of runners, a runner's own exit status
    from eval.__main__ import main as dispatch

    assert dispatch(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("zero_shot", "retrieval", "beans", "beans_zero", "birdset", "probe"))
    assert (
        dispatch(
            [
                "beans",
                "--beans-root",
                str(tmp_path / "nowhere"),
                "--tasks",
                "watkins",
                "--model",
                str(saved_model),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith("error: ")
