"""The review page: a local web app over one :class:`~biolingual.agile.session.AgileSession`.

In: an open session (an index, its model and its label store) and the security settings (a token, the
host names a tokenless page answers to, the largest request body). Out: an ASGI app (FastAPI) with

    GET  /                      the targets and the form that adds one (name + prompt and/or an example:
                                a window row, or an uploaded clip)
    GET  /review?target=NAME    a batch of proposed windows (spectrogram, audio player, y/n/u buttons),
                                label counts, the current ranking, the last fit's figures, stored labels
    POST /api/label, /api/undo, /api/fit, /api/next    JSON actions of that page
    GET  /api/labels?target=    the stored labels (what a reload shows)
    GET  /export.csv, /export.raven.txt ?target=       label downloads
    GET  /windows/ROW/spectrogram.png, /windows/ROW/audio.wav
    GET  /health

and :class:`ReviewServer`, that app on uvicorn (in a thread for ``--check`` and the tests, or in the
foreground for ``biolingual review``).

Security (the page can play any recording of the index, and writes labels):
- audio and images are looked up by window row, a position in the index; no request names a path, so
  ``../`` and absolute paths have nothing to reach (a row that is not a decimal number in range is 400/404);
- with a token every request carries it (``X-BioLingual-Token`` / ``Authorization: Bearer`` header, or the
  cookie set when a page is first opened with ``?token=``), otherwise 401 (none given) or 403 (wrong);
- without a token the app answers only requests addressed to a loopback name (``Host`` header), so a
  web page elsewhere cannot reach it through DNS rebinding;
- writes (any method but GET, HEAD, OPTIONS) whose ``Origin`` is not the page's own, ``null`` included (a
  sandboxed iframe's), or that the browser marks cross-site (``Sec-Fetch-Site``) are refused (403), and the
  JSON API takes only ``application/json`` bodies (415 otherwise), a type no page elsewhere can send without
  a CORS preflight, which the app never grants; so a web page elsewhere cannot label through the user's browser;
- request bodies (uploaded example clips) over ``max_upload_bytes`` are refused with 413 before they are
  read into memory.

Spectrograms are drawn here (:func:`spectrogram_png`) from the model's own log-mel front end with a
small hand-written colormap and PNG encoder (zlib) instead of matplotlib: the ``agile`` extra then needs
only the web server, and the image shows exactly the features the model embeds.
"""
from __future__ import annotations

import dataclasses
import hmac
import io
import json
import logging
import math
import os
import re
import socket
import struct
import tempfile
import threading
import time
import urllib.request
import zlib
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import numpy as np
import soundfile as sf
import torch

from ..audio import decode, resample, to_mono
from ..errors import AudioError, UsageError
from ..extras import require
from ..search.index import AUDIO_EXTENSIONS
from ..search.stream import read_segment
from .head import one_torch_thread

_PURPOSE = "the review page (biolingual review)"
require("fastapi", "agile", _PURPOSE)
require("jinja2", "agile", _PURPOSE)  # installed with torch; named so a broken install says what is missing

from fastapi import FastAPI, File, Form, Request, UploadFile  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from fastapi.templating import Jinja2Templates  # noqa: E402

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TOKEN_HEADER = "x-biolingual-token"
TOKEN_COOKIE = "biolingual_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
BATCH = 16  # windows per proposed batch
RANKING_K = 20  # rows of the ranking table
VALUES = ("positive", "negative", "unsure")
_ROW = re.compile(r"[0-9]{1,12}")


# ---- spectrogram images --------------------------------------------------------------------------

# viridis at nine evenly spaced points (perceptually uniform, readable in grey and by most colour-blind
# readers); the colours in between are interpolated.
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float32)
DYNAMIC_RANGE_DB = 80.0  # cells more than this below the loudest are drawn as the floor colour


def _colormap(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB through the viridis points above."""
    pos = np.clip(x, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(pos.astype(np.int64), len(_VIRIDIS) - 2)
    frac = (pos - low)[..., None]
    return np.round(_VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 [height, width, 3] -> PNG bytes (8-bit truecolour, no filter: the image is small)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)  # filter byte 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    image = zlib.compress(rows.tobytes(), 1)  # level 1: 8x faster than 6 for 15% more bytes, on a local link
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", image) + chunk(b"IEND", b"")


def spectrogram_png(model, samples: np.ndarray, rate: int, row_scale: int = 2) -> bytes:
    """A window's audio ([frames, channels] or mono at ``rate``) -> its log-mel as a PNG, low pitch at the
    bottom, time left to right, one pixel column per front-end frame; rows repeated ``row_scale`` times so
    64 mel bands are tall enough to read."""
    mono = resample(to_mono(samples) if samples.ndim == 2 else samples, rate, model.sampling_rate)
    with torch.no_grad():
        mel = model.front_end.log_mel(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None])[0]
    db = mel.cpu().numpy().T[::-1]  # [mels, frames], highest band first (the top of the image)
    top = float(db.max())
    rgb = _colormap((db - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB)
    return encode_png(np.repeat(rgb, row_scale, axis=0))


# ---- window audio ---------------------------------------------------------------------------------


class WindowAudioError(Exception):
    """A window's recording is missing or cannot be read; ``status`` is the HTTP answer (404 or 422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def window_samples(path: str, start: float, end: float) -> tuple[np.ndarray, int]:
    """The samples of ``path`` between ``start`` and ``end`` s at the file's rate ([frames, channels]).

    Seeks with :func:`read_segment` where libsndfile reads the file; other formats (mp3, m4a ... which
    the index reads through PyAV) are decoded whole by the one audio loader and cut."""
    if not os.path.isfile(path):
        raise WindowAudioError(404, f"recording '{path}' is missing (moved or deleted since it was indexed)")
    try:
        samples, rate = read_segment(path, start, end)
    except (sf.LibsndfileError, RuntimeError):
        try:
            whole, rate = decode(path)
        except (AudioError, OSError, RuntimeError, ValueError) as e:
            raise WindowAudioError(422, f"recording '{path}' cannot be read: {e}") from e
        whole = np.atleast_2d(whole).T  # decode gives [channels, samples]; the page works in [samples, channels]
        samples = whole[int(round(start * rate)): int(round(end * rate))]
    if len(samples) == 0:
        raise WindowAudioError(422, f"recording '{path}' has no audio between {start:.2f} and {end:.2f} s "
                                    "(shorter than when it was indexed?)")
    if not np.isfinite(samples).all():
        raise WindowAudioError(422, f"recording '{path}' holds non-finite samples between {start:.2f} and {end:.2f} s")
    return samples, rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---- security layer (plain ASGI, so it guards every route, static files included) -----------------


def _hostname(host_header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'localhost' -> 'localhost'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _foreign_write(headers: dict, host: str) -> str | None:
    """Why a state-changing request did not come from the page itself, or None when nothing says it did not.

    ``Origin`` must be this page's own (http or https, the ``Host`` it was sent to). ``Origin: null`` is refused
    too: browsers send it from sandboxed iframes, ``file:`` pages and data: URLs, i.e. from any page that wants
    to hide where it is, so it proves nothing. A request without ``Origin`` (curl, scripts, the tests) passes,
    unless the browser's ``Sec-Fetch-Site`` says it came from another site."""
    origin = headers.get("origin")
    if origin is not None:
        scheme, sep, rest = origin.strip().partition("://")
        if not sep or scheme.lower() not in ("http", "https") or rest.lower() != host.strip().lower():
            return f"Origin {origin[:100]!r} is not this page's"
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site {site[:40]!r}"
    return None


class Guard:
    """Token, Host, Origin and body-size checks in front of ``app`` (see the module docstring)."""

    def __init__(self, app, token: str | None, allowed_hosts: tuple[str, ...] | None, max_body: int):
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # the page uses no websockets: none is let past the checks below
            return await send({"type": "websocket.close", "code": 1008})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._too_large()(scope, receive, send)
        received = 0
        started = refused = False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body and not started:  # a chunked body with no length announced
                    # answer 413 here, and tell the app the client left: raising instead would reach the
                    # app's form parser, which turns any error into its own 400
                    refused = True
                    await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if refused:
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, tracked_send)

    def _too_large(self) -> Response:
        return PlainTextResponse(f"request body over the limit of {self.max_body / 2**20:g} MB", status_code=413)

    def _refusal(self, scope, headers: dict) -> Response | None:
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            names = ", ".join(sorted(self.allowed_hosts))
            return PlainTextResponse(f"this page answers only at {names}", status_code=400)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            foreign = _foreign_write(headers, host)
            if foreign is not None:
                return PlainTextResponse(f"cross-origin writes are refused ({foreign})", status_code=403)
        if not self.token:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query and scope["method"] in ("GET", "HEAD"):
            if not hmac.compare_digest(query["token"][0].encode(), self.token.encode()):
                return PlainTextResponse("wrong token", status_code=403)
            # first visit with ?token=: keep it in a cookie and drop it from the address bar and history
            rest = {k: v for k, v in query.items() if k != "token"}
            target = scope["path"] + ("?" + urlencode(rest, doseq=True) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return response
        given = headers.get(TOKEN_HEADER)
        if given is None and headers.get("authorization", "").lower().startswith("bearer "):
            given = headers["authorization"][7:].strip()
        if given is None and "cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers["cookie"])
            except Exception:  # a malformed cookie header is the same as none
                cookie = SimpleCookie()
            if TOKEN_COOKIE in cookie:
                given = cookie[TOKEN_COOKIE].value
        if given is None:
            return PlainTextResponse("this page needs its token: open the address `biolingual review` printed "
                                     "(it ends in ?token=...), or send the X-BioLingual-Token header", status_code=401)
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse("wrong token", status_code=403)
        return None


# ---- the app ----------------------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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


_SKIP = object()


def fit_figures(result) -> dict:
    """The round's figures of a FitResult: its scalar fields (and dicts of them), in field order."""
    # not dataclasses.asdict: it would deep-copy the head's arrays only to drop them
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)} if dataclasses.is_dataclass(result) \
        else dict(vars(result))
    out = {}
    for name, value in fields.items():
        if name.startswith("_"):
            continue
        plain = _plain(value)
        if plain is not _SKIP:
            out[name] = plain
    return out


def slug(name: str) -> str:
    """A target name as a file name for downloads."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "target"


class _State:
    """What the page keeps between requests beyond the label store: the batch shown per target (so a
    reload shows the same windows with their stored labels) and the last fit's figures."""

    def __init__(self):
        self.batches: dict[str, list] = {}
        self.fits: dict[str, dict] = {}
        # the model and the fitted heads are used by one request at a time; labels go straight to the
        # store, which takes concurrent writers itself
        self.model_lock = threading.RLock()


def create_app(session, token: str | None = None, allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, batch_size: int = BATCH):
    """The review app over ``session`` (an :class:`~biolingual.agile.session.AgileSession`).

    ``token``: required on every request when given. ``allowed_hosts``: host names the app answers to
    (None: any; :func:`serve` passes None only with a token). ``max_upload_bytes``: the largest request body.
    """
    api = FastAPI(title="BioLingual review", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    api.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    state = _State()
    index = session.index
    n_windows = len(index)

    def target_or_none(name: str | None):
        if not name or not isinstance(name, str):
            return None
        try:
            return session.labels.target(name)
        except UsageError:  # no such target
            return None

    def window_info(row: int) -> dict:
        path, start, end = session.window(row)
        return {"row": row, "recording": str(path), "file": Path(path).name, "start": float(start), "end": float(end)}

    def parse_row(text: str) -> int | Response:
        if not _ROW.fullmatch(text):
            return _error(400, f"a window is named by its row number (0 to {n_windows - 1}), not '{text[:80]}'")
        row = int(text)
        if row >= n_windows:
            return _error(404, f"no window {row}: the index has {n_windows} windows (0 to {n_windows - 1})")
        return row

    def batch(name: str) -> list:
        with state.model_lock:
            if name not in state.batches:
                seed = sum(session.counts(name).values())  # the same labels give the same batch after a restart
                state.batches[name] = list(session.propose(name, n=batch_size, seed=seed))
            return state.batches[name]

    @api.get("/health")
    def health():
        return {"status": "ok", "windows": n_windows}

    @api.get("/", response_class=HTMLResponse)
    def home(request: Request):
        return _home(request)

    def _home(request: Request, error: str | None = None, status: int = 200, form: dict | None = None):
        targets = [{"target": t, "counts": session.counts(t.name)} for t in session.labels.targets()]
        return templates.TemplateResponse(request, "home.html", {
            "targets": targets, "windows": n_windows, "index": str(index.folder), "error": error,
            "form": form or {}, "max_upload_mb": max_upload_bytes / 2**20, "quote": quote,
        }, status_code=status)

    @api.post("/targets")
    def add_target(request: Request, name: str = Form(...), prompt: str = Form(""), example_row: str = Form(""),
                   example_file: UploadFile | None = File(None)):
        name, prompt, example_row = name.strip(), prompt.strip(), example_row.strip()
        form = {"name": name, "prompt": prompt, "example_row": example_row}
        if not name:
            return _home(request, "give the target a name", 400, form)
        go = RedirectResponse(f"/review?target={quote(name, safe='')}", status_code=303)
        if target_or_none(name) is not None:
            return go  # an existing target: open it
        uploaded = example_file is not None and bool(example_file.filename)
        if example_row and uploaded:
            return _home(request, "give one example: a window row or a clip, not both", 400, form)
        example = None
        if example_row:
            row = parse_row(example_row)
            if isinstance(row, Response):
                return _home(request, json.loads(row.body)["error"], row.status_code, form)
            example = row
        if not prompt and example is None and not uploaded:
            return _home(request, "give a prompt, an example window or an example clip", 400, form)
        try:
            if uploaded:  # decoded here, so the target records "uploaded audio", not a temporary file's path
                with tempfile.TemporaryDirectory(prefix="biolingual-review-") as tmp:
                    suffix = Path(example_file.filename).suffix.lower()
                    path = Path(tmp) / ("example" + (suffix if suffix in AUDIO_EXTENSIONS else ".audio"))
                    with open(path, "wb") as f:
                        while chunk := example_file.file.read(1 << 20):
                            f.write(chunk)
                    samples, rate = decode(path)
                example = (to_mono(samples, example_file.filename), rate)
            with state.model_lock:
                session.add_target(name, prompt=prompt or None, example=example)
        except (AudioError, ValueError, OSError, RuntimeError) as e:
            log.warning("target %r not added: %s", name, e)
            what = f"the clip '{example_file.filename}'" if uploaded else "the target"
            return _home(request, f"{what} could not be used: {e}", 400, form)
        return go

    @api.get("/review", response_class=HTMLResponse)
    def review(request: Request, target: str = ""):
        t = target_or_none(target)
        if t is None:
            return _home(request, f"no target named '{target}': add it here", 404)
        proposals = batch(t.name)
        current = session.labels.labels(t.name)
        with state.model_lock:
            ranking = session.ranking(t.name, k=RANKING_K)
            scores = session.scores(t.name)  # the ranking's scale (probability, or seed cosine) on every card too
        cards = [{**window_info(p.row), "score": float(scores[p.row]), "reason": p.reason, "label": current.get(p.row)}
                 for p in proposals]
        labelled = [{**window_info(row), "label": value} for row, value in sorted(current.items())]
        return templates.TemplateResponse(request, "review.html", {
            "target": t, "cards": cards, "counts": session.counts(t.name), "ranking": ranking,
            "fit": state.fits.get(t.name), "labelled": labelled, "windows": n_windows, "index": str(index.folder),
            "quote": quote, "Path": Path,
        })

    async def body(request: Request) -> dict | Response:
        # JSON only when sent as JSON: a text/plain (or form) POST is a "simple" request a browser sends cross-site
        # without a CORS preflight, so accepting any type let a foreign page write; application/json needs the
        # preflight, which this app never answers
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return _error(415, f"send the body as application/json, not '{media[:80] or 'no Content-Type'}'")
        try:
            data = await request.json()
        except ValueError:
            return _error(400, "send a JSON object")
        if not isinstance(data, dict):
            return _error(400, "send a JSON object")
        t = target_or_none(data.get("target"))
        if t is None:
            return _error(404, f"no target named '{data.get('target')}'")
        return data

    async def on_target(request: Request, work) -> dict | Response:
        """A POST whose body only names a target: the error response for a bad body, else ``work(target)`` in a
        worker thread (it takes the model lock or writes the label store)."""
        data = await body(request)
        if isinstance(data, Response):
            return data
        return await _in_thread(work, data["target"])

    @api.post("/api/label")
    async def label(request: Request):
        data = await body(request)
        if isinstance(data, Response):
            return data
        row = parse_row(str(data.get("row", "")))
        if isinstance(row, Response):
            return row
        value = data.get("value")
        if value not in VALUES:
            return _error(400, f"value must be one of {', '.join(VALUES)}, not '{value}'")
        return await _in_thread(_label, data["target"], row, value)

    def _label(target: str, row: int, value: str) -> dict:
        label_id = session.label(target, row, value, source="page")
        return {"id": int(label_id), "row": row, "value": value, "counts": session.counts(target)}

    @api.post("/api/undo")
    async def undo(request: Request):
        return await on_target(request, _undo)

    def _undo(target: str) -> dict:
        undone = session.undo(target)
        out = {"undone": None, "counts": session.counts(target)}
        if undone is not None:
            row = int(undone.row)
            out["undone"] = {"row": row, "value": undone.value, "now": session.labels.labels(target).get(row)}
        return out

    @api.post("/api/fit")
    async def fit(request: Request):
        return await on_target(request, _fit)

    def _fit(target: str) -> Response | dict:
        try:
            with state.model_lock:
                result = session.fit(target)
                state.fits[target] = fit_figures(result)
                state.batches.pop(target, None)  # the next batch comes from the new head
                ranking = session.ranking(target, k=RANKING_K)
        except ValueError as e:  # e.g. nothing to fit on yet
            return _error(400, str(e))
        return {"figures": state.fits[target], "ranking": [_ranked(r) for r in ranking]}

    @api.post("/api/next")
    async def next_batch(request: Request):
        data = await body(request)
        if isinstance(data, Response):
            return data
        with state.model_lock:
            state.batches.pop(data["target"], None)
        return {"ok": True}

    @api.get("/api/labels")
    def labels(target: str = ""):
        if target_or_none(target) is None:
            return _error(404, f"no target named '{target}'")
        current = session.labels.labels(target)
        return {"labels": {str(r): v for r, v in sorted(current.items())}, "counts": session.counts(target)}

    def export(target: str, kind: str) -> Response:
        t = target_or_none(target)
        if t is None:
            return _error(404, f"no target named '{target}'")
        with tempfile.TemporaryDirectory(prefix="biolingual-export-") as tmp:
            if kind == "csv":
                path, media, name = Path(tmp) / "labels.csv", "text/csv", f"{slug(t.name)}-labels.csv"
                session.export_csv(t.name, path)
            else:
                path, media, name = Path(tmp) / "labels.txt", "text/plain", f"{slug(t.name)}.Table.1.selections.txt"
                session.export_raven(t.name, path)
            content = path.read_bytes()
        return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @api.get("/export.csv")
    def export_csv(target: str = ""):
        return export(target, "csv")

    @api.get("/export.raven.txt")
    def export_raven(target: str = ""):
        return export(target, "raven")

    def cut(row_text: str) -> tuple[np.ndarray, int] | Response:
        row = parse_row(row_text)
        if isinstance(row, Response):
            return row
        path, start, end = session.window(row)
        try:
            return window_samples(str(path), float(start), float(end))
        except WindowAudioError as e:
            log.warning("window %d: %s", row, e)
            return _error(e.status, f"window {row}: {e}")

    @api.get("/windows/{row}/audio.wav")
    def audio(row: str):
        got = cut(row)
        if isinstance(got, Response):
            return got
        return Response(wav_bytes(*got), media_type="audio/wav", headers={"Cache-Control": "no-cache"})

    @api.get("/windows/{row}/spectrogram.png")
    def spectrogram(row: str):
        got = cut(row)
        if isinstance(got, Response):
            return got
        # one thread: held under the app's model lock, so no other request's torch work runs meanwhile, and
        # requests already run in parallel threads
        with state.model_lock, one_torch_thread():
            png = spectrogram_png(session.model, *got)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    return Guard(api, token, allowed_hosts, max_upload_bytes)


def _ranked(r) -> dict:
    return {"row": int(r.row), "recording": str(r.recording), "start": float(r.start), "end": float(r.end),
            "score": float(r.score), "label": r.label}


async def _in_thread(fn, *args):
    """Run a blocking call (SQLite, the model) off the event loop, as FastAPI does for plain ``def`` routes."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


# ---- serving ----------------------------------------------------------------------------------------


class ReviewServer:
    """An app served by uvicorn on ``host``:``port`` (0: a free port, read back from the bound socket).

    ``start()`` serves in a background thread and returns once the socket listens; ``run()`` serves in
    the foreground until Ctrl-C; ``stop()`` ends a started server."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8765):
        uvicorn = require("uvicorn", "agile", _PURPOSE)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host.strip("[]"), port))
            self.socket.listen(2048)  # from here on connections queue until uvicorn accepts them
        except OSError as e:
            self.socket.close()
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self.host = host
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> "ReviewServer":
        self._thread = threading.Thread(target=self.run, name="biolingual-review", daemon=True)
        self._thread.start()
        while not self.server.started:  # uvicorn sets it once the socket is served
            if not self._thread.is_alive():
                raise RuntimeError("the review server stopped while starting")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.socket.close()

    def __enter__(self) -> "ReviewServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(index_dir, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, model=None,
          device=None, max_upload_bytes: int = MAX_UPLOAD_BYTES, check: bool = False) -> int:
    """Open ``index_dir`` in an :class:`~biolingual.agile.session.AgileSession` and serve its review page.

    A bind beyond this machine without a token raises UsageError (the CLI: exit 1) before
    anything is loaded. ``check``: start, answer one /health request, stop (a smoke test that exits).
    Prints the address to open (with ``?token=`` when there is one)."""
    from .review_cli import refuse_open_bind
    from .session import AgileSession

    refuse_open_bind(host, token)

    session = AgileSession(index_dir, model=model, device=device)
    app = create_app(session, token=token, allowed_hosts=None if token else LOOPBACK_NAMES + (host,),
                     max_upload_bytes=max_upload_bytes)
    server = ReviewServer(app, host, port)
    address = server.url + "/" + (f"?token={quote(token, safe='')}" if token else "")
    if check:
        with server:
            request = urllib.request.Request(server.url + "/health", headers={TOKEN_HEADER: token} if token else {})
            with urllib.request.urlopen(request, timeout=30) as response:
                health = json.load(response)
        print(f"review page answered at {server.url}: {health['windows']} windows", flush=True)
        return 0
    print(f"serving the review page of {index_dir} at {address} (Ctrl-C stops)", flush=True)
    server.run()
    return 0
