"""BEANS-Zero's scores, computed as its own evaluation code computes them.

In: per component, the task ("classification" or "detection"), the model's prediction strings and the
true ``output`` strings. Out: the metrics dict beans-zero's ``compute_metrics`` returns for that
component (same names, same values).

The reference is earthspecies/beans-zero (v1.0.0): ``beans_zero/evaluate.py`` (``compute_metrics``,
``_evaluate_classification``, ``_evaluate_detection``, ``_parse_detection_output``),
``beans_zero/post_processor.py`` (``EvalPostProcessor``), ``beans_zero/metrics.py``
(``AveragePrecision`` from tnt, ``MulticlassBinaryF1Score``) and ``beans_zero/config.py``
(Levenshtein distance 5, weighted averaging, the ``<|end_of_text|>`` token). Read, not copied: this
module re-implements each step so the numbers agree, quirks included (each is named where it happens):

1. Post-processing snaps every prediction to the component's label set: the set of distinct true
   ``output`` strings of that component (whole strings, so for detection "A, B" is one entry), plus
   "None" for detection. A prediction is cut at the end-of-text token, kept if it is in the set, else
   replaced by the nearest entry by Levenshtein distance; for detection each comma-separated part is
   snapped on its own and a part farther than 5 edits becomes "None".
2. Classification: accuracy, and precision / recall / F1 averaged over classes weighted by support
   (scikit-learn, ``zero_division=0``) on the raw strings; "Top-1 Accuracy" counts a prediction right
   when it equals one of the comma-separated parts of the label, so a label that itself contains a
   comma (Watkins' "Beluga, White Whale") can never be matched by it although "Accuracy" counts it.
3. Detection: the classes are the comma-separated parts of the true outputs ("None" excluded, case
   insensitive); predictions and truths become 0/1 rows; mAP is tnt's average precision per class
   (scores sorted with ``torch.sort(descending=True)``, which is not stable, so the order of tied
   scores, and with 0/1 predictions the AP, is whatever torch's sort gives; we call the same sort the
   same way to get the same order), averaged over every class; F1, precision and recall are per class
   (a prediction counts as positive when sigmoid(score) > 0.5), then the plain mean over classes, a
   class with no positive counting 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from biolingual.extras import require

END_OF_TEXT = "<|end_of_text|>"  # beans_zero/config.py: eval_cfg.end_of_text_token
MAX_LEVENSHTEIN = 5  # eval_cfg.max_levenstein_distance
NONE = "None"  # the detection label for "nothing detected"


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each costing 1) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


class PostProcessor:
    """beans-zero's ``EvalPostProcessor`` for classification and detection: predictions -> label strings."""

    def __init__(self, label_set: set[str], task: str):
        if task not in ("classification", "detection"):
            raise ValueError(f"task must be 'classification' or 'detection', got {task!r}")
        self.multi_label = task == "detection"
        self.labels = set(label_set) | ({NONE} if self.multi_label else set())
        # beans-zero takes min() over list(set), so equally near labels are chosen in the set's iteration
        # order, which changes with Python's string hashing from one process to the next; sorting first
        # picks the same one every run (the alphabetically first). Only ties in distance are affected.
        self._ordered = sorted(self.labels)

    def nearest(self, text: str) -> str:
        text = text.split(END_OF_TEXT)[0]
        if text in self.labels:
            return text
        best = min(self._ordered, key=lambda label: levenshtein(text, label))
        if self.multi_label and levenshtein(best, text) > MAX_LEVENSHTEIN:
            return NONE  # detection only: nothing close enough counts as "nothing detected"
        return best

    def __call__(self, predictions: Sequence[str]) -> list[str]:
        if self.multi_label:
            return [", ".join(self.nearest(part.strip()) for part in p.split(",")) for p in predictions]
        return [self.nearest(p) for p in predictions]


def classification_scores(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """``_evaluate_classification``: Accuracy, weighted Precision / Recall / F1 Score, Top-1 Accuracy."""
    sk = require("sklearn.metrics", "eval", "BEANS-Zero's classification scores")
    predictions, labels = list(predictions), list(labels)
    top1 = sum(p in [part.strip() for part in y.split(",")] for p, y in zip(predictions, labels)) / len(labels)
    return {
        "Accuracy": float(sk.accuracy_score(labels, predictions)),
        "Precision": float(sk.precision_score(labels, predictions, average="weighted", zero_division=0)),
        "Recall": float(sk.recall_score(labels, predictions, average="weighted", zero_division=0)),
        "F1 Score": float(sk.f1_score(labels, predictions, average="weighted", zero_division=0)),
        "Top-1 Accuracy": float(top1),
    }


def detection_classes(labels: Sequence[str]) -> list[str]:
    """The detection classes beans-zero infers from the true outputs: their comma-separated parts, sorted,
    without "None"."""
    found = set()
    for y in labels:
        if y.lower() != "none":
            found.update(part.strip() for part in y.split(","))
    return sorted(found)


def multi_hot(outputs: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """``_parse_detection_output`` for strings: [N, C] float32 of 0/1; "none" (any case) is an empty row and
    parts that are not classes are ignored."""
    index = {c: i for i, c in enumerate(classes)}
    rows = torch.zeros(len(outputs), len(classes))
    for r, text in enumerate(outputs):
        if text.lower() == "none":
            continue
        for part in text.split(","):
            if part.strip() in index:
                rows[r, index[part.strip()]] = 1
    return rows


def tnt_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class AP as beans-zero's ``AveragePrecision`` (tnt) computes it, tie order included: the scores
    are held in one float32 [N, C] tensor and each column (a strided view) sorted with
    ``torch.sort(column, 0, True)``, exactly as there."""
    scores = scores.detach().to(torch.float32).cpu().contiguous()
    targets = targets.detach().to(torch.int64).cpu()
    ap = torch.zeros(scores.size(1))
    ranks = torch.arange(1, scores.size(0) + 1).float()
    for k in range(scores.size(1)):
        _, order = torch.sort(scores[:, k], 0, True)
        truth = targets[:, k][order]
        precision = truth.float().cumsum(0).div(ranks)
        ap[k] = precision[truth.bool()].sum() / max(truth.sum(), 1)
    return ap


def detection_scores(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """``_evaluate_detection`` with the classes inferred from ``labels``: mAP, F1, Recall, Precision."""
    classes = detection_classes(labels)
    if not classes:
        raise ValueError("no true output names a class (every output is 'None'): detection cannot be scored")
    y = multi_hot(labels, classes)
    p = multi_hot(predictions, classes)
    positive = torch.sigmoid(p) > 0.5  # MulticlassBinaryF1Score: argmax of (1 - sigmoid, sigmoid)
    true = y == 1
    tp = (positive & true).sum(0).double()
    n_pos, n_true = positive.sum(0).double(), true.sum(0).double()
    precision = torch.where(n_pos > 0, tp / n_pos.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(n_true > 0, tp / n_true.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-300), torch.zeros_like(tp)
    )
    return {
        "mAP": float(tnt_average_precision(p, y).mean().item()),
        "F1": float(f1.mean().item()),
        "Recall": float(recall.mean().item()),
        "Precision": float(precision.mean().item()),
    }


def score_component(task: str, predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """One component's metrics as beans-zero's ``compute_metrics`` gives them: post-processing against the
    component's own true outputs, then the task's scores."""
    predictions, labels = [str(p) for p in predictions], [str(y) for y in labels]
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"got {len(predictions)} predictions for {len(labels)} labels")
    snapped = PostProcessor(set(labels), task)(predictions)
    if task == "classification":
        return classification_scores(snapped, labels)
    return detection_scores(snapped, labels)


PRIMARY = {"classification": "Accuracy", "detection": "mAP"}  # the figure each task type is compared on
