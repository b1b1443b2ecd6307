"""The review page: a local web app over one :class:`~biolingual.agile.session.AgileSession`.

In: an open session (an index, its model and its label store) and the security settings (a token, the
host names a tokenless page answers to, the largest request body). Out: an ASGI app (FastAPI) with

    GET  /                      the targets and the form that adds one (name + prompt and/or an example:
                                a window row, or an uploaded clip)
    GET  /review?target=NAME    a batch of proposed windows (full recording name, rank, cosine and any
                                probability, spectrogram, audio player, y/n/u buttons), the focused window
                                enlarged with its axes, progress, the ranking, the last fit's figures, labels
    POST /api/label, /api/undo, /api/fit, /api/next    JSON actions of that page; label, undo and fit answer
                                with the page's state (counts, progress, labelled list, ranking; fit also the
                                figures and the new scores of the rows it is sent), so nothing waits for a reload
    GET  /api/labels?target=    the stored labels and the same state
    GET  /api/frequency-axis?fmin=&fmax=               the spectrogram's kHz ticks for a band
    GET  /export.csv, /export.raven.txt ?target=       label downloads
    GET  /windows/ROW/spectrogram.png[?fmin=&fmax=], /windows/ROW/audio.wav
    GET  /health

The app is put together here from its parts: the routes (:mod:`.routes`, an ``APIRouter``), the security
layer (:mod:`.guard`), spectrogram images (:mod:`.images`) and window audio (:mod:`.clips`);
:mod:`.server` serves it with uvicorn (:class:`~biolingual.agile.server.ReviewServer`, in a thread for
``--check`` and the tests, or in the foreground for ``biolingual review``).

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
"""

from __future__ import annotations

from pathlib import Path

from ..extras import require

PURPOSE = "the review page (biolingual review)"
require("fastapi", "agile", PURPOSE)
require("jinja2", "agile", PURPOSE)  # installed with torch; named so a broken install says what is missing

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .guard import Guard
from .hosts import LOOPBACK_NAMES
from .routes import Page, router

HERE = Path(__file__).resolve().parent
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
BATCH = 16  # windows per proposed batch


def create_app(
    session,
    token: str | None = None,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    batch_size: int = BATCH,
):
    """The review app over ``session`` (an :class:`~biolingual.agile.session.AgileSession`), behind its guard.

    ``token``: required on every request when given. ``allowed_hosts``: host names the app answers to
    (None: any; :func:`~biolingual.agile.server.serve` passes None only with a token). ``max_upload_bytes``:
    the largest request body.
    """
    api = FastAPI(title="BioLingual review", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.page = Page(session, Jinja2Templates(directory=str(HERE / "templates")), batch_size, max_upload_bytes)
    api.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    api.include_router(router)

    @api.exception_handler(HTTPException)
    async def error(request: Request, e: HTTPException) -> JSONResponse:
        # the page's scripts read {"error": message}, FastAPI's default would be {"detail": ...}
        return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=getattr(e, "headers", None))

    return Guard(api, token, allowed_hosts, max_upload_bytes)
