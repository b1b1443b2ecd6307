"""A polite HTTP client for the archives: a request rate per source, retries with exponential backoff
on 429/5xx/timeouts/broken transfers (honouring ``Retry-After``), a User-Agent naming the project,
size-limited streaming downloads, a total deadline per request, and secrets (API keys) redacted from
every error message (:func:`redact`, also used for the captioner's errors).

``timeout`` bounds each wait for the server (connecting, each read); ``deadline`` bounds a whole
attempt (connect, headers and body), so a server that trickles a byte every few seconds cannot hold
a worker: when it passes, the connection is shut down and the request fails (not retried in this
run; the record is ``failed`` and tried again by the next run).

``requests`` (the ``pipeline`` extra) is imported when the first client is made, through
:func:`biolingual.extras.require`, so importing this module (the builder does, for :class:`FetchError`)
needs nothing beyond the core, offline sources build without it, and a missing ``requests`` is an
error naming the extra to install rather than a bare "No module named 'requests'".
"""

from __future__ import annotations

import email.utils
import functools
import logging
import socket
import threading
import time
from pathlib import Path

from biolingual import __version__
from biolingual.extras import require

log = logging.getLogger(__name__)
USER_AGENT = (
    f"biolingual-data-pipeline/{__version__} "
    "(+https://github.com/david-rx/BioLingual; AnimalSpeak-style dataset builder)"
)
RETRY_STATUS = {429, 500, 502, 503, 504}


def _requests():
    """The requests module, or MissingExtraError naming the pipeline extra."""
    return require("requests", "pipeline", "downloading from the archives (python -m data_pipeline)")


def _transient() -> tuple[type[Exception], ...]:
    """requests' errors worth retrying: timeouts, refused or reset connections, broken transfers."""
    requests = _requests()
    return (
        requests.Timeout,
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    )


def redact(text: str, secrets) -> str:
    """``text`` with every secret (API keys) replaced by ``***``; what goes in every error and log line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class FetchError(RuntimeError):
    """A request failed. ``transient``: worth retrying in a later run (network, 429, 5xx); else permanent (404...)."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class RateLimiter:
    """At most ``rate`` request starts per second, shared by all threads (a simple next-slot clock).

    With ``clock`` (a small file, e.g. in a build's output folder) the next slot lives in that file instead, as
    wall-clock seconds, and every process using the same file takes its slot from it under an exclusive
    ``flock``: the ``--partition`` runs of one build then share one rate per archive instead of each asking
    at the full rate (N parts hit an archive N times as hard). A slot more than an hour ahead is taken for a
    clock that jumped back, and ignored."""

    def __init__(self, rate: float, clock: str | Path | None = None):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.clock = Path(clock) if clock is not None and self.interval else None
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:  # flock excludes other opens of the file, not other threads sharing this one's turn
            if self.clock is None:
                now = time.monotonic()
                start = max(now, self._next)
                self._next = start + self.interval
            else:
                from .lock import held

                with held(self.clock) as f:
                    now = time.time()
                    f.seek(0)
                    try:
                        slot = float(f.read().strip() or 0)
                    except ValueError:  # a torn or foreign file: start afresh
                        slot = 0.0
                    start = now if slot > now + 3600 else max(now, slot)
                    f.seek(0)
                    f.truncate()
                    f.write(repr(start + self.interval))
                    f.flush()
        if start > now:
            time.sleep(start - now)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---- the deadline: which connection a thread's request is using, so a timer can shut it down ------
# requests has no total timeout (its timeout is per socket read), and a read blocked in the socket
# cannot be interrupted from the same thread; so each connection records itself, for the thread
# sending on it, when a request is sent, and the deadline timer shuts that socket down, which ends
# the blocked read at once, in any phase (headers or body).
_ACTIVE: dict[int, object] = {}  # thread id -> the urllib3 connection it is sending on


@functools.cache
def _tracked_adapter():
    """requests' HTTPAdapter whose pools (direct or through a proxy) use connections that record
    themselves in ``_ACTIVE``. Defined on first use: its base classes come from requests and urllib3,
    which are imported only then."""
    adapters = require("requests.adapters", "pipeline", "downloading from the archives (python -m data_pipeline)")
    from urllib3.connection import HTTPConnection, HTTPSConnection  # requests' own dependency
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class TrackedHTTPConnection(HTTPConnection):
        def request(self, *args, **kwargs):
            _ACTIVE[threading.get_ident()] = self
            return super().request(*args, **kwargs)

    class TrackedHTTPSConnection(HTTPSConnection):
        def request(self, *args, **kwargs):
            _ACTIVE[threading.get_ident()] = self
            return super().request(*args, **kwargs)

    class TrackedPool(HTTPConnectionPool):
        ConnectionCls = TrackedHTTPConnection

    class TrackedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = TrackedHTTPSConnection

    class TrackedAdapter(adapters.HTTPAdapter):
        _POOLS = {"http": TrackedPool, "https": TrackedHTTPSPool}

        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = self._POOLS

        def proxy_manager_for(self, *args, **kwargs):
            manager = super().proxy_manager_for(*args, **kwargs)
            manager.pool_classes_by_scheme = self._POOLS
            return manager

    return TrackedAdapter


class _Deadline:
    """Started when an attempt starts; when ``seconds`` pass before :meth:`finish`, shuts down the
    socket the thread's request is using. ``expired`` says whether it did."""

    def __init__(self, seconds: float):
        self.thread = threading.get_ident()
        self.lock = threading.Lock()
        self.expired = self.finished = False
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        with self.lock:  # finish() and this never overlap: the thread's next request is not touched
            if self.finished:
                return
            self.expired = True
            conn = _ACTIVE.get(self.thread)
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:  # the plain socket's shutdown (not SSLSocket's, which also drops its TLS state)
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def finish(self) -> bool:
        """Stop the timer; True if the deadline had passed."""
        with self.lock:
            self.finished = True
        self.timer.cancel()
        _ACTIVE.pop(self.thread, None)
        return self.expired


class PoliteClient:
    def __init__(
        self,
        rate: float = 1.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 30.0,
        max_retry_after: float = 600.0,
        secrets: list[str] | None = None,
        user_agent: str = USER_AGENT,
        deadline: float = 600.0,
    ):
        requests = _requests()
        self._transient = _transient()
        self._truncated = requests.exceptions.ChunkedEncodingError
        self.session = requests.Session()
        adapter = _tracked_adapter()()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent
        self.limiter = RateLimiter(rate)
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.timeout, self.max_retry_after = float(timeout), float(max_retry_after)
        self.deadline = float(deadline)
        self.secrets = [s for s in (secrets or []) if s]
        self.requests_made = 0

    def share_rate(self, clock: str | Path) -> None:
        """Take request slots from the clock file ``clock`` (see :class:`RateLimiter`), at this client's rate,
        so every process whose client shares that file keeps to the rate together."""
        self.limiter = RateLimiter(1.0 / self.limiter.interval if self.limiter.interval else 0.0, clock)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def get_json(self, url: str, params: dict | None = None):
        def parse(response):
            try:
                return response.json()
            except ValueError as e:
                raise FetchError(f"{self.redact(response.url)}: the reply is not JSON ({e})", transient=True) from e

        return self._with_retries(url, params, parse, stream=False)

    def download(self, url: str, dest: Path, max_bytes: int) -> Path:
        """Stream ``url`` into ``dest``; a broken or short transfer is retried like a 5xx."""

        def save(response):
            expected = response.headers.get("Content-Length")
            size = 0
            with open(dest, "wb") as f:
                for block in response.iter_content(1 << 16):
                    size += len(block)
                    if size > max_bytes:
                        raise FetchError(
                            f"{self.redact(url)}: larger than download.max_bytes={max_bytes}", transient=False
                        )
                    f.write(block)
            if expected is not None and expected.isdigit() and size != int(expected):
                raise self._truncated(f"truncated transfer: {size} of {expected} bytes")
            if size == 0:
                raise FetchError(f"{self.redact(url)}: empty file (0 bytes)", transient=False)
            return dest

        return self._with_retries(url, None, save, stream=True)

    def _with_retries(self, url, params, consume, stream: bool):
        last = ""
        for attempt in range(self.retries + 1):
            self.limiter.wait()
            self.requests_made += 1
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            deadline = _Deadline(self.deadline)
            try:
                done, value, asked = self._attempt(url, params, consume, stream)
            except Exception as e:
                if deadline.finish():  # whatever the shut-down socket raised, the deadline is the reason
                    raise self._too_slow(url) from None
                if not isinstance(e, self._transient):
                    raise
                done, value, asked = False, f"{type(e).__name__}: {e}", None
            if deadline.finish():  # a body cut short by the shutdown can look complete (no Content-Length)
                raise self._too_slow(url)
            if done:
                return value
            last, delay = value, delay if asked is None else asked
            if attempt < self.retries:
                log.info("retrying %s in %.1f s (%s)", self.redact(url), delay, self.redact(last))
                time.sleep(delay)
        raise FetchError(
            f"{self.redact(url)}: gave up after {self.retries + 1} attempts ({self.redact(last)})", transient=True
        )

    def _attempt(self, url, params, consume, stream: bool):
        """One request: (True, consume's result, None), or (False, why, seconds the server asks to wait or None)
        for a status worth retrying; FetchError for a permanent one."""
        with self.session.get(url, params=params, timeout=self.timeout, stream=stream) as response:
            if response.status_code in RETRY_STATUS:
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None and asked > self.max_retry_after:
                    raise FetchError(
                        f"{self.redact(url)}: HTTP {response.status_code}, server asks to wait "
                        f"{asked:.0f} s (> max_retry_after)",
                        transient=True,
                    )
                return False, f"HTTP {response.status_code}", asked
            if response.status_code >= 400:
                raise FetchError(
                    f"{self.redact(response.url)}: HTTP {response.status_code} {self.redact(response.text[:200])}",
                    transient=False,
                )
            return True, consume(response), None

    def _too_slow(self, url: str) -> FetchError:
        # not retried in this run: a server this slow would hold the worker (retries + 1) times as long
        return FetchError(
            f"{self.redact(url)}: stopped at the deadline of {self.deadline:g} s for one request "
            "(the server sends too slowly; the record is tried again by the next run)",
            transient=True,
        )
