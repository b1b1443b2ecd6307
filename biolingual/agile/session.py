"""One agile-modelling session over an index: targets, proposals, labels, heads, rankings, exports.

In: an index folder made by ``biolingual index`` (and, when a prompt or audio example must be embedded,
the index's model, loaded on first use and checked against the index). Out: what the CLI
(``biolingual agile``) and the review page call: proposals to label, labels stored in
``<index>/agile/labels.sqlite`` (:mod:`.labels`), heads fitted and saved in ``<index>/agile/heads/<slug>.head``
(:mod:`.head`), rankings, and exports (:mod:`.raven`).

A round is: :meth:`AgileSession.fit` (regression on the labelled rows, milliseconds), one pass over every
window's embedding to rescore it (a matrix product over the memory-mapped float16 rows, in chunks; how much the
top changed is counted against the previous ranking's top rows, kept in its head, not by scoring it again), and
:meth:`AgileSession.propose` on the scores kept from that pass.

Several sessions (the page and a CLI command) may share an index: labels go through SQLite, and a
session re-reads a head file when it changed on disk.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import UsageError
from ..search.export import index_durations
from ..search.index import check_model, load_index
from ..vocabulary import slug
from .density import DEFAULT_QUANTILES, assign_bins, estimate_density, sample_for_density
from .head import Head, fit_head, score_rows, seed_head
from .labels import Label, LabelStore, Target
from .propose import Proposal, propose
from .raven import export_labels_csv, export_labels_raven, import_raven, recording_lookup

TOP_K = 100  # rows of a ranking kept in the head, to count how many of them change at the next fit


@dataclass
class FitResult:
    head: Head
    path: Path
    labels_used: int
    positives: int
    negatives: int
    unsure: int
    cv_ap: float | None  # AP of out-of-fold scores of the labels (None with fewer than 2 of each class)
    top_changed: int  # how many of the top ``top_k`` windows are new compared with the previous ranking
    top_k: int
    calibration: str
    seconds: float  # fit + rescoring every window
    warning: str | None = None  # why the labels cannot support a calibration (the scores are then ranks), else None

    def summary(self) -> str:
        ap = "n/a (needs 2 positives and 2 negatives)" if self.cv_ap is None else f"{self.cv_ap:.3f}"
        return (
            f"target '{self.head.target}': {self.labels_used} labels used ({self.positives} positive, "
            f"{self.negatives} negative; {self.unsure} unsure left out); cross-validated AP {ap}; "
            f"calibration {self.calibration}; {self.top_changed} of the top {self.top_k} windows changed; "
            f"{self.seconds:.2f} s; head written to {self.path}"
        )

    def warning_line(self) -> str | None:
        """The line `agile fit` prints (and the review page shows) when the labels cannot support a calibration."""
        return None if not self.warning else f"warning: target '{self.head.target}': {self.warning}"


@dataclass(frozen=True)
class RankedWindow:
    row: int
    recording: str
    start: float
    end: float
    score: float  # probability of a fitted head, or the seed cosine
    label: str | None  # the current label of this window for the target, if any


class AgileSession:
    """The agile API over one index. ``model``: None (the index's model, loaded when first needed), a
    model name or folder, or a loaded :class:`~biolingual.BioLingual`; either way it must be the model the
    index was built with."""

    def __init__(self, index_dir: str | os.PathLike, model=None, device=None):
        self.folder = Path(index_dir)
        self.index = load_index(self.folder)
        self.labels = LabelStore(self.folder, index=self.index)
        self.labels.remap(self.index)  # the index may have grown since the labels were given
        self._model_arg, self._device = model, device
        self._model = None
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self._set_model(model)
        self._cache: dict[str, tuple] = {}  # target -> (head file stamp, head, raw scores)

    # ---- the model -----------------------------------------------------------------------------
    def _set_model(self, model) -> None:
        check_model(self.index.meta, model, self.folder)
        self._model = model

    @property
    def model(self):
        """The index's model (or the one given), loaded on first use and checked against the index."""
        if self._model is None:
            from ..loading import load  # here: transformers' start-up, paid only by the commands that embed

            name = self._model_arg or self.index.meta["model"]["name"]
            self._set_model(load(name, device=self._device))
        return self._model

    @property
    def fingerprint(self) -> str:
        return self.index.meta["model"]["fingerprint"]

    # ---- targets -------------------------------------------------------------------------------
    def add_target(self, name: str, prompt: str | None = None, example=None) -> Target:
        """Add (or update) a target: ``prompt`` is embedded as text; ``example`` is a window row of the index
        (int), an audio file, or (waveform, sampling_rate), embedded with the model."""
        text_embedding = example_embedding = description = None
        if prompt is not None:
            prompt = prompt.strip()
            if not prompt:
                raise UsageError("the prompt is empty; describe the sound, e.g. 'The sound of a Barred Owl hooting'")
            text_embedding = self.model.embed_text([prompt]).numpy()[0]
        if example is not None:
            if isinstance(example, (int, np.integer)):
                recording, start, end = self.window(int(example))
                example_embedding = np.asarray(self.index.embeddings[int(example)], np.float32)
                description = f"row {int(example)}: {recording} {start:.1f}-{end:.1f} s"
            elif isinstance(example, tuple):
                wave, rate = example
                example_embedding = self.model.embed_audio(wave, sampling_rate=rate).numpy()[0]
                description = f"uploaded audio ({len(wave) / rate:.1f} s)"
            else:
                example_embedding = self.model.embed_audio(os.fspath(example)).numpy()[0]
                description = f"audio file {os.fspath(example)}"
        return self.labels.add_target(name, prompt, description, text_embedding, example_embedding)

    def targets(self) -> list[Target]:
        return self.labels.targets()

    # ---- labels --------------------------------------------------------------------------------
    def label(self, target: str, row: int, value: str, source: str = "api") -> int:
        return self.labels.label(target, row, value, source)

    def undo(self, target: str, label_id: int | None = None) -> Label | None:
        return self.labels.undo(target, label_id)

    def counts(self, target: str) -> dict[str, int]:
        return self.labels.counts(target)

    def window(self, row: int) -> tuple[str, float, float]:
        """(recording path, start s, end s) of window ``row``."""
        if not 0 <= int(row) < len(self.index):
            raise UsageError(f"row {row} is not a window of the index '{self.folder}' ({len(self.index)} windows)")
        return (
            self.index.files[int(self.index.file_ids[row])],
            float(self.index.starts[row]),
            float(self.index.ends[row]),
        )

    def row_at(self, recording: str | os.PathLike, seconds: float) -> int:
        """The window of ``recording`` (a path, or a file name that only one recording has) that holds the moment
        ``seconds``; with overlapping windows, the one whose middle is nearest."""
        f = recording_lookup(self.index.files)(os.fspath(recording), os.path.basename(os.fspath(recording)))
        if f is None:
            raise UsageError(
                f"recording '{recording}' is not in the index '{self.folder}' (or its name is not unique there)"
            )
        rows = np.flatnonzero(self.index.file_ids == f)
        starts, ends = self.index.starts[rows], self.index.ends[rows]
        inside = (starts <= seconds) & (seconds < ends)
        if not inside.any():
            raise UsageError(
                f"{seconds} s is not within '{recording}' (its windows cover {starts.min():g} to {ends.max():g} s)"
            )
        candidates = rows[inside]
        middle = 0.5 * (self.index.starts[candidates] + self.index.ends[candidates])
        return int(candidates[np.argmin(np.abs(middle - seconds))])

    # ---- heads and scores ----------------------------------------------------------------------
    def head_path(self, target: str) -> Path:
        return self.folder / "agile" / "heads" / f"{slug(target)}.head"

    def rounds(self, target: str) -> int:
        """How many times the target's head has been fitted (0 before the first fit)."""
        return int(self.head(target).fitted.get("round", 0))

    def head(self, target: str) -> Head:
        """The target's fitted head, or its seed head (no labels: ranks as the seed's cosine)."""
        return self._state(target)[1]

    def _seed(self, target: str) -> Head:
        t = self.labels.target(target)
        return seed_head(
            target,
            self.index.embeddings.shape[1],
            t.text_embedding,
            t.example_embedding,
            prompt=t.prompt,
            fingerprint=self.fingerprint,
            model_name=self.index.meta["model"]["name"],
        )

    def _state(self, target: str) -> tuple:
        """(head, raw scores of every window), rescored only when the head file changed."""
        path = self.head_path(target)
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        t = self.labels.target(target)
        key = (stamp, t.prompt, t.example)  # a changed seed changes the seed head
        cached = self._cache.get(target)
        if cached is None or cached[0] != key:
            head = Head.load(path, fingerprint=self.fingerprint) if stamp else self._seed(target)
            cached = (key, head, score_rows(self.index.embeddings, [head])[:, 0])
            self._cache[target] = cached
        return cached

    def raw_scores(self, target: str) -> np.ndarray:
        """Raw head scores of every window (ranking order)."""
        return self._state(target)[2]

    def scores(self, target: str) -> np.ndarray:
        """Per window: probabilities from the fitted head, or the seed cosines before any fit."""
        _, head, raw = self._state(target)
        if head.calibration == "none":
            return raw / head.scale if head.scale else raw
        return head.calibrate(raw)

    def fit(self, target: str, l2: float | None = None) -> FitResult:
        """Fit the target's head on its current labels, save it, rescore every window; with the round's figures.
        ``l2``: the pull toward the seed; None chooses it from the labels (:func:`.head.fit_head`)."""
        t0 = time.perf_counter()
        t = self.labels.target(target)
        labels = self.labels.labels(target)
        k = min(TOP_K, len(self.index))
        _, previous, previous_raw = self._state(target)
        # the previous ranking's top: kept in its head file, or from the scores already held for it (a seed head);
        # never a second pass over the embeddings, which at 1M windows would double the rescoring time
        old_top = previous.top_rows if len(previous.top_rows) else _top(previous_raw, k)
        head = fit_head(
            self.index.embeddings,
            labels,
            t.text_embedding,
            t.example_embedding,
            target=target,
            l2=l2,
            prompt=t.prompt,
            fingerprint=self.fingerprint,
            model_name=self.index.meta["model"]["name"],
        )
        # the round: fits so far, kept in the head file (a restarted page still says which round it is)
        head.fitted["round"] = int(previous.fitted.get("round", 0)) + 1
        raw = score_rows(self.index.embeddings, [head])[:, 0]
        new_top = _top(raw, k)
        head.top_rows = new_top
        path = head.save(self.head_path(target))
        st = path.stat()
        self._cache[target] = (((st.st_mtime_ns, st.st_size), t.prompt, t.example), head, raw)
        return FitResult(
            head,
            path,
            head.fitted["labels_used"],
            head.counts["positive"],
            head.counts["negative"],
            head.counts["unsure"],
            head.fitted["cv_ap"],
            len(set(new_top.tolist()) - set(old_top[:k].tolist())),
            k,
            head.calibration,
            time.perf_counter() - t0,
            head.fitted.get("calibration_note"),
        )

    def propose(self, target: str, n: int = 16, mix=None, seed: int | None = None) -> list[Proposal]:
        """The next ``n`` windows to label (see :func:`.propose.propose`), from the current head's scores; each
        with the score :meth:`scores` gives it (probability, or seed cosine before any fit)."""
        _, head, raw = self._state(target)
        boundary = None
        # the raw score where the calibrated probability crosses 0.5; a rank head's 0.5 is the index's median, not a
        # boundary, so it keeps propose's own guess (the top PRIOR_SHARE of windows) as a seed head does
        if head.calibration not in ("none", "rank"):
            boundary = _boundary(head, raw)
        out = propose(
            raw, self.labels.labels(target).keys(), n, mix or (0.5, 0.375, 0.125), seed=seed, boundary=boundary
        )
        raw_of = np.array([p.score for p in out], np.float32)
        if head.calibration != "none":
            shown = head.calibrate(raw_of)
        else:  # the seed cosine, as scores() gives it
            shown = raw_of / head.scale if head.scale else raw_of
        return [Proposal(p.row, float(q), p.reason) for p, q in zip(out, shown)]

    def ranking(self, target: str, k: int = 50) -> list[RankedWindow]:
        """The ``k`` best windows by the current head (or seed), with their label if they have one."""
        raw = self.raw_scores(target)
        shown = self.scores(target)
        labels = self.labels.labels(target)
        out = []
        for r in _top(raw, min(k, len(raw))):
            recording, start, end = self.window(int(r))
            out.append(RankedWindow(int(r), recording, start, end, float(shown[r]), labels.get(int(r))))
        return out

    # ---- call density --------------------------------------------------------------------------
    def density_path(self, target: str) -> Path:
        return self.folder / "agile" / "density" / f"{slug(target)}.npz"

    def sample_for_density(self, target: str, n_per_bin: int = 8, quantiles=None, seed: int = 0) -> list:
        """Windows to label for a call-density estimate (:mod:`.density`): drawn at random in bins of the current
        scores. The draw (rows, and every window's bin) is saved, so later fits do not change what it measures."""
        raw = self.raw_scores(target)
        samples, edges = sample_for_density(raw, n_per_bin, quantiles or DEFAULT_QUANTILES, seed)
        arrays = dict(
            rows=np.array([x.row for x in samples], np.int64),
            edges=edges,
            bins=assign_bins(raw, edges),
            windows=np.array(len(self.index)),
        )
        atomic_write(self.density_path(target), lambda f: np.savez(f, **arrays))
        return samples

    def estimate_density(self, target: str, confidence: float = 0.95):
        """The call density of ``target`` with its interval, from the labels of the rows
        :meth:`sample_for_density` drew."""
        path = self.density_path(target)
        if not path.is_file():
            raise UsageError(
                f"no density sample for '{target}' yet: draw one with `biolingual agile density-sample` "
                "(AgileSession.sample_for_density) and label its windows"
            )
        with np.load(path) as z:
            rows, edges, bins, windows = z["rows"], z["edges"], z["bins"], int(z["windows"])
        if windows != len(self.index):
            raise UsageError(
                f"the density sample of '{target}' was drawn when the index had {windows} windows, it has "
                f"{len(self.index)} now: draw a new one"
            )
        return estimate_density(bins, edges, self.labels.labels(target), rows, confidence)

    # ---- tables --------------------------------------------------------------------------------
    def export_csv(self, target: str | None, path: str | os.PathLike) -> int:
        return export_labels_csv(self.labels, path, target)

    def export_raven(self, target: str, path: str | os.PathLike) -> int:
        # the index's recordings as the sequence; one gone since keeps the length it had when indexed
        return export_labels_raven(self.labels, path, target, self.index.files, index_durations(self.index))

    def import_raven(
        self,
        table: str | os.PathLike,
        target: str,
        min_overlap: float = 0.5,
        negatives_rest: bool = False,
        recording: str | None = None,
        annotation: str | None = None,
    ) -> dict:
        if target not in {t.name for t in self.labels.targets()}:
            self.labels.add_target(target)  # labels alone (no prompt or example) are a target too
        return import_raven(self.labels, self.index, table, target, min_overlap, negatives_rest, recording, annotation)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest scores, best first (ties by row)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


def _boundary(head: Head, raw: np.ndarray) -> float:
    """The raw score at which ``head`` gives probability 0.5 (bisection: calibrations are non-decreasing)."""
    lo, hi = float(raw.min()), float(raw.max())
    if head.calibrate(np.array([lo]))[0] >= 0.5:
        return lo
    if head.calibrate(np.array([hi]))[0] < 0.5:
        return hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if head.calibrate(np.array([mid]))[0] < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)
