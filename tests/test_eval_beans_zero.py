"""eval.beans_zero: BEANS-Zero read from its published on-disk schema (Arrow save_to_disk and parquet), scored
as beans-zero's own code scores it, through the real runner with the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from eval.beans_zero.make_fixture import write_fixture
from eval.beans_zero.runner import main
from eval.beans_zero.scoring import PostProcessor, levenshtein, score_component
from eval.embedding_cache import EmbeddingCache


def test_levenshtein_and_snapping():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("owl", "owl") == 0
    classify = PostProcessor({"Walrus", "Killer Whale"}, "classification")
    # a typo snaps to the nearest label; classification always snaps, however far
    assert classify(["Walrrus", "Killer Whale<|end_of_text|> and more", "zzzzzzzzzzzzzzzzzz"]) == [
        "Walrus",
        "Killer Whale",
        "Killer Whale",
    ]
    detect = PostProcessor({"Blue Jay", "Blue Jay, Wood Thrush"}, "detection")
    # detection snaps each comma-separated part; a part more than 5 edits from every output becomes "None",
    # and a class that never occurs alone among the true outputs cannot be predicted alone (beans-zero's quirk)
    assert detect(["Blue Jya, zzzzzzzzzzzz", "Wood Thrush"]) == ["Blue Jay, None", "None"]


def test_classification_scores_hand_worked():
    truth = ["Beluga, White Whale", "Walrus", "Walrus", "Killer Whale", "Killer Whale", "Killer Whale"]
    raw = ["Beluga, White Whale", "Walrrus", "Killer Whale", "Killer Whale", "Walrus", "Killer Whal"]
    snapped = ["Beluga, White Whale", "Walrus", "Killer Whale", "Killer Whale", "Walrus", "Killer Whale"]
    got = score_component("classification", raw, truth)
    assert got["Accuracy"] == pytest.approx(4 / 6)
    # the Beluga is right for Accuracy but not for Top-1, which splits the label at its comma
    assert got["Top-1 Accuracy"] == pytest.approx(3 / 6)
    for name, fn in (("Precision", precision_score), ("Recall", recall_score), ("F1 Score", f1_score)):
        assert got[name] == pytest.approx(fn(truth, snapped, average="weighted", zero_division=0))


def test_detection_scores_hand_worked():
    truth = ["Blue Jay", "Blue Jay, Wood Thrush", "None", "American Crow", "Wood Thrush"]
    raw = ["Blue Jya", "Wood Thrush", "Blue Jay", "zzzzzzzzzzzzzzz", "Wood Thrush"]
    got = score_component("detection", raw, truth)
    # classes (sorted): American Crow (never predicted), Blue Jay, Wood Thrush. AP per class over 0/1 scores in
    # window order for ties: Crow 1/4 (its one positive ranks 4th), Jay (1 + 2/3) / 2, Thrush 1
    assert got["mAP"] == pytest.approx((0.25 + (1 + 2 / 3) / 2 + 1) / 3)
    # per class (precision, recall): Crow (0, 0), Jay (1/2, 1/2), Thrush (1, 1); plain means
    assert (
        got["Precision"] == pytest.approx(0.5)
        and got["Recall"] == pytest.approx(0.5)
        and got["F1"] == pytest.approx(0.5)
    )


def _stable_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision over windows sorted by score, ties in window order (numpy, independent of the runner)."""
    order = np.argsort(-scores, kind="stable")
    hits = truth[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(hits.sum(), 1))


def _check_against_independent(out, component: str, task: str):
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["dataset_name"] == component]
    pred, truth = [r["prediction"] for r in rows], [r["label"] for r in rows]
    metrics = json.loads((out / f"{component}.json").read_text())["metrics"]
    if task == "classification":
        assert set(pred) <= set(truth)  # CLAP answers with the component's own labels: nothing to snap
        assert metrics["Accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-12)
        assert metrics["F1 Score"] == pytest.approx(
            f1_score(truth, pred, average="weighted", zero_division=0), abs=1e-12
        )
        return
    classes = sorted({p.strip() for t in truth if t != "None" for p in t.split(",")})

    def hot(texts):
        return np.array([[c in [p.strip() for p in t.split(",")] for c in classes] for t in texts], dtype=float)

    y, p = hot(truth), hot(pred)
    assert len(rows) <= 16  # torch's sort keeps ties in order up to 16 windows, so a stable sort is the reference
    assert metrics["mAP"] == pytest.approx(
        np.mean([_stable_ap(p[:, c], y[:, c]) for c in range(len(classes))]), abs=1e-6
    )
    tp, true = (p * y).sum(0), y.sum(0)
    recall = np.where(true > 0, tp / np.maximum(true, 1), 0)
    assert metrics["Recall"] == pytest.approx(recall.mean(), abs=1e-12)


def test_runner_on_save_to_disk_then_repeated_run_embeds_nothing(tmp_path, saved_model):
    data = write_fixture(tmp_path / "beans_zero", "save_to_disk")
    out = tmp_path / "out"
    assert main(["--model", str(saved_model), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["components"]) == {"unseen-species-cmn", "unseen-species-sci", "enabirds"}
    assert "captioning" in summary["out_of_scope"] and "captioning" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 0
    first = {c: json.loads((out / f"{c}.json").read_text()) for c in summary["components"]}
    assert first["unseen-species-cmn"]["n"] == 12 and first["enabirds"]["n"] == 12
    assert first["unseen-species-sci"]["templates"] == ["The sound of {}"]  # scientific names get their own template
    for component, task in (("unseen-species-cmn", "classification"), ("enabirds", "detection")):
        _check_against_independent(out, component, task)
    with EmbeddingCache(out / "embeddings.sqlite") as cache:
        stored = len(cache)
    assert stored == 30

    # again, with other prompts and another detection rule: every embedding is read back, none computed
    assert (
        main(["--model", str(saved_model), "--data", str(data), "--out", str(out), "--ensemble", "--threshold", "0.3"])
        == 0
    )
    again = {c: json.loads((out / f"{c}.json").read_text()) for c in first}
    assert all(r["embedded_now"] == 0 for r in again.values())
    assert len(again["unseen-species-cmn"]["templates"]) > 1
    with EmbeddingCache(out / "embeddings.sqlite") as cache:
        assert len(cache) == stored


def test_parquet_copy_gives_the_same_answers_and_bad_examples_are_skipped(tmp_path, saved_model, capsys):
    arrow_out, parquet_out = tmp_path / "a", tmp_path / "p"
    args = ["--model", str(saved_model), "--components", "unseen-species-cmn"]
    data = write_fixture(tmp_path / "disk", "save_to_disk")
    assert main([*args, "--data", str(data), "--out", str(arrow_out), "--max-examples", "6"]) == 0
    bad = write_fixture(tmp_path / "parquet", "parquet", corrupt=True)
    assert sorted(p.name for p in bad.iterdir()) == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    # the first 7 examples of the component: 6 good ones and one whose audio holds NaN; the one without a
    # sample rate is dropped when the files are read
    assert main([*args, "--data", str(bad), "--out", str(parquet_out), "--max-examples", "7"]) == 2
    assert "2 row(s) skipped" in capsys.readouterr().err
    result = json.loads((parquet_out / "unseen-species-cmn.json").read_text())
    assert result["n"] == 6 and result["n_skipped"] == 1 and "NaN" in result["problems"][0]
    unreadable = json.loads((parquet_out / "unreadable_rows.json").read_text())["problems"]
    assert len(unreadable) == 1 and "sample_rate" in unreadable[0] and "row 9" in unreadable[0]

    def by_id(out):
        return {
            json.loads(x)["id"]: json.loads(x)["prediction"]
            for x in (out / "predictions.jsonl").read_text().splitlines()
        }

    assert by_id(parquet_out) == by_id(arrow_out)  # same examples, same model: the format changes nothing
    assert (
        json.loads((parquet_out / "unseen-species-cmn.json").read_text())["metrics"]
        == json.loads((arrow_out / "unseen-species-cmn.json").read_text())["metrics"]
    )


def test_mistakes_are_one_error_line(tmp_path, saved_model, capsys):
    data = write_fixture(tmp_path / "d", "save_to_disk")
    assert main(["--model", str(saved_model), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(["--model", str(saved_model), "--data", str(data), "--out", str(tmp_path / "o"), "--components", "esc50"])
        == 1
    )
    assert "not in the data" in capsys.readouterr().err
    assert (
        main(
            [
                "--model",
                str(saved_model),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "o"),
                "--components",
                "captioning",
            ]
        )
        == 1
    )
    assert "no classification or detection component" in capsys.readouterr().err


def test_species_components_restricted_to_the_species_of_a_place_and_season(tmp_path, saved_model, capsys):
    """`--species-list` keeps the classes of the species-classification components that are on the list (by
    common or scientific name) and leaves out the examples of the others, counted; the metrics are over what
    remains; detection (enabirds) is not filtered and says so; the list is written to OUT/species.csv."""
    data = write_fixture(tmp_path / "beans_zero", "save_to_disk")
    # a list as OUT/species.csv saves one: the bullfrog is listed by its scientific name only (no English one)
    rows = [
        "Barred Owl,Strix varia,12",
        "Common Loon,Gavia immer,7",
        "Lithobates catesbeianus,,5",
        "American Robin,,30",
    ]
    (tmp_path / "site.csv").write_text("\n".join(["name,scientific_name,gbif_records", *rows]) + "\n")
    out = tmp_path / "out"
    argv = ["--model", str(saved_model), "--data", str(data), "--out", str(out), "--device", "cpu", "--workers", "0"]
    assert main([*argv, "--species-list", str(tmp_path / "site.csv")]) == 0
    printed = capsys.readouterr().out
    line = (
        "unseen-species-cmn: 2 of 6 classes on the species list; 4 classes (8 examples) off the list left out: "
        "American Bullfrog, Field Cricket, Humpback Whale, Spring Peeper"
    )
    assert line in printed and line in (out / "results.md").read_text()
    cmn = json.loads((out / "unseen-species-cmn.json").read_text())
    assert cmn["n"] == 4 and cmn["n_labels"] == 2
    assert cmn["species_list"]["matched"] == {"Barred Owl": "Barred Owl", "Common Loon": "Common Loon"}
    sci = json.loads((out / "unseen-species-sci.json").read_text())
    assert sci["n"] == 3 and sci["species_list"]["classes_dropped"] == [
        "Gryllus pennsylvanicus",
        "Megaptera novaeangliae",
        "Pseudacris crucifer",
    ]
    assert sci["species_list"]["matched"]["Gavia immer"] == "Common Loon"
    _check_against_independent(out, "unseen-species-cmn", "classification")  # the metrics over what remains
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows if r["dataset_name"] == "unseen-species-cmn"} == set(
        cmn["species_list"]["matched"]
    )
    detection = json.loads((out / "enabirds.json").read_text())
    assert detection["n"] == 12 and "species_list" not in detection
    assert "not filtered (not species classification): enabirds" in printed
    assert "Barred Owl" in (out / "species.csv").read_text()
