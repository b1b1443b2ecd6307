"""BEANS runner: the on-disk layouts, windowing, zero-shot / linear / fine-tuning modes, resume, bad input."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from biolingual.synthetic import invented_species, synth_pattern
from eval import beans
from eval.beans_data import read_split, window_targets
from eval.embedding_cache import EmbeddingCache
from eval.tasks import TASKS
from eval.types import TaskDataError

RATE = 16_000
CLASSES = ["Humpback_Whale", "Killer_Whale", "Walrus"]  # watkins labels, given separable synthetic calls
SPLITS = {"train": 4, "valid": 2, "test": 2}  # clips per class


def write_watkins(root: Path, per_class=SPLITS, seconds: float = 1.5) -> Path:
    """A watkins task in BEANS' layout: annotations.<split>.csv (unnamed index, path relative to the root)."""
    folder = root / "data" / "watkins"
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    patterns = list(invented_species(len(CLASSES), seed=3).values())
    for s, (split, n) in enumerate(per_class.items()):
        rows = []
        for c, label in enumerate(CLASSES):
            for i in range(n):
                name = f"wav/{split}_{c}_{i}.wav"
                sf.write(folder / name, synth_pattern(patterns[c], seconds, RATE, seed=100 * s + 10 * c + i), RATE)
                rows.append([f"data/watkins/{name}", label])
        with open(folder / f"annotations.{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", "path", "label"])
            w.writerows([[i, *r] for i, r in enumerate(rows)])
    return folder


def write_dcase(root: Path, chunks: int = 2, length: float = 5.0) -> Path:
    """A dcase task in BEANS' detection layout: <split>.jsonl, one chunk per line, spans local to the chunk."""
    folder = root / "data" / "dcase"
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    patterns = list(invented_species(2, seed=5).values())
    for split in ("train", "valid", "test"):
        with open(folder / f"{split}.jsonl", "w") as f:
            for k in range(chunks):
                audio = 0.01 * np.random.default_rng(k).standard_normal(int(length * RATE)).astype(np.float32)
                spans = [(0.5, 1.5, "AMRE", 0), (3.0, 4.5, "BBWA", 1)] if k % 2 == 0 else [(2.0, 3.0, "BBWA", 1)]
                for st, ed, _, c in spans:
                    call = synth_pattern(patterns[c], ed - st, RATE, seed=k)
                    audio[int(st * RATE) : int(st * RATE) + len(call)] += call
                name = f"wav/{split}_{k}.wav"
                sf.write(folder / name, audio, RATE)
                ann = [{"st": st, "ed": ed, "label": label} for st, ed, label, _ in spans]
                f.write(json.dumps({"path": f"data/dcase/{name}", "length": length, "annotations": ann}) + "\n")
    return folder


@pytest.fixture(scope="module")
def beans_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("beans")
    write_watkins(root)
    write_dcase(root)
    return root


def test_reads_classification_layout(beans_root):
    split = read_split(beans_root, TASKS["watkins"], "train")
    assert len(split.segments) == 12 and not split.problems
    assert sorted(set(split.targets.tolist())) == [
        TASKS["watkins"].labels.index(c) for c in sorted(CLASSES, key=TASKS["watkins"].labels.index)
    ]
    assert split.rows[0] == 2 and split.segments[0].length_s == 3  # clips cut / padded to watkins' 3 s
    # the data/ folder itself works as --beans-root too
    assert len(read_split(beans_root / "data", TASKS["watkins"], "test").segments) == 6


def test_window_labelling_matches_beans_rule():
    task = TASKS["dcase"]  # 2 s windows every 1 s
    ids = {label: i for i, label in enumerate(task.labels)}
    windows, y = window_targets(
        task,
        6.0,
        [
            {"st": 1.7, "ed": 2.1, "label": "AMRE"},
            {"st": 0.0, "ed": 6.0, "label": "Q"},
            {"st": 4.0, "ed": 4.0, "label": "GIG"},
        ],
        ids,
    )
    assert windows == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]  # int((6 - 2) / 1) + 1 windows
    amre, q, gig = ids["AMRE"], ids["Q"], ids["GIG"]
    # [1.7, 2.1]: overlap with [0,2] is 0.3/0.4 > 0.2, with [1,3] all of it, with [2,4] 0.1/0.4 = 0.25 > 0.2
    assert y[:, amre].tolist() == [1, 1, 1, 0, 0]
    assert y[:, q].tolist() == [1] * 5  # covers every window
    assert y[:, gig].sum() == 0  # zero-length annotations are skipped


def test_zero_shot_linear_and_resume(beans_root, saved_model, tmp_path, caplog):
    out = tmp_path / "out"
    common = ["--model", str(saved_model), "--beans-root", str(beans_root), "--out", str(out), "--workers", "0"]
    assert beans.main(common + ["--tasks", "watkins,dcase", "--mode", "zero-shot"]) == 0
    zs = json.loads((out / "watkins" / "zero-shot.json").read_text())
    assert zs["n"] == 6 and 0 <= zs["test"] <= 1 and zs["test"] == zs["top1"]
    det = json.loads((out / "dcase" / "zero-shot.json").read_text())
    assert det["n_windows"] == 8 and 0 <= det["test"] <= 1  # 2 chunks x 4 windows
    with EmbeddingCache(out / "embeddings.sqlite") as cache:
        cached = len(cache)
    assert cached == 6 + 8

    # linear probe: reuses the cached test embeddings, adds train and valid
    assert beans.main(common + ["--tasks", "watkins", "--mode", "linear", "--epochs", "30", "--lrs", "0.01,0.05"]) == 0
    lin = json.loads((out / "watkins" / "linear.json").read_text())
    assert lin["n"] == {"train": 12, "valid": 6, "test": 6}
    assert lin["lr"] in (0.01, 0.05) and 1 <= lin["epoch"] <= 30 and len(lin["history"]) == 60
    best = max(lin["history"], key=lambda h: h["valid"])
    assert lin["valid"] == best["valid"]
    with EmbeddingCache(out / "embeddings.sqlite") as cache:
        assert len(cache) == cached + 12 + 6

    table = (out / "results.md").read_text()
    assert "| ours | zero-shot |" in table and "| ours | linear |" in table
    assert "BioLingual (paper, Table 3)" in table and "0.894" in table and "0.475" in table
    # the sources a reader can look up, not a notes file outside the repository
    assert "arXiv 2308.04978 Table 3" in table and "notes" not in table

    # resume: a finished (task, mode) is skipped, not recomputed
    stamp = (out / "watkins" / "linear.json").stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO, logger="eval.beans")
    assert beans.main(common + ["--tasks", "watkins", "--mode", "linear", "--epochs", "30"]) == 0
    assert (out / "watkins" / "linear.json").stat().st_mtime_ns == stamp
    assert "already done" in caplog.text


def test_bad_input_is_named_and_the_run_goes_on(tmp_path, saved_model, caplog):
    root = tmp_path / "beans"
    folder = write_watkins(root, per_class={"train": 2, "valid": 1, "test": 1})
    test_csv = folder / "annotations.test.csv"
    lines = test_csv.read_text().splitlines()
    lines += [
        "90,data/watkins/wav/gone.wav,Walrus",
        "91,data/watkins/wav/test_0_0.wav,Narwhal",
        "92,data/watkins/wav/test_0_0.wav,Unicorn",
    ]
    test_csv.write_text("\n".join(lines) + "\n")
    write_dcase(root)
    (root / "data" / "dcase" / "valid.jsonl").write_text("")  # an empty split
    out = tmp_path / "out"
    code = beans.main(
        [
            "--model",
            str(saved_model),
            "--beans-root",
            str(root),
            "--out",
            str(out),
            "--tasks",
            "watkins,dcase,hiceas",
            "--mode",
            "linear",
            "--epochs",
            "2",
            "--workers",
            "0",
        ]
    )
    assert code == 1  # some tasks failed, the others ran
    result = json.loads((out / "watkins" / "linear.json").read_text())
    problems = "\n".join(result["problems"])
    assert f"'{test_csv}' row 5: audio file 'data/watkins/wav/gone.wav' not found" in problems
    assert f"'{test_csv}' row 7: label 'Unicorn' is not one of task 'watkins''s labels" in problems
    assert f"'{test_csv}' row 6: label 'Narwhal' does not occur in the training split" in problems
    assert result["n"]["test"] == 4  # 3 good rows + the Narwhal row (scored as BEANS does)
    failed = json.loads((out / "failed-linear.json").read_text())
    assert "valid.jsonl' has no usable example" in failed["dcase"]
    assert "folder 'hiceas' not found" in failed["hiceas"]
    with pytest.raises(TaskDataError, match="folder 'rfcx' not found"):
        read_split(root, TASKS["rfcx"], "test")


def test_skipped_rows_finish_with_exit_code_2(tmp_path, saved_model, capsys):
    """Every task ran but rows were skipped: results written, each skipped row named, exit code 2 (1 is
    kept for errors and failed tasks), also when the finished task is only read back on a re-run."""
    root = tmp_path / "beans"
    folder = write_watkins(root, per_class={"train": 1, "valid": 1, "test": 1})
    test_csv = folder / "annotations.test.csv"
    test_csv.write_text(test_csv.read_text() + "90,data/watkins/wav/gone.wav,Walrus\n")
    out = tmp_path / "out"
    argv = [
        "--model",
        str(saved_model),
        "--beans-root",
        str(root),
        "--out",
        str(out),
        "--tasks",
        "watkins",
        "--mode",
        "zero-shot",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert beans.main(argv) == 2
    result = json.loads((out / "watkins" / "zero-shot.json").read_text())
    assert result["n"] == 3 and result["n_skipped"] == 1
    assert result["problems"] == [f"'{test_csv}' row 5: audio file 'data/watkins/wav/gone.wav' not found; row skipped"]
    assert "1 row(s) skipped" in capsys.readouterr().err
    assert beans.main(argv) == 2  # resumed: nothing recomputed, the same results reported


def test_dcase_prompts_are_call_names_not_codes(beans_root):
    """The text tower knows "American Redstart" and "Hyena giggle", not AMRE and GIG (BioLingual's prompts)."""
    task = TASKS["dcase"]
    prompts = beans.task_prompts(task, read_split(beans_root, task, "test"))
    assert len(prompts) == task.num_labels == 18
    named = dict(zip(task.labels, prompts))
    assert named["AMRE"] == "American Redstart" and named["CALL"] == "Jackdaw call"
    assert named["GIG"] == "Hyena giggle" and named["CCMK"] == "Meerkat close call" and named["Q"] == "Other Animal"
    for code, prompt in named.items():
        assert code not in prompt.split(), (code, prompt)
