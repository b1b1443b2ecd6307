"""The review page's routes, on an ``APIRouter``: pages, the JSON API, downloads, window audio and images.

Each route gets the page (:class:`Page`: the session, what is kept between requests, the templates and
the settings) through the :func:`page` dependency, and reports a bad request by raising
``HTTPException``, which the app renders as ``{"error": message}`` (:func:`biolingual.agile.app.create_app`).
The HTML form routes answer mistakes with the home page and the message instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from ..audio import decode, to_mono
from ..errors import AudioError, UsageError
from ..search.recordings import recordings_of
from ..vocabulary import AUDIO_EXTENSIONS, slug
from .cards import display_names, site_and_clock, split_name, window_scores
from .clips import WindowAudioError, wav_bytes, window_samples
from .head import one_torch_thread
from .images import band_rows, frequency_axis, spectrogram_png

log = logging.getLogger("biolingual.agile.app")

RANKING_K = 20  # rows of the ranking table
VALUES = ("positive", "negative", "unsure")
_ROW = re.compile(r"[0-9]{1,12}")

router = APIRouter()


@dataclasses.dataclass
class Page:
    """What the routes share: the session and what the page keeps between requests beyond the label store
    (the batch shown per target, so a reload shows the same windows with their stored labels, and the last
    fit's figures)."""

    session: object  # an AgileSession
    templates: Jinja2Templates
    batch_size: int
    max_upload_bytes: int
    batches: dict = dataclasses.field(default_factory=dict)
    fits: dict = dataclasses.field(default_factory=dict)
    # the model and the fitted heads are used by one request at a time; labels go straight to the store,
    # which takes concurrent writers itself
    model_lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    @property
    def windows(self) -> int:
        return len(self.session.index)

    @property
    def names(self) -> list[str]:
        """Each recording's name as the page shows it (:func:`.cards.display_names`), by file id."""
        names = getattr(self, "_names", None)
        if names is None:
            names = self._names = display_names(list(self.session.index.files))
        return names

    @property
    def recordings(self) -> list:
        """Each recording's site, place and start time (:class:`~biolingual.deployments.RecordingInfo`, or None),
        by file id: from ``recordings.json`` beside the index (``biolingual index --deployments``), completed
        there for recordings it lacks, as search and detect do. A table that cannot be read leaves the cards
        with the recordings' names (logged), never the page without cards."""
        infos = getattr(self, "_recordings", None)
        if infos is None:
            files = list(self.session.index.files)
            try:
                known = recordings_of(self.session.index.folder, files)
            except (OSError, ValueError) as e:  # a table that cannot be read (DeploymentsError), a read-only index
                log.warning("the cards show recording names, not sites and clock times: %s", e)
                known = {}
            infos = self._recordings = [known.get(f) for f in files]
        return infos

    def target(self, name) -> object | None:
        """The target called ``name``, or None (no name, not text, or no such target)."""
        if not name or not isinstance(name, str):
            return None
        try:
            return self.session.labels.target(name)
        except UsageError:
            return None

    def known_target(self, name) -> object:
        t = self.target(name)
        if t is None:
            raise HTTPException(404, f"no target named '{name}'")
        return t

    def row(self, text: str) -> int:
        """A window row from a request (400 if not a number, 404 if not in the index)."""
        n = self.windows
        if not _ROW.fullmatch(text):
            raise HTTPException(400, f"a window is named by its row number (0 to {n - 1}), not '{text[:80]}'")
        row = int(text)
        if row >= n:
            raise HTTPException(404, f"no window {row}: the index has {n} windows (0 to {n - 1})")
        return row

    def window_info(self, row: int) -> dict:
        """A window as the page names it: ``recording`` is its relative name, ``path`` where it is stored,
        ``where`` its site and clock time (None where the recording's start time is not known)."""
        path, start, end = self.session.window(row)
        file_id = int(self.session.index.file_ids[row])
        return {
            "row": row,
            "recording": self.names[file_id],
            "where": site_and_clock(self.recordings[file_id], float(start)),
            "path": str(path),
            "file": Path(path).name,
            "start": float(start),
            "end": float(end),
        }

    def band(self, fmin: str | None, fmax: str | None) -> tuple[int, int]:
        """The mel rows of a frequency band from a request's ``fmin``/``fmax`` (kHz; 400 saying what is wrong)."""
        try:
            return band_rows(self.session.model.front_end.config, fmin, fmax)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    def state(self, target: str, rows=()) -> dict:
        """What the page shows besides the cards, after any action: progress (windows reviewed, labels per class,
        the round = fits so far), every stored label, the ranking with its labels, and the scores of ``rows``
        (the cards shown) by the current head."""
        current = self.session.labels.labels(target)
        counts = self.session.counts(target)
        with self.model_lock:
            ranking = self.session.ranking(target, k=RANKING_K)
            scores = window_scores(self.session, target, [r.row for r in ranking] + [int(r) for r in rows])
            rounds = self.session.rounds(target)
        return {
            "counts": counts,
            "progress": {"reviewed": len(current), "windows": self.windows, "round": rounds, "counts": counts},
            "labelled": [{**self.window_info(row), "label": value} for row, value in sorted(current.items())],
            # a ranking row's rank is its place in the table (windows with equal scores share a rank on the cards)
            "ranking": [
                {
                    **self.window_info(int(r.row)),
                    **scores[int(r.row)],
                    "rank": i + 1,
                    "score": float(r.score),
                    "label": r.label,
                }
                for i, r in enumerate(ranking)
            ],
            "scores": {str(int(r)): scores[int(r)] for r in rows},
        }

    def batch(self, name: str) -> list:
        with self.model_lock:
            if name not in self.batches:
                seed = sum(self.session.counts(name).values())  # the same labels give the same batch after a restart
                self.batches[name] = list(self.session.propose(name, n=self.batch_size, seed=seed))
            return self.batches[name]

    def cut(self, row_text: str) -> tuple[np.ndarray, int]:
        row = self.row(row_text)
        path, start, end = self.session.window(row)
        try:
            return window_samples(str(path), float(start), float(end))
        except WindowAudioError as e:
            log.warning("window %d: %s", row, e)
            raise HTTPException(e.status, f"window {row}: {e}") from None


def page(request: Request) -> Page:
    """The dependency that hands each route its app's :class:`Page`."""
    return request.app.state.page


def _home(request: Request, p: Page, error: str | None = None, status: int = 200, form: dict | None = None):
    targets = [{"target": t, "counts": p.session.counts(t.name)} for t in p.session.labels.targets()]
    return p.templates.TemplateResponse(
        request,
        "home.html",
        {
            "targets": targets,
            "windows": p.windows,
            "index": str(p.session.index.folder),
            "error": error,
            "form": form or {},
            "max_upload_mb": p.max_upload_bytes / 2**20,
            "quote": quote,
        },
        status_code=status,
    )


async def json_body(request: Request, p: Page = Depends(page)) -> dict:
    """A JSON API request's body: a JSON object naming a known target (415/400/404 otherwise).

    JSON only when sent as JSON: a text/plain (or form) POST is a "simple" request a browser sends
    cross-site without a CORS preflight, so accepting any type let a foreign page write;
    application/json needs the preflight, which this app never answers."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HTTPException(415, f"send the body as application/json, not '{media[:80] or 'no Content-Type'}'")
    try:
        data = await request.json()
    except ValueError:
        raise HTTPException(400, "send a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "send a JSON object")
    p.known_target(data.get("target"))
    return data


# ---- pages ------------------------------------------------------------------------------------------


@router.get("/health")
def health(p: Page = Depends(page)):
    return {"status": "ok", "windows": p.windows}


@router.get("/", response_class=HTMLResponse)
def home(request: Request, p: Page = Depends(page)):
    return _home(request, p)


@router.post("/targets")
def add_target(
    request: Request,
    name: str = Form(...),
    prompt: str = Form(""),
    example_row: str = Form(""),
    example_file: UploadFile | None = File(None),
    p: Page = Depends(page),
):
    name, prompt, example_row = name.strip(), prompt.strip(), example_row.strip()
    form = {"name": name, "prompt": prompt, "example_row": example_row}
    if not name:
        return _home(request, p, "give the target a name", 400, form)
    go = RedirectResponse(f"/review?target={quote(name, safe='')}", status_code=303)
    if p.target(name) is not None:
        return go  # an existing target: open it
    uploaded = example_file is not None and bool(example_file.filename)
    if example_row and uploaded:
        return _home(request, p, "give one example: a window row or a clip, not both", 400, form)
    try:
        example = p.row(example_row) if example_row else None
    except HTTPException as e:
        return _home(request, p, e.detail, e.status_code, form)
    if not prompt and example is None and not uploaded:
        return _home(request, p, "give a prompt, an example window or an example clip", 400, form)
    try:
        if uploaded:
            example = _uploaded_example(example_file)
        with p.model_lock:
            p.session.add_target(name, prompt=prompt or None, example=example)
    except (AudioError, ValueError, OSError, RuntimeError) as e:
        log.warning("target %r not added: %s", name, e)
        what = f"the clip '{example_file.filename}'" if uploaded else "the target"
        return _home(request, p, f"{what} could not be used: {e}", 400, form)
    return go


def _uploaded_example(upload: UploadFile) -> tuple[np.ndarray, int]:
    """An uploaded clip as (mono samples, rate); decoded here, so the target records "uploaded audio", not
    a temporary file's path."""
    with tempfile.TemporaryDirectory(prefix="biolingual-review-") as tmp:
        suffix = Path(upload.filename).suffix.lower()
        path = Path(tmp) / ("example" + (suffix if suffix in AUDIO_EXTENSIONS else ".audio"))
        with open(path, "wb") as f:
            while chunk := upload.file.read(1 << 20):
                f.write(chunk)
        samples, rate = decode(path)
    return to_mono(samples, upload.filename), rate


@router.get("/review", response_class=HTMLResponse)
def review(request: Request, target: str = "", p: Page = Depends(page)):
    t = p.target(target)
    if t is None:
        return _home(request, p, f"no target named '{target}': add it here", 404)
    proposals = p.batch(t.name)
    current = p.session.labels.labels(t.name)
    state = p.state(t.name, [w.row for w in proposals])
    cards = []
    for w in proposals:
        info = p.window_info(w.row)
        cards.append(
            {
                **info,
                **state["scores"][str(w.row)],
                "name": split_name(info["recording"]),
                "reason": w.reason,
                "label": current.get(w.row),
            }
        )
    # the ranking, the labelled list and the progress are drawn by the page's script from this state, the same
    # way as after each label, undo and fit (one renderer, so the two cannot drift apart)
    return p.templates.TemplateResponse(
        request,
        "review.html",
        {
            "target": t,
            "cards": cards,
            "counts": state["counts"],
            "progress": state["progress"],
            "state": state,
            "fit": p.fits.get(t.name),
            "windows": p.windows,
            "index": str(p.session.index.folder),
            "quote": quote,
        },
    )


# ---- the JSON API (blocking work, SQLite and the model, runs off the event loop) ---------------------


@router.post("/api/label")
async def label(data: dict = Depends(json_body), p: Page = Depends(page)):
    row = p.row(str(data.get("row", "")))
    value = data.get("value")
    if value not in VALUES:
        raise HTTPException(400, f"value must be one of {', '.join(VALUES)}, not '{value}'")

    def work() -> dict:
        label_id = p.session.label(data["target"], row, value, source="page")
        return {"id": int(label_id), "row": row, "value": value, **p.state(data["target"])}

    return await run_in_threadpool(work)


@router.post("/api/undo")
async def undo(data: dict = Depends(json_body), p: Page = Depends(page)):
    def work() -> dict:
        target = data["target"]
        undone = p.session.undo(target)
        out = {"undone": None, **p.state(target)}
        if undone is not None:
            row = int(undone.row)
            out["undone"] = {"row": row, "value": undone.value, "now": p.session.labels.labels(target).get(row)}
        return out

    return await run_in_threadpool(work)


@router.post("/api/fit")
async def fit(data: dict = Depends(json_body), p: Page = Depends(page)):
    rows = data.get("rows") or []  # the cards the page shows, rescored by the new head
    if not isinstance(rows, list) or len(rows) > 1000:
        raise HTTPException(400, "rows is a list of the window rows shown (at most 1000)")
    rows = [p.row(str(r)) for r in rows]

    def work() -> dict:
        target = data["target"]
        try:
            with p.model_lock:
                result = p.session.fit(target)
                p.fits[target] = fit_figures(result)
                p.batches.pop(target, None)  # the next batch comes from the new head
        except ValueError as e:  # e.g. nothing to fit on yet
            raise HTTPException(400, str(e)) from None
        return {"figures": p.fits[target], **p.state(target, rows)}

    return await run_in_threadpool(work)


@router.post("/api/next")
async def next_batch(data: dict = Depends(json_body), p: Page = Depends(page)):
    with p.model_lock:
        p.batches.pop(data["target"], None)
    return {"ok": True}


@router.get("/api/labels")
def labels(target: str = "", p: Page = Depends(page)):
    p.known_target(target)
    current = p.session.labels.labels(target)
    return {"labels": {str(r): v for r, v in sorted(current.items())}, **p.state(target)}


@router.get("/api/frequency-axis")
def frequency_axis_of(fmin: str | None = None, fmax: str | None = None, p: Page = Depends(page)):
    """The spectrogram's frequency axis for a band (the same ``fmin``/``fmax`` as the image): edges and ticks."""
    return frequency_axis(p.session.model.front_end.config, p.band(fmin, fmax))


# ---- downloads, window audio and images -------------------------------------------------------------


def _export(p: Page, target: str, kind: str) -> Response:
    t = p.known_target(target)
    with tempfile.TemporaryDirectory(prefix="biolingual-export-") as tmp:
        if kind == "csv":
            path, media, name = Path(tmp) / "labels.csv", "text/csv", f"{slug(t.name)}-labels.csv"
            p.session.export_csv(t.name, path)
        else:
            path, media, name = Path(tmp) / "labels.txt", "text/plain", f"{slug(t.name)}.Table.1.selections.txt"
            p.session.export_raven(t.name, path)
        content = path.read_bytes()
    return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/export.csv")
def export_csv(target: str = "", p: Page = Depends(page)):
    return _export(p, target, "csv")


@router.get("/export.raven.txt")
def export_raven(target: str = "", p: Page = Depends(page)):
    return _export(p, target, "raven")


@router.get("/windows/{row}/audio.wav")
def audio(row: str, p: Page = Depends(page)):
    return Response(wav_bytes(*p.cut(row)), media_type="audio/wav", headers={"Cache-Control": "no-cache"})


@router.get("/windows/{row}/spectrogram.png")
def spectrogram(row: str, fmin: str | None = None, fmax: str | None = None, p: Page = Depends(page)):
    """The window's log-mel; ``fmin``/``fmax`` (kHz) keep only the mel rows of that band, drawn full height."""
    rows = p.band(fmin, fmax) if fmin or fmax else None
    samples = p.cut(row)
    # one thread: held under the page's model lock, so no other request's torch work runs meanwhile, and
    # requests already run in parallel threads
    with p.model_lock, one_torch_thread():
        png = spectrogram_png(p.session.model, *samples, rows=rows)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


# ---- what the API returns -----------------------------------------------------------------------------


_SKIP = object()


def _plain(value):
    """A FitResult field -> something JSON and the page can show (numbers rounded, arrays/heads left out)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if _plain(v) is not _SKIP}
    return _SKIP


def fit_figures(result) -> dict:
    """The round's figures of a FitResult: its scalar fields (and dicts of them), in field order."""
    # not dataclasses.asdict: it would deep-copy the head's arrays only to drop them
    fields = (
        {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        if dataclasses.is_dataclass(result)
        else dict(vars(result))
    )
    out = {}
    for name, value in fields.items():
        if name.startswith("_"):
            continue
        plain = _plain(value)
        if plain is not _SKIP:
            out[name] = plain
    return out
