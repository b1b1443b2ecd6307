"""BirdSet runner: the published on-disk schema (save_to_disk Arrow and parquet), BirdSet's windows, its metrics
against torchmetrics / scikit-learn / hand-worked cases, the three modes through the command, the cache, bad input."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from biolingual.metrics import (
    class_mean_average_precision,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_top1_accuracy,
)
from biolingual.model import BioLingual
from eval.birdset import main
from eval.birdset.data import class_names, read_split
from eval.birdset.fixture import CODES, TEST_WINDOWS, write_example_fixture
from eval.embedding_cache import EmbeddingCache
from eval.types import TaskDataError


@pytest.fixture(scope="module")
def birdset(tmp_path_factory):
    root = tmp_path_factory.mktemp("birdset")
    write_example_fixture(root)
    return root


# ---------------------------------------------------------------------------------------------- metrics


def test_hand_worked_metrics_and_a_class_without_positives():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.6, 0.3, 0.2], [0.1, 0.7, 0.9]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])  # class 2 never occurs; row 3 has no bird
    ap = multilabel_average_precision(scores, targets)
    assert ap[:2].tolist() == [1.0, 1.0] and np.isnan(ap[2])
    assert class_mean_average_precision(scores, targets) == 1.0  # the absent class is left out, not a 0
    assert multilabel_auroc(scores, targets, per_class=True).tolist() == [1.0, 1.0, 0.0]
    assert multilabel_auroc(scores, targets) == pytest.approx(2 / 3)  # BirdSet keeps it in AUROC's mean as 0
    assert multilabel_top1_accuracy(scores, targets) == 1.0  # the no-bird row is not counted
    # tied scores are one threshold: P@{0.5} = 1/2 at recall 1/2, P@{0.2} = 2/3 at recall 1
    assert multilabel_average_precision([[0.5], [0.5], [0.2]], [[1], [0], [1]])[0] == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3
    )
    assert multilabel_top1_accuracy([[0.7, 0.7], [0.1, 0.2]], [[0, 1], [0, 1]]) == 0.5  # a tie picks the lower index
    with pytest.raises(ValueError, match="no class has a positive"):
        class_mean_average_precision([[0.1, 0.2]], [[0, 0]])


def _birdset_top1(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """BirdSet's TopKAccuracy(topk=1) (birdset/modules/metrics/multilabel.py), no-call rows excluded."""
    top = preds.topk(1, dim=1).indices
    correct = targets.unsqueeze(1).expand(-1, 1, -1).gather(2, top.unsqueeze(-1)).any(dim=1)
    labelled = targets.sum(1) > 0
    return float(correct[labelled].sum() / labelled.sum())


def test_metrics_match_torchmetrics_as_birdset_calls_it_and_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score
    from torchmetrics.classification import MultilabelAUROC, MultilabelAveragePrecision

    rng = np.random.default_rng(0)
    probs = torch.sigmoid(torch.from_numpy(rng.normal(size=(400, 9)))).float()
    probs[:80, 0] = 0.5  # a block of tied scores
    probs = torch.round(probs * 50) / 50  # and ties everywhere
    targets = torch.from_numpy((rng.random((400, 9)) < 0.15).astype(np.int64))
    targets[:, 8] = 0  # a class without positives
    ours_ap = multilabel_average_precision(probs, targets)
    present = targets.sum(0) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about the absent class
        tm_ap = MultilabelAveragePrecision(num_labels=9, average="none", thresholds=None)(probs, targets)
        tm_auroc = MultilabelAUROC(num_labels=9, average="macro", thresholds=None)(probs, targets)
        tm_macro_present = MultilabelAveragePrecision(num_labels=8, average="macro")(probs[:, :8], targets[:, :8])
    # BirdSet's cmAP: torchmetrics' macro AP, whose NaN for an absent class (torchmetrics 1.2.0, BirdSet's pin) is
    # dropped from the mean; newer torchmetrics scores it 0, so compare over the classes present
    assert np.allclose(ours_ap[present.numpy()], tm_ap[present].double().numpy(), atol=1e-6)
    assert class_mean_average_precision(probs, targets) == pytest.approx(float(tm_ap[present].mean()), abs=1e-6)
    assert class_mean_average_precision(probs[:, :8], targets[:, :8]) == pytest.approx(
        float(tm_macro_present), abs=1e-6
    )
    assert multilabel_auroc(probs, targets) == pytest.approx(float(tm_auroc), abs=1e-6)
    assert multilabel_top1_accuracy(probs + torch.arange(9) * 1e-4, targets) == pytest.approx(
        _birdset_top1(probs + torch.arange(9) * 1e-4, targets), abs=1e-6
    )  # BirdSet's topk, with no tied maxima
    for c in range(8):  # and scikit-learn, class by class
        assert ours_ap[c] == pytest.approx(average_precision_score(targets[:, c], probs[:, c]), abs=1e-9)
        assert multilabel_auroc(probs, targets, per_class=True)[c] == pytest.approx(
            roc_auc_score(targets[:, c], probs[:, c]), abs=1e-9
        )


# ---------------------------------------------------------------------------------------------- reading


def test_reads_the_published_schema(birdset, tmp_path):
    folder = birdset / "HSN"
    classes = class_names(folder, "test_5s")
    assert classes == list(CODES)
    test = read_split(folder, "test_5s", classes, tmp_path)
    assert len(test.segments) == len(TEST_WINDOWS) and not test.problems
    assert all((s.start_s, s.end_s, s.length_s) == (0.0, 5.0, 5.0) for s in test.segments)
    expected = np.zeros((len(TEST_WINDOWS), len(CODES)))
    for i, species in enumerate(TEST_WINDOWS):
        expected[i, species] = 1
    assert (test.targets == expected).all()
    train = read_split(folder, "train", classes, tmp_path)
    # per recording the biggest event cluster, noise (-1) dropped: 3 windows, or 2 where a cluster-1 event is left out
    assert len(train.segments) == len(CODES) * (3 + 2 + 3)
    first = [s for s in train.segments if s.path.endswith("XC100000.ogg")]
    assert [(s.start_s, s.end_s) for s in first] == [(0.0, 5.0), (0.5, 5.5), (3.25, 8.25)]  # 5 s centred on each event
    assert len(read_split(folder, "train", classes, tmp_path, events_per_recording=1).segments) == 3 * len(CODES)


def _as_parquet(birdset, tmp_path):
    """The same config with test_5s as a parquet file (features in the schema metadata), one row's audio
    carried as bytes only, and one row whose audio is gone."""
    folder = tmp_path / "HSN"
    shutil.copytree(birdset / "HSN" / "train", folder / "train")
    with pa.memory_map(str(birdset / "HSN" / "test_5s" / "data-00000-of-00001.arrow")) as f:
        table = pa.ipc.open_stream(f).read_all()
    rows = table.to_pylist()
    data = open(rows[0]["filepath"], "rb").read()
    rows[0]["audio"], rows[0]["filepath"] = {"bytes": data, "path": "HSN_moved.ogg"}, "HSN_moved.ogg"
    rows[1]["audio"], rows[1]["filepath"] = {"bytes": None, "path": "/nowhere/gone.ogg"}, "/nowhere/gone.ogg"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), folder / "test_5s-00000-of-00001.parquet")
    return folder


def test_parquet_bytes_and_missing_audio(birdset, tmp_path):
    folder = _as_parquet(birdset, tmp_path)
    assert class_names(folder, "test_5s") == list(CODES)
    test = read_split(folder, "test_5s", list(CODES), tmp_path / "spill")
    assert len(test.segments) == len(TEST_WINDOWS) - 1 and test.rows[:2] == [0, 2]
    assert "row 1: audio file '/nowhere/gone.ogg' not found" in test.problems[0]
    spilled = test.segments[0].path
    assert (
        spilled.startswith(str(tmp_path / "spill"))
        and open(spilled, "rb").read()
        == open(birdset / "HSN" / "audio" / "test_5s" / "HSN_001_20150708_061805_000_005.ogg", "rb").read()
    )
    with pytest.raises(TaskDataError, match="split 'test' not found"):
        read_split(folder, "test", list(CODES), tmp_path)


# ---------------------------------------------------------------------------------------------- the command


def _run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_three_modes_through_the_command_and_the_cache(birdset, saved_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    common = [
        "--model",
        saved_model,
        "--data",
        birdset,
        "--task",
        "HSN",
        "--out",
        out,
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    code, _ = _run(capsys, *common, "--mode", "zero-shot", "--names", birdset / "ebird_names.json")
    assert code == 0
    zs = json.loads((out / "HSN" / "zero-shot.json").read_text())
    assert zs["prompts"][0] == "The sound of a Barred Owl" and not zs["codes_without_name"]
    assert zs["classes_without_positives"] == ["humwha"] and zs["per_class"]["humwha"]["ap"] is None
    assert zs["n_windows"] == 24 and zs["n_windows_without_bird"] == 4 and 0 <= zs["cmap"] <= 1

    code, _ = _run(capsys, *common, "--mode", "linear", "--epochs", "2", "--lrs", "1e-3", "--events-per-recording", "1")
    assert code == 0
    lin = json.loads((out / "HSN" / "linear.json").read_text())
    assert lin["n"]["train"] + lin["n"]["valid"] == 18 and lin["n"]["test"] == 24 and lin["epoch"] in (1, 2)
    assert lin["valid_cmap"] == max(h["valid"] for h in lin["history"])
    with EmbeddingCache(out / "embeddings.sqlite") as cache:
        cached = len(cache)
    assert cached == 24 + 18

    # a repeated run embeds nothing: every window comes from the cache
    def no_embedding(*a, **k):
        raise AssertionError("embedded again")

    monkeypatch.setattr(BioLingual, "embed_audio", no_embedding)
    code, _ = _run(
        capsys,
        *common,
        "--mode",
        "linear",
        "--epochs",
        "2",
        "--lrs",
        "1e-3",
        "--events-per-recording",
        "1",
        "--overwrite",
    )
    assert code == 0 and json.loads((out / "HSN" / "linear.json").read_text())["cmap"] == pytest.approx(lin["cmap"])
    monkeypatch.undo()

    code, _ = _run(
        capsys,
        *common,
        "--mode",
        "finetune",
        "--epochs",
        "1",
        "--lrs",
        "1e-4",
        "--events-per-recording",
        "1",
        "--train-batch-size",
        "8",
    )
    assert code == 0
    ft = json.loads((out / "HSN" / "finetune.json").read_text())
    assert ft["epoch"] == 1 and 0 <= ft["auroc"] <= 1
    table = (out / "results.md").read_text()
    assert all(f"| ours | {m} | HSN |" in table for m in ("zero-shot", "linear", "finetune"))
    assert "| BioLingual (BirdSet paper) | finetune | HSN | 0.330 | 0.790 | — |" in table
    assert (out / "birdset.png").stat().st_size > 0


def test_bad_input_exit_codes(birdset, saved_model, tmp_path, capsys):
    code, err = _run(capsys, "--model", saved_model, "--data", tmp_path / "missing", "--out", tmp_path / "o")
    assert code == 1 and "error: --data" in err
    code, _ = _run(capsys, "--model", saved_model, "--data", tmp_path, "--task", "NBP", "--out", tmp_path / "o")
    assert (
        code == 1 and "no 'test_5s' split" in json.loads((tmp_path / "o" / "failed-zero-shot.json").read_text())["NBP"]
    )
    folder = _as_parquet(birdset, tmp_path / "pq")
    code, err = _run(capsys, "--model", saved_model, "--data", folder, "--out", tmp_path / "o2", "--workers", "0")
    assert code == 2 and "1 row(s) skipped" in err
    result = json.loads((tmp_path / "o2" / "HSN" / "zero-shot.json").read_text())
    assert (
        result["n_skipped"] == 1 and "gone.ogg" in result["problems"][0] and result["codes_without_name"] == list(CODES)
    )


def test_zero_shot_restricted_to_the_species_of_a_place_and_season(birdset, saved_model, tmp_path, capsys):
    """`--species-list` keeps the eBird codes whose code, common or scientific name is on the list and drops the
    others from the classes and every window's targets; a window left with no listed label stays in as a window
    without a call (a negative for every class, out of top-1), counted; the list is written to OUT/species.csv."""
    (tmp_path / "site.txt").write_text("Barred Owl\nGavia immer\nLithobates catesbeianus\nAmerican Robin\n")
    out = tmp_path / "out"
    argv = ["--model", saved_model, "--data", birdset, "--out", out, "--workers", "0", "--device", "cpu"]
    argv += ["--names", birdset / "ebird_names.json", "--species-list", tmp_path / "site.txt"]
    code = main([str(a) for a in argv])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    line = "HSN: 3 of 6 classes on the species list; 3 classes off the list left out: sprpee, fiecri, humwha"
    assert line in printed.out and "5 windows left with no listed label" in printed.out
    zs = json.loads((out / "HSN" / "zero-shot.json").read_text())
    assert list(zs["per_class"]) == ["brdowl", "comloo", "amebul"]
    assert zs["prompts"] == [f"The sound of a {n}" for n in ("Barred Owl", "Common Loon", "American Bullfrog")]
    listed = zs["species_list"]
    assert listed["matched"] == {"brdowl": "Barred Owl", "comloo": "Gavia immer", "amebul": "Lithobates catesbeianus"}
    assert listed["classes_dropped"] == ["sprpee", "fiecri", "humwha"] and listed["samples_dropped"] == 0
    # windows of sprpee/fiecri only ([2], [4], [2, 4], [2], [4]) join the 4 windows without any call
    assert listed["samples_without_listed_label"] == 5
    assert zs["n_windows"] == 24 and zs["n_windows_without_bird"] == 4 + 5
    assert zs["cmap"] == pytest.approx(np.mean([c["ap"] for c in zs["per_class"].values()]))
    assert line in (out / "results.md").read_text()
    assert "Barred Owl" in (out / "species.csv").read_text()
    # a rerun with the same list keeps the result; with another list (or none) it is computed again, never the
    # earlier list's figures under the new list's name
    stamp = (out / "HSN" / "zero-shot.json").stat().st_mtime_ns
    assert main([str(a) for a in argv]) == 0 and (out / "HSN" / "zero-shot.json").stat().st_mtime_ns == stamp
    (tmp_path / "other.txt").write_text("Barred Owl\n")
    other = [str(a) for a in argv[:-1]] + [str(tmp_path / "other.txt")]
    assert main(other) == 0
    assert list(json.loads((out / "HSN" / "zero-shot.json").read_text())["per_class"]) == ["brdowl"]
    assert main([str(a) for a in argv[:-2]]) == 0
    assert len(json.loads((out / "HSN" / "zero-shot.json").read_text())["per_class"]) == 6
    capsys.readouterr()
    # the list filters a benchmark's classes for zero-shot only; the trained modes say so in one line
    code = main([str(a) for a in argv + ["--mode", "linear"]])
    err = capsys.readouterr().err
    assert code == 1 and "error: --species-list/--species-near" in err and "Traceback" not in err
