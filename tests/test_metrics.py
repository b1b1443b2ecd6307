"""biolingual.metrics: hand-worked retrieval cases, chunking, a brute-force reference, and scikit-learn agreement."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from biolingual.metrics import (
    _stable_topk,
    accuracy,
    confusion_matrix,
    retrieval_metrics,
    top_k_accuracy,
    unweighted_average_recall,
)

# ------------------------------------------------------------------------------------------------
# Hand-worked retrieval case: 5 pairs, captions owl, owl, frog, loon, frog.
#
# Audio embeddings are the unit vectors e_0..e_4, so score(text i, audio j) = M[i, j] exactly, and
# score(audio j, text i) = M[i, j] too (rows of M: text queries; columns: audio queries). Scores
# come from rank levels .9/.7/.5/.3/.1 plus 0.01 * i, so no two scores tie in a row or a column.
#
# Text -> audio rankings (rows):      Audio -> text rankings (columns):
#   t0: a1 a2 a0 a3 a4                  a0: t3 t2 t4 t0 t1
#   t1: a3 a2 a4 a0 a1                  a1: t0 t3 t2 t4 t1
#   t2: a2 a0 a1 a3 a4                  a2: t4 t2 t1 t0 t3
#   t3: a0 a1 a2 a4 a3                  a3: t1 t2 t0 t4 t3
#   t4: a2 a4 a0 a1 a3                  a4: t4 t1 t3 t2 t0
# Relevant in caption mode: {0, 1} for owl queries, {2, 4} for frog, {3} for loon.
# ------------------------------------------------------------------------------------------------
M = np.array(
    [
        [0.50, 0.90, 0.70, 0.30, 0.10],
        [0.31, 0.11, 0.71, 0.91, 0.51],
        [0.72, 0.52, 0.92, 0.32, 0.12],
        [0.93, 0.73, 0.53, 0.13, 0.33],
        [0.54, 0.34, 0.94, 0.14, 0.74],
    ],
    dtype=np.float32,
)
AUDIO = np.eye(5, dtype=np.float32)
CAPTIONS = ["owl", "owl", "frog", "loon", "frog"]
KS = (1, 2, 10)

EXPECTED_CAPTION = {
    # relevance by rank: t0 [1,0,1,0,0]  t1 [0,0,0,1,1]  t2 [1,0,0,0,1]  t3 [0,0,0,0,1]  t4 [1,1,0,0,0]
    # R@1: t0,t2,t4 hit -> 3/5;  R@2: same 3/5;  R@10: all 5 hit
    # P@1: 3/5;  P@2: (1/2 + 0 + 1/2 + 0 + 1) / 5 = 0.4;  P@10: (2+2+2+1+2)/10/5 = 0.18
    # AP@10: t0 (1/1 + 2/3)/2 = 5/6, t1 (1/4 + 2/5)/2 = 0.325, t2 (1 + 2/5)/2 = 0.7,
    #        t3 (1/5)/1 = 0.2, t4 (1 + 1)/2 = 1  -> mean (5/6 + 2.225)/5
    "text_to_audio/R@1": 0.6,
    "text_to_audio/R@2": 0.6,
    "text_to_audio/R@10": 1.0,
    "text_to_audio/P@1": 0.6,
    "text_to_audio/P@2": 0.4,
    "text_to_audio/P@10": 0.18,
    "text_to_audio/mAP@10": (5 / 6 + 0.325 + 0.7 + 0.2 + 1.0) / 5,
    # relevance by rank: a0 [0,0,0,1,1]  a1 [1,0,0,0,1]  a2 [1,1,0,0,0]  a3 [0,0,0,0,1]  a4 [1,0,0,1,0]
    # R@1: a1,a2,a4 -> 3/5;  R@2: 3/5;  R@10: 1
    # P@1: 3/5;  P@2: (0 + 1/2 + 1 + 0 + 1/2)/5 = 0.4;  P@10: 0.18
    # AP@10: a0 (1/4 + 2/5)/2 = 0.325, a1 (1 + 2/5)/2 = 0.7, a2 1, a3 1/5, a4 (1 + 2/4)/2 = 0.75
    "audio_to_text/R@1": 0.6,
    "audio_to_text/R@2": 0.6,
    "audio_to_text/R@10": 1.0,
    "audio_to_text/P@1": 0.6,
    "audio_to_text/P@2": 0.4,
    "audio_to_text/P@10": 0.18,
    "audio_to_text/mAP@10": (0.325 + 0.7 + 1.0 + 0.2 + 0.75) / 5,  # 0.595
    "n_items": 5,
}

EXPECTED_STRICT = {
    # rank of the paired audio: t0 3, t1 5, t2 1, t3 5, t4 2
    # R@1 1/5, R@2 2/5, R@10 1;  P@1 1/5, P@2 (1/2 + 1/2)/5 = 0.2, P@10 1/10
    # mAP@10 = mean 1/rank = (1/3 + 1/5 + 1 + 1/5 + 1/2)/5
    "text_to_audio/R@1": 0.2,
    "text_to_audio/R@2": 0.4,
    "text_to_audio/R@10": 1.0,
    "text_to_audio/P@1": 0.2,
    "text_to_audio/P@2": 0.2,
    "text_to_audio/P@10": 0.1,
    "text_to_audio/mAP@10": (1 / 3 + 1 / 5 + 1 + 1 / 5 + 1 / 2) / 5,
    # rank of the paired text: a0 4, a1 5, a2 2, a3 5, a4 1
    # mAP@10 = (1/4 + 1/5 + 1/2 + 1/5 + 1)/5 = 0.43
    "audio_to_text/R@1": 0.2,
    "audio_to_text/R@2": 0.4,
    "audio_to_text/R@10": 1.0,
    "audio_to_text/P@1": 0.2,
    "audio_to_text/P@2": 0.2,
    "audio_to_text/P@10": 0.1,
    "audio_to_text/mAP@10": (1 / 4 + 1 / 5 + 1 / 2 + 1 / 5 + 1) / 5,
    "n_items": 5,
}


def _check(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
        assert type(got[key]) is type(value), key  # plain Python floats / int


def test_hand_case_caption_mode():
    _check(retrieval_metrics(AUDIO, M, CAPTIONS, ks=KS), EXPECTED_CAPTION)


@pytest.mark.parametrize("how", ["strict_flag", "no_captions"])
def test_hand_case_strict_mode(how):
    if how == "strict_flag":
        got = retrieval_metrics(AUDIO, M, CAPTIONS, ks=KS, strict=True)
    else:
        got = retrieval_metrics(AUDIO, M, ks=KS)
    _check(got, EXPECTED_STRICT)


def test_hand_case_map_cutoff_below_relevant_count():
    # map_k=2: AP@2 divides by min(2, n_relevant).
    # caption t->a: t0 1/2, t1 0, t2 1/2, t3 0, t4 (1+1)/2 = 1 -> 0.4;  a->t: a0 0, a1 1/2, a2 1, a3 0, a4 1/2 -> 0.4
    # strict  t->a: t2 1, t4 1/2 -> 0.3;  a->t: a2 1/2, a4 1 -> 0.3
    got = retrieval_metrics(AUDIO, M, CAPTIONS, ks=(1,), map_k=2)
    assert got["text_to_audio/mAP@2"] == pytest.approx(0.4)
    assert got["audio_to_text/mAP@2"] == pytest.approx(0.4)
    got = retrieval_metrics(AUDIO, M, CAPTIONS, ks=(1,), map_k=2, strict=True)
    assert got["text_to_audio/mAP@2"] == pytest.approx(0.3)
    assert got["audio_to_text/mAP@2"] == pytest.approx(0.3)
    # map_k=1: AP@1 = rel at rank 1 / min(1, n_relevant) = P@1 (owl and frog queries have 2 relevant items)
    got = retrieval_metrics(AUDIO, M, CAPTIONS, ks=(1,), map_k=1)
    assert got["text_to_audio/mAP@1"] == pytest.approx(0.6) == got["text_to_audio/P@1"]
    assert got["audio_to_text/mAP@1"] == pytest.approx(0.6) == got["audio_to_text/P@1"]


def test_default_keys_and_torch_input():
    got = retrieval_metrics(torch.from_numpy(AUDIO), torch.from_numpy(M), CAPTIONS)
    expected_keys = {f"{d}/{m}@{k}" for d in ("text_to_audio", "audio_to_text") for m in ("R", "P") for k in (1, 5, 10)}
    expected_keys |= {"text_to_audio/mAP@10", "audio_to_text/mAP@10", "n_items"}
    assert set(got) == expected_keys
    assert got["text_to_audio/mAP@10"] == pytest.approx(EXPECTED_CAPTION["text_to_audio/mAP@10"])
    assert got["audio_to_text/R@5"] == 1.0  # N = 5: the whole gallery
    assert got["audio_to_text/P@5"] == pytest.approx(9 / 25)  # (2+2+2+1+2)/5 relevant per query, over 5 queries


def test_hand_case_ties_with_duplicate_captions():
    # Texts 0 and 1 are the same caption, hence the same embedding; audio = e_0, e_1, e_2.
    # scores t->a (rows)    a0   a1   a2      ties rank by index, lowest first:
    #   t0 = t1             .5   .5   .25     t0, t1: a0 a1 a2        t2: a1 a2 a0
    #   t2                  .25  .5   .5
    # a->t (columns): a0: t0 t1 t2 (t0 = t1 tie), a1: t0 t1 t2 (three-way tie), a2: t2 t0 t1
    audio = np.eye(3, dtype=np.float32)
    text = np.array([[0.5, 0.5, 0.25], [0.5, 0.5, 0.25], [0.25, 0.5, 0.5]], dtype=np.float32)
    captions = ["owl", "owl", "frog"]
    # strict: paired ranks t->a 1, 2, 2; a->t 1, 2, 1
    got = retrieval_metrics(audio, text, captions, ks=(1,), strict=True)
    assert got["text_to_audio/R@1"] == pytest.approx(1 / 3)
    assert got["text_to_audio/mAP@10"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert got["audio_to_text/R@1"] == pytest.approx(2 / 3)
    assert got["audio_to_text/mAP@10"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    # caption mode: t0, t1 rel [1,1,0] -> AP 1 each; t2 rel [0,1,0] -> AP 1/2.  a0, a1 [1,1,0], a2 [1,0,0] -> AP 1
    got = retrieval_metrics(audio, text, captions, ks=(1,))
    assert got["text_to_audio/R@1"] == pytest.approx(2 / 3)
    assert got["text_to_audio/P@1"] == pytest.approx(2 / 3)
    assert got["text_to_audio/mAP@10"] == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert got["audio_to_text/R@1"] == 1.0
    assert got["audio_to_text/mAP@10"] == 1.0
    # the cut at k = 1 falls inside the ties (t->a for t0, t1; a->t for a0, a1): same answer, strict
    got = retrieval_metrics(audio, text, captions, ks=(1,), map_k=1, strict=True)
    assert got["text_to_audio/mAP@1"] == pytest.approx(1 / 3)
    assert got["audio_to_text/mAP@1"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------
# Random data: chunking and an independent brute-force reference.
# ------------------------------------------------------------------------------------------------


def _random_case(kind: str, n: int = 200, seed: int = 0):
    """Paired embeddings and captions with repeats.

    "ties": float32 entries in {-2..2}/4 (not normalised), so every dot product is exact in any
    summation order and tied scores are everywhere; pairs share a caption 30% of the time, and
    duplicate captions get duplicate text embeddings, as real text encoders give.
    "continuous": L2-normalised float64 Gaussian embeddings, audio = noisy copy of text.
    """
    rng = np.random.default_rng(seed)
    caption_ids = rng.integers(0, 40, size=n)
    captions = [f"caption {c}" for c in caption_ids]
    if kind == "ties":
        table = rng.integers(-2, 3, size=(40, 6)).astype(np.float32) / 4
        text = table[caption_ids]
        audio = np.where(rng.random((n, 6)) < 0.3, text, rng.integers(-2, 3, size=(n, 6)) / 4).astype(np.float32)
    else:
        table = rng.standard_normal((40, 16))
        text = table[caption_ids]
        audio = text + 0.8 * rng.standard_normal((n, 16))
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    return audio, text, captions


def _brute_force(audio, text, captions, ks, map_k, strict):
    """Full similarity matrix in float64, a stable sort per query, and plain loops."""
    audio, text = np.asarray(audio, np.float64), np.asarray(text, np.float64)
    n = len(audio)
    out = {}
    for name, q, g in (("text_to_audio", text, audio), ("audio_to_text", audio, text)):
        scores = q @ g.T
        sums = {f"R@{k}": 0.0 for k in ks} | {f"P@{k}": 0.0 for k in ks} | {f"mAP@{map_k}": 0.0}
        for i in range(n):
            order = sorted(range(n), key=lambda j: (-scores[i, j], j))
            relevant = {i} if strict else {j for j in range(n) if captions[j] == captions[i]}
            rel = [1 if j in relevant else 0 for j in order]
            for k in ks:
                sums[f"R@{k}"] += float(any(rel[:k]))
                sums[f"P@{k}"] += sum(rel[:k]) / k
            ap, found = 0.0, 0
            for r, is_rel in enumerate(rel[:map_k], start=1):
                if is_rel:
                    found += 1
                    ap += found / r
            sums[f"mAP@{map_k}"] += ap / min(map_k, len(relevant))
        out.update({f"{name}/{key}": value / n for key, value in sums.items()})
    out["n_items"] = n
    return out


@pytest.mark.parametrize("kind", ["ties", "continuous"])
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("map_k", [3, 10])  # 3: many queries have more relevant items than the cut-off
def test_matches_brute_force(kind, strict, map_k):
    audio, text, captions = _random_case(kind)
    ks = (1, 3, 5, 10)
    expected = _brute_force(audio, text, captions, ks, map_k, strict)
    got = retrieval_metrics(audio, text, captions, ks=ks, map_k=map_k, strict=strict, chunk_size=64)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("kind", ["ties", "continuous"])
@pytest.mark.parametrize("strict", [False, True])
def test_chunked_equals_unchunked(kind, strict):
    audio, text, captions = _random_case(kind, seed=1)
    whole = retrieval_metrics(audio, text, captions, strict=strict, chunk_size=10_000)
    for chunk_size in (3, 7):
        chunked = retrieval_metrics(audio, text, captions, strict=strict, chunk_size=chunk_size)
        assert chunked == pytest.approx(whole, rel=1e-12, abs=1e-12)
    # caption mode differs from strict on this data (repeated captions)
    if not strict:
        assert whole["text_to_audio/P@5"] > retrieval_metrics(audio, text, strict=True)["text_to_audio/P@5"]


@pytest.mark.parametrize("k", [1, 2, 5, 10, 30])
def test_stable_topk_equals_stable_sort(k):
    # integer scores in a small range: many ties, including ties across the top-k cut
    g = torch.Generator().manual_seed(k)
    scores = torch.randint(0, 6, (50, 30), generator=g).float()
    expected = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(_stable_topk(scores, k), expected)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        retrieval_metrics(AUDIO, M[:4], CAPTIONS[:4])
    with pytest.raises(ValueError):
        retrieval_metrics(AUDIO, M, CAPTIONS[:4])
    bad = M.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        retrieval_metrics(AUDIO, bad, CAPTIONS)


# ------------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------------


def test_uar_on_imbalanced_data():
    # 8 samples of class 0, 2 of class 1; always predicting 0: accuracy 8/10, UAR (1 + 0)/2
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 10
    assert accuracy(y_true, y_pred) == pytest.approx(0.8)
    assert unweighted_average_recall(y_true, y_pred) == pytest.approx(0.5)
    assert unweighted_average_recall(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_uar_equals_balanced_accuracy_random():
    rng = np.random.default_rng(0)
    y_true = rng.choice(5, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 6, size=300))  # class 5 only predicted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has a class y_true lacks
        expected = balanced_accuracy_score(y_true, y_pred)
    got = unweighted_average_recall(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert isinstance(got, float)
    assert got == pytest.approx(expected)
    assert got != pytest.approx(accuracy(y_true, y_pred))


def test_uar_labels():
    y_true = ["owl", "owl", "owl", "frog"]
    y_pred = ["owl", "frog", "frog", "frog"]
    # recalls: owl 1/3, frog 1
    assert unweighted_average_recall(y_true, y_pred) == pytest.approx((1 / 3 + 1) / 2)
    assert unweighted_average_recall(y_true, y_pred, labels=["owl"]) == pytest.approx(1 / 3)
    # "loon" never occurs in y_true: it has no recall and is left out, not averaged in as 0
    assert unweighted_average_recall(y_true, y_pred, labels=["owl", "frog", "loon"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_matches_sklearn(k):
    rng = np.random.default_rng(k)
    scores = rng.standard_normal((100, 6))
    y_true = rng.integers(0, 6, size=100)
    expected = top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(6))
    assert top_k_accuracy(y_true, scores, k) == pytest.approx(expected)
    assert top_k_accuracy(torch.from_numpy(y_true), torch.from_numpy(scores).float(), k) == pytest.approx(expected)
    if k == 1:
        assert top_k_accuracy(y_true, scores, 1) == pytest.approx(accuracy(y_true, scores.argmax(1)))


def test_top_k_accuracy_two_classes_and_ties():
    # [N, 2] scores for a two-class problem (scikit-learn's function rejects these)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top_k_accuracy([0, 1, 1], scores, 1) == pytest.approx(2 / 3)
    assert top_k_accuracy([0, 1, 1], scores, 2) == 1.0
    # ties rank by class index, lowest first: class 1 ties with class 0 and loses, beats class 2
    tied = np.array([[0.5, 0.5, 0.5]] * 3)
    assert top_k_accuracy([0, 1, 2], tied, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy([0, 1, 2], tied, 2) == pytest.approx(2 / 3)


def test_confusion_matrix():
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1])
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(confusion_matrix([0, 0, 1], [0, 1, 1], normalize="true"), [[0.5, 0.5], [0, 1]])
