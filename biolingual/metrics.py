"""Evaluation metrics: the one place the library defines them.

Training validation, retrieval evaluation and the BEANS benchmark all import from here, so each
number means the same thing wherever it is reported.

Retrieval (:func:`retrieval_metrics`, :func:`relevance_key`)
    Text-to-audio and audio-to-text retrieval between paired embeddings, as CLAP papers and
    BioLingual report it: recall at k (a hit rate), precision at k and mAP at k. Chunked over
    queries, so 100k items never need the full N x N similarity matrix. Which items count as
    matches is one rule, :func:`relevance_key`, used by training validation and ``eval.retrieval``.

Classification (:func:`accuracy`, :func:`unweighted_average_recall`, :func:`top_k_accuracy`,
:func:`confusion_matrix`)
    Thin wrappers over scikit-learn where it does the job, taking torch tensors or numpy arrays.
    scikit-learn is imported only when one of these is called, so retrieval metrics (used during
    training) need only torch and numpy.

Detection (:func:`detection_map`, :func:`detection_average_precision`)
    BEANS' windowed sound-event detection score: per-class average precision over windows,
    averaged over every class.

Multi-label classification (:func:`class_mean_average_precision`, :func:`multilabel_average_precision`,
:func:`multilabel_auroc`, :func:`multilabel_top1_accuracy`)
    BirdSet's scores of 5 s soundscape windows, each with zero or more species: cmAP (AP averaged over
    the classes that have a positive), macro AUROC and top-1 accuracy, as BirdSet's own code computes them.

All functions return plain Python floats (and ``int`` counts), never tensors or numpy scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "accuracy",
    "class_mean_average_precision",
    "confusion_matrix",
    "detection_average_precision",
    "detection_map",
    "multilabel_auroc",
    "multilabel_average_precision",
    "multilabel_top1_accuracy",
    "retrieval_metrics",
    "top_k_accuracy",
    "unweighted_average_recall",
]

DIRECTIONS = ("text_to_audio", "audio_to_text")
_TIE_BATCH = 256  # rows re-ranked at a time when tied scores straddle the top-k cut


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


def _as_tensor(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # half/bfloat16 (and integer) inputs are scored in float32
    return t


def _stable_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best gallery items per row, ordered by (score descending, index ascending).

    ``torch.topk`` alone picks an arbitrary subset of items tied at the k-th score and orders ties
    arbitrarily. Tied items straddle the cut exactly when the (k+1)-th best score equals the k-th,
    so one ``topk`` of k+1 finds those rows; only blocks of rows holding one get their tied part
    re-picked (lowest indices first) with one extra pass over their scores. Then the k picks are
    put in order with a stable sort, so the ranking equals a stable full sort of the row.
    """
    rows, n = scores.shape
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1, largest=True, sorted=True)
    kth = vals[:, k - 1 : k]
    straddle = vals[:, k] == vals[:, k - 1] if k < n else torch.zeros_like(kth[:, 0], dtype=torch.bool)
    vals, idx = vals[:, :k], idx[:, :k].contiguous()
    if bool(straddle.any()):
        n_greater = (vals > kth).sum(1)  # every item scoring above the k-th is inside the top k
        cols = torch.arange(k, device=scores.device)
        for b in range(0, rows, _TIE_BATCH):  # bounds the extra memory to _TIE_BATCH rows
            sl = slice(b, b + _TIE_BATCH)
            if not bool(straddle[sl].any()):
                continue
            # (row, column) of every item tied with its row's k-th score, row-major: by index within a row
            tied = (scores[sl] == kth[sl]).nonzero()
            counts = torch.bincount(tied[:, 0], minlength=kth[sl].shape[0])  # >= 1: the k-th item itself
            starts = counts.cumsum(0) - counts
            # sorted top-k values: columns [0, ng) score above the k-th, columns [ng, k) tie with it and
            # take the row's tied items in index order (c - ng < k - ng <= counts, so within the row)
            ng = n_greater[sl].unsqueeze(1)
            repl = tied[starts.unsqueeze(1) + (cols - ng).clamp(min=0), 1]
            idx[sl] = torch.where((cols >= ng) & straddle[sl].unsqueeze(1), repl, idx[sl])
    idx = idx.sort(dim=1).values
    order = torch.sort(scores.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _caption_ids(captions: Sequence[str] | None, n: int, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-item integer group ids and the number of relevant items per item (its group's size)."""
    if strict:
        return np.arange(n), np.ones(n, dtype=np.int64)
    # object dtype: no fixed-width copy of 100k long strings; equality is Python string equality
    _, ids, counts = np.unique(np.asarray(list(captions), dtype=object), return_inverse=True, return_counts=True)
    ids = ids.reshape(-1)
    return ids, counts[ids]


@torch.no_grad()
def _direction(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    ids: torch.Tensor,
    n_relevant: torch.Tensor,
    ks: tuple[int, ...],
    map_k: int,
    chunk_size: int,
) -> dict[str, float]:
    n = queries.shape[0]
    depth = min(max(max(ks), map_k), n)
    # Identical gallery rows (duplicate captions embed identically) must score identically, so that
    # ties break by index as documented; BLAS kernels give rows at different positions results that
    # differ in the last bit (seen with MKL float64), so each distinct row is scored once and copied.
    distinct, inverse = torch.unique(gallery, dim=0, return_inverse=True)
    gallery_t = distinct.T
    hits = {k: 0.0 for k in ks}
    precision = {k: 0.0 for k in ks}
    ap_sum = 0.0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        scores = (queries[start:stop] @ gallery_t)[:, inverse]  # [chunk, N]: the only large tensor
        top = _stable_topk(scores, depth)
        del scores
        rel = (ids[top] == ids[start:stop].unsqueeze(1)).to(torch.float64)  # [chunk, depth]
        for k in ks:
            hits[k] += rel[:, :k].amax(1).sum().item()
            precision[k] += (rel[:, :k].sum(1) / k).sum().item()
        r = rel[:, :map_k]
        ranks = torch.arange(1, r.shape[1] + 1, device=r.device, dtype=torch.float64)
        precision_at_r = r.cumsum(1) / ranks
        denom = n_relevant[start:stop].clamp(max=map_k).to(torch.float64)
        ap_sum += ((precision_at_r * r).sum(1) / denom).sum().item()
    out = {}
    for k in ks:
        out[f"R@{k}"] = hits[k] / n
    for k in ks:
        out[f"P@{k}"] = precision[k] / n
    out[f"mAP@{map_k}"] = ap_sum / n
    return out


TEMPLATE_PREFIXES = ("The sound of a ", "The sound of an ")


def relevance_key(caption: str, strip_prefix: bool = True) -> str:
    """The caption as compared for relevance in caption mode: BioLingual strips its "The sound of a(n) "
    template first, so "The sound of a Barred Owl" and "Barred Owl" are the same item."""
    if strip_prefix:
        for p in sorted(TEMPLATE_PREFIXES, key=len, reverse=True):
            if caption.startswith(p):
                return caption[len(p) :]
    return caption


def retrieval_metrics(
    audio_embeddings: Any,
    text_embeddings: Any,
    captions: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    map_k: int = 10,
    strict: bool = False,
    chunk_size: int = 4096,
) -> dict[str, float | int]:
    """Text-to-audio and audio-to-text retrieval metrics for paired embeddings.

    Row ``i`` of ``audio_embeddings`` [N, D] and row ``i`` of ``text_embeddings`` [N, D] are a pair (a clip and its
    caption). Scores are dot products, i.e. cosine similarities for the L2-normalised embeddings
    the model returns (nothing is re-normalised here). Text-to-audio: each text row queries the
    gallery of all N audio rows; audio-to-text: each audio row queries all N text rows.

    Relevance
        * Caption mode (default when ``captions`` is given): for query ``i``, gallery item ``j`` is
          relevant iff ``captions[j] == captions[i]`` (exact string equality), so items sharing a
          caption count as matches; the query's own pair is always relevant. This is the rule
          BioLingual reports, where many clips share captions such as "The sound of a Barred Owl".
        * Strict mode (``strict=True``, or ``captions=None``): only the paired item ``j == i`` is
          relevant (one-to-one).

    Definitions, averaged over the N queries (``rel_r`` = 1 if the item at rank r is relevant):
        * ``R@k``: 1 if any relevant item is in the top k, else 0 (recall at k as a hit rate, as
          CLAP papers report it; in strict mode the usual recall at k).
        * ``P@k``: (number of relevant items in the top k) / k. In strict mode at most 1/k.
        * ``mAP@k`` (k = ``map_k``): AP@k = sum_{r<=k} P@r * rel_r / min(k, n_rel), with n_rel
          the number of relevant items for the query. In strict mode this is 1/rank of the
          paired item if rank <= k, else 0 (mean reciprocal rank cut at k).
        If k > N, the top k is the whole gallery, and P@k still divides by k.

    Ties: items with equal scores are ranked by gallery index, lowest first (as a stable sort of
    the row would), so the ranking depends only on the scores, never on ``chunk_size`` or on
    ``torch.topk``'s internal order. Ties are common in audio-to-text with duplicate captions
    (identical texts embed identically): in caption mode they cannot change the result (the tied
    duplicates are equally relevant); in strict mode the paired text ranks below its duplicates
    with lower indices and above those with higher ones.

    Memory: queries are processed ``chunk_size`` rows at a time, so the largest tensor is the
    [chunk_size, N] score block (1.6 GB of float32 for 4096 x 100k, twice while duplicate gallery
    rows are expanded); the full N x N matrix is never built. Rows with ties at the cut need at most 256 x N tie
    positions more (16 bytes each, only when every score in those rows ties). Runs on the device of
    ``audio_embeddings`` (CUDA tensors stay on the GPU).

    Args:
        audio_embeddings, text_embeddings: [N, D] torch tensors or numpy arrays (float16/bfloat16 are computed in
            float32).
        captions: N caption strings, one per pair; None means strict mode.
        ks: cut-offs for R@k and P@k.
        map_k: cut-off for mAP.
        strict: force one-to-one relevance even when captions are given.
        chunk_size: query rows scored at a time.

    Returns:
        ``{"text_to_audio/R@1": ..., "text_to_audio/P@1": ..., "text_to_audio/mAP@10": ..., ...,
        "audio_to_text/...": ..., "n_items": N}`` with float values (``n_items`` an int).
    """
    audio = _as_tensor(audio_embeddings)
    text = _as_tensor(text_embeddings).to(device=audio.device)
    if audio.ndim != 2 or text.ndim != 2 or audio.shape != text.shape:
        raise ValueError(
            "audio_embeddings and text_embeddings must both be [N, D]; "
            f"got {tuple(audio.shape)} and {tuple(text.shape)}"
        )
    n = audio.shape[0]
    if n == 0:
        raise ValueError("no items to evaluate")
    if audio.dtype != text.dtype:
        audio, text = audio.double(), text.double()
    if not (bool(torch.isfinite(audio).all()) and bool(torch.isfinite(text).all())):
        raise ValueError("embeddings contain NaN or infinite values")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or map_k < 1 or chunk_size < 1:
        raise ValueError("ks, map_k and chunk_size must be positive")
    strict = strict or captions is None
    if not strict and len(captions) != n:
        raise ValueError(f"got {len(captions)} captions for {n} items")

    ids_np, n_rel_np = _caption_ids(captions, n, strict)
    ids = torch.as_tensor(ids_np, dtype=torch.int64, device=audio.device)
    n_rel = torch.as_tensor(n_rel_np, dtype=torch.int64, device=audio.device)

    results: dict[str, float | int] = {}
    for name, (queries, gallery) in zip(DIRECTIONS, ((text, audio), (audio, text))):
        for key, value in _direction(queries, gallery, ids, n_rel, ks, int(map_k), int(chunk_size)).items():
            results[f"{name}/{key}"] = float(value)
    results["n_items"] = int(n)
    return results


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _sklearn_metrics():
    """scikit-learn's metrics module, imported on first use: only the classification metrics need it."""
    from .extras import require

    return require("sklearn.metrics", "eval", "the classification metrics (biolingual.metrics)")


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose predicted label equals the true label."""
    accuracy_score = _sklearn_metrics().accuracy_score
    return float(accuracy_score(_as_numpy(y_true), _as_numpy(y_pred)))


def unweighted_average_recall(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> float:
    """Unweighted average recall (UAR): the mean over classes of per-class recall.

    Recall of class c = (samples of class c predicted as c) / (samples of class c). Every class
    weighs the same however many samples it has, so unlike :func:`accuracy` a majority-class
    guesser scores 1 / n_classes. Also called macro recall or balanced accuracy; with
    ``labels=None`` it equals ``sklearn.metrics.balanced_accuracy_score``.

    Args:
        labels: the classes to average over. Default: the classes present in ``y_true``. Classes
            in ``labels`` that never occur in ``y_true`` have no recall and are left out of the
            mean (not counted as 0); predictions of classes outside ``labels`` still count as misses.
    """
    recall_score = _sklearn_metrics().recall_score
    y_true, y_pred = _as_numpy(y_true), _as_numpy(y_pred)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    # zero_division=nan drops classes absent from y_true from the macro average (scikit-learn >= 1.3)
    return float(recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=np.nan))


def top_k_accuracy(y_true: Any, scores: Any, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest-scoring classes.

    ``scores`` is [N, C] (logits, probabilities or similarities; higher is better) and ``y_true``
    holds class indices in [0, C). Ties are broken as in :func:`retrieval_metrics`: classes with
    equal scores rank by index, lowest first, so the true class's rank is the number of classes
    scoring strictly higher plus the number of lower-indexed classes scoring the same.

    Hand-written rather than ``sklearn.metrics.top_k_accuracy_score`` (which it equals when there
    are no ties) because scikit-learn rejects [N, 2] scores for two-class problems, needs the label
    list whenever a class is missing from ``y_true``, ranks tied classes highest index first, and
    works only on host numpy arrays; this is two vectorised comparisons on any device.
    """
    s = _as_tensor(scores)
    y = torch.as_tensor(_as_numpy(y_true), dtype=torch.int64, device=s.device).reshape(-1)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"scores must be [N, C] with N = len(y_true); got {tuple(s.shape)} for {y.shape[0]} labels")
    if k < 1:
        raise ValueError("k must be positive")
    if y.numel() == 0:
        raise ValueError("no samples")
    if int(y.min()) < 0 or int(y.max()) >= s.shape[1]:
        raise ValueError(f"y_true must hold class indices in [0, {s.shape[1]})")
    true_score = s.gather(1, y.unsqueeze(1))
    lower_index = torch.arange(s.shape[1], device=s.device).unsqueeze(0) < y.unsqueeze(1)
    rank = (s > true_score).sum(1) + ((s == true_score) & lower_index).sum(1)  # 0-based
    return float((rank < k).double().mean().item())


def confusion_matrix(
    y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None, normalize: str | None = None
) -> np.ndarray:
    """``sklearn.metrics.confusion_matrix``: entry [i, j] counts samples of class ``labels[i]``
    predicted as ``labels[j]`` (rows true, columns predicted). ``labels`` defaults to the sorted
    union of classes in ``y_true`` and ``y_pred``; ``normalize`` is None, "true", "pred" or "all"."""
    return _sklearn_metrics().confusion_matrix(_as_numpy(y_true), _as_numpy(y_pred), labels=labels, normalize=normalize)


# --------------------------------------------------------------------------------------------------
# Detection (BEANS detection tasks)
# --------------------------------------------------------------------------------------------------


def detection_average_precision(scores: Any, targets: Any) -> np.ndarray:
    """Per-class average precision of windowed detection, exactly as BEANS computes it.

    ``scores`` [N, C] (logits or probabilities; only the ranking matters) and multi-hot ``targets``
    [N, C] of 0/1. For class c the N windows are sorted by score, highest first (ties keep window
    order, as a stable sort does); AP_c = (sum of the precision at the rank of each positive
    window) / max(number of positive windows, 1). A class with no positive window scores 0.

    Hand-written rather than ``sklearn.metrics.average_precision_score`` (which it equals for
    classes with positives and no tied scores) because BEANS scores a class without positives as
    0 (scikit-learn warns and returns 0 only for some versions) and breaks ties by window order
    (scikit-learn groups tied scores into one threshold).
    """
    s = _as_numpy(scores).astype(np.float64)
    t = _as_numpy(targets)
    if s.ndim == 1:
        s, t = s[:, None], t.reshape(-1, 1)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must both be [N, C]; got {s.shape} and {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets must be 0 or 1")
    if s.shape[0] == 0:
        raise ValueError("no windows to score")
    order = np.argsort(-s, axis=0, kind="stable")  # descending, ties by window index
    truth = np.take_along_axis(t.astype(np.float64), order, axis=0)
    precision = truth.cumsum(0) / np.arange(1, s.shape[0] + 1)[:, None]
    return (precision * truth).sum(0) / np.maximum(truth.sum(0), 1)


def detection_map(scores: Any, targets: Any) -> float:
    """BEANS detection mAP: the mean of :func:`detection_average_precision` over **all** classes,
    including classes with no positive window (which count as 0 and pull the mean down)."""
    return float(detection_average_precision(scores, targets).mean())


# --------------------------------------------------------------------------------------------------
# Multi-label classification (BirdSet)
# --------------------------------------------------------------------------------------------------
# BirdSet (github.com/DBD-research-group/BirdSet, birdset/configs/module_configs.py MultilabelMetricsConfig)
# scores with torchmetrics 1.2.0 (its pyproject pin): cmAP = MultilabelAveragePrecision(average="macro"),
# AUROC = AUROC(task="multilabel", average="macro"), T1Accuracy = TopKAccuracy(topk=1) of
# birdset/modules/metrics/multilabel.py, on sigmoid outputs over the whole test set. These functions give
# the same numbers without torchmetrics, and say in one place what happens to a class without positives.


def _multilabel_inputs(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores).astype(np.float64)
    t = _as_numpy(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must both be [N, C]; got {s.shape} and {t.shape}")
    if s.shape[0] == 0:
        raise ValueError("no samples to score")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets must be 0 or 1")
    return s, t.astype(bool)


def multilabel_average_precision(scores: Any, targets: Any) -> np.ndarray:
    """Per-class average precision [C] of ``scores`` [N, C] against multi-hot ``targets`` [N, C]; NaN for a
    class with no positive sample.

    AP_c = sum over distinct score thresholds (highest first) of (recall step) x precision, with tied
    scores forming one threshold: ``sklearn.metrics.average_precision_score`` and torchmetrics'
    ``binary_average_precision`` define it the same way (unlike :func:`detection_average_precision`,
    which ranks tied windows by index as BEANS does). Only the ranking of scores matters.
    """
    s, t = _multilabel_inputs(scores, targets)
    ap = np.full(s.shape[1], np.nan)
    for c in np.nonzero(t.any(0))[0]:
        order = np.argsort(-s[:, c], kind="stable")
        score, hit = s[order, c], t[order, c]
        tp = np.cumsum(hit)
        last = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]  # the last row of each tied group
        tp_at, n_at = tp[last], last + 1
        recall_step = np.diff(np.r_[0, tp_at]) / tp[-1]
        ap[c] = float((recall_step * tp_at / n_at).sum())
    return ap


def class_mean_average_precision(scores: Any, targets: Any) -> float:
    """BirdSet's cmAP: the mean of :func:`multilabel_average_precision` over the classes that have at
    least one positive sample; classes without positives are left out, not counted as 0.

    This is what BirdSet's ``cmAP`` metric returns with the torchmetrics it pins (1.2.0), where such a
    class's AP is NaN and the macro average ignores it. torchmetrics 1.4 and later score that class 0 and
    keep it in the mean (Lightning-AI/torchmetrics#2507), which would pull cmAP down by the share of
    absent classes; this function keeps BirdSet's published definition.
    """
    ap = multilabel_average_precision(scores, targets)
    if np.isnan(ap).all():
        raise ValueError("no class has a positive sample: cmAP is undefined")
    return float(np.nanmean(ap))


def _binary_auroc(score: np.ndarray, hit: np.ndarray) -> float:
    """ROC AUC by the trapezoid rule over distinct thresholds (ties form one step), as scikit-learn and
    torchmetrics compute it. Both classes must be present."""
    order = np.argsort(-score, kind="stable")
    score, hit = score[order], hit[order]
    last = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]
    tp = np.cumsum(hit)[last]
    fp = (last + 1) - tp
    tpr, fpr = np.r_[0, tp] / tp[-1], np.r_[0, fp] / fp[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def multilabel_auroc(scores: Any, targets: Any, per_class: bool = False) -> float | np.ndarray:
    """BirdSet's AUROC: the macro mean over **all** classes of the per-class ROC AUC.

    A class with no positive sample (or no negative one) has no ROC curve; torchmetrics, which BirdSet
    calls (``AUROC(task="multilabel", average="macro")``), then returns a zero true- (or false-) positive
    rate and the class scores 0, kept in the mean. This function does the same, so the number matches
    BirdSet's; take the mean of ``per_class=True``'s values over the classes present to see AUROC without
    them. ``per_class=True`` returns the [C] values instead of their mean.
    """
    s, t = _multilabel_inputs(scores, targets)
    auc = np.zeros(s.shape[1])
    for c in range(s.shape[1]):
        if t[:, c].any() and not t[:, c].all():
            auc[c] = _binary_auroc(s[:, c], t[:, c])
    return auc if per_class else float(auc.mean())


def multilabel_top1_accuracy(scores: Any, targets: Any) -> float:
    """BirdSet's T1Accuracy: among samples with at least one positive class, the fraction whose
    highest-scoring class is one of their positives. Samples without any positive ("no call" windows)
    are left out, as BirdSet's ``TopKAccuracy(topk=1)`` leaves them out by default. Tied top scores
    pick the lowest class index."""
    s, t = _multilabel_inputs(scores, targets)
    labelled = t.any(1)
    if not labelled.any():
        raise ValueError("no sample has a positive class: top-1 accuracy is undefined")
    top = s.argmax(1)  # argmax returns the first maximum: ties go to the lowest index
    return float(t[np.arange(len(t)), top][labelled].mean())
