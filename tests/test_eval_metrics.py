"""Evaluation metrics against independent definitions: scikit-learn, BEANS' own oracle values, hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, recall_score

from biolingual.metrics import detection_average_precision, detection_map
from eval.retrieval import evaluate as retrieval_evaluate
from eval.retrieval import relevance_key
from eval.zero_shot import classification_results


def test_detection_map_matches_beans_oracle_values():
    # earthspecies/beans tests/test_metrics.py: tied scores keep window order
    assert detection_average_precision([0, 1, 0.5, 0.5], [0, 1, 0, 1])[0] == pytest.approx((1 + 2 / 3) / 2)
    scores = np.array([[0.1, 0.2, 0.3, 4], [0, 1, 0.5, 0.5]]).T
    targets = np.array([[0, 1, 0, 1], [0, 1, 0, 1]]).T
    assert detection_map(scores, targets) == pytest.approx((1 + 2 / 3) / 2)


def test_detection_map_matches_sklearn_and_counts_empty_classes_as_zero():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((200, 5))  # continuous: no ties
    targets = (rng.random((200, 5)) < 0.2).astype(int)
    targets[:, 4] = 0  # a class with no positive window in the test set
    ap = detection_average_precision(torch.tensor(scores), torch.tensor(targets))
    for c in range(4):
        assert ap[c] == pytest.approx(average_precision_score(targets[:, c], scores[:, c]))
    assert ap[4] == 0
    assert detection_map(scores, targets) == pytest.approx(sum(ap[:4]) / 5)  # pulled down by the empty class
    with pytest.raises(ValueError, match="0 or 1"):
        detection_map(scores, targets * 2)


def test_classification_results_against_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 300)
    scores = torch.tensor(rng.standard_normal((300, 6)) + 1.5 * np.eye(6)[y])
    r = classification_results(y, scores, [f"c{i}" for i in range(6)])
    pred = scores.argmax(1).numpy()
    assert r["uar"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert r["top1"] == pytest.approx((pred == y).mean())
    rank = (scores > scores[np.arange(300), y][:, None]).sum(1).numpy()
    assert r["top5"] == pytest.approx((rank < 5).mean())
    per_class = recall_score(y, pred, average=None)
    assert [c["recall"] for c in r["per_class"]] == pytest.approx(per_class.tolist())
    assert sum(c["n"] for c in r["per_class"]) == 300


def test_retrieval_hand_computed_with_duplicate_captions():
    # 4 pairs; captions 0 and 2 are the same species once the template prefix is stripped
    captions = ["The sound of a Barred Owl", "The sound of an Elk", "Barred Owl", "The sound of a Loon"]
    assert [relevance_key(c) for c in captions] == ["Barred Owl", "Elk", "Barred Owl", "Loon"]
    e = torch.eye(4)
    audio = e[[0, 1, 2, 3]]
    # text i sits next to audio rows as below: text 0 is closest to audio 2, then audio 0
    text = torch.nn.functional.normalize(
        torch.stack([e[2] + 0.5 * e[0], e[1] + 0.2 * e[3], e[3] + 0.1 * e[2], e[3]]), dim=1
    )
    r = retrieval_evaluate(audio, text, captions)
    cap, strict = r["caption"], r["strict"]
    # text->audio rankings: t0 -> [a2, a0, ...]; t1 -> [a1, a3, ...]; t2 -> [a3, a2, ...]; t3 -> [a3, ...]
    # caption relevance: t0 rel {a0, a2}: ranks 1, 2 -> AP = (1 + 1) / 2 = 1; t1 rel {a1}: AP 1;
    # t2 rel {a0, a2}: a2 at rank 2, a0 at rank 3 or 4 (tied 0 scores: index order, a0 rank 3)
    #    -> AP = (1/2 + 2/3) / 2; t3 rel {a3}: rank 1 -> 1
    assert cap["text_to_audio/R@1"] == pytest.approx(3 / 4)
    assert cap["text_to_audio/mAP@10"] == pytest.approx((1 + 1 + (1 / 2 + 2 / 3) / 2 + 1) / 4)
    assert cap["text_to_audio/P@1"] == pytest.approx(3 / 4)
    # strict: t0's pair a0 is at rank 2 -> 1/2; t2's pair a2 at rank 2 -> 1/2
    assert strict["text_to_audio/R@1"] == pytest.approx(2 / 4)
    assert strict["text_to_audio/mAP@10"] == pytest.approx((1 / 2 + 1 + 1 / 2 + 1) / 4)
    assert strict["text_to_audio/R@5"] == 1.0


def test_training_validation_and_eval_retrieval_use_one_relevance_rule(tiny_model, tmp_path):
    """Captions "The sound of a X" and "X" are one item for both (validation used to compare captions exactly)."""
    from biolingual.embedding import embed_shards
    from biolingual.synthetic import synth_call
    from biolingual.training.validate import validate
    from data_pipeline.shards import flac_bytes

    from .shards import RATE, laion_sample, write_shards

    urls, species = write_shards(tmp_path, "v", n_species=3, per_species=2, per_shard=100)
    for i, name in enumerate(species):  # the same species, captioned without the template
        laion_sample(
            tmp_path / "v-000000.tar", f"plain{i}", flac_bytes(synth_call("Barred Owl", 1.0, RATE, seed=i), RATE), name
        )
    ours = validate(tiny_model, urls[0], batch_size=4, workers=0)
    audio, text, captions, _, _ = embed_shards(tiny_model, urls[0], 4, 0)
    assert ours == retrieval_evaluate(audio, text, captions)["caption"]
    assert ours != retrieval_evaluate(audio, text, captions, strip_prefix=False)["caption"]  # the rule matters here
