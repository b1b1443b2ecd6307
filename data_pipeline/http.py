"""A polite HTTP client for the archives: a request rate per source, retries with exponential backoff
on 429/5xx/timeouts/broken transfers (honouring ``Retry-After``), a User-Agent naming the project,
size-limited streaming downloads, and secrets (API keys) redacted from every error message.
"""
from __future__ import annotations

import email.utils
import logging
import threading
import time
from pathlib import Path

import requests

from biolingual import __version__

log = logging.getLogger(__name__)
USER_AGENT = f"biolingual-data-pipeline/{__version__} (+https://github.com/david-rx/BioLingual; AnimalSpeak-style dataset builder)"
RETRY_STATUS = {429, 500, 502, 503, 504}
TRANSIENT = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
             requests.exceptions.ContentDecodingError)


class FetchError(RuntimeError):
    """A request failed. ``transient``: worth retrying in a later run (network, 429, 5xx); else permanent (404...)."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class RateLimiter:
    """At most ``rate`` request starts per second, shared by all threads (a simple next-slot clock)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
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


class PoliteClient:
    def __init__(self, rate: float = 1.0, retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                 timeout: float = 30.0, max_retry_after: float = 600.0, secrets: list[str] | None = None,
                 user_agent: str = USER_AGENT):
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.limiter = RateLimiter(rate)
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.timeout, self.max_retry_after = float(timeout), float(max_retry_after)
        self.secrets = [s for s in (secrets or []) if s]
        self.requests_made = 0

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

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
                        raise FetchError(f"{url}: larger than download.max_bytes={max_bytes}", transient=False)
                    f.write(block)
            if expected is not None and expected.isdigit() and size != int(expected):
                raise requests.exceptions.ChunkedEncodingError(f"truncated transfer: {size} of {expected} bytes")
            if size == 0:
                raise FetchError(f"{url}: empty file (0 bytes)", transient=False)
            return dest
        return self._with_retries(url, None, save, stream=True)

    def _with_retries(self, url, params, consume, stream: bool):
        last = ""
        for attempt in range(self.retries + 1):
            self.limiter.wait()
            self.requests_made += 1
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                with self.session.get(url, params=params, timeout=self.timeout, stream=stream) as response:
                    if response.status_code in RETRY_STATUS:
                        asked = retry_after_seconds(response.headers.get("Retry-After"))
                        if asked is not None:
                            if asked > self.max_retry_after:
                                raise FetchError(f"{self.redact(url)}: HTTP {response.status_code}, server asks to wait "
                                                 f"{asked:.0f} s (> max_retry_after)", transient=True)
                            delay = asked
                        last = f"HTTP {response.status_code}"
                    elif response.status_code >= 400:
                        raise FetchError(f"{self.redact(response.url)}: HTTP {response.status_code} "
                                         f"{self.redact(response.text[:200])}", transient=False)
                    else:
                        return consume(response)
            except TRANSIENT as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                log.info("retrying %s in %.1f s (%s)", self.redact(url), delay, self.redact(last))
                time.sleep(delay)
        raise FetchError(f"{self.redact(url)}: gave up after {self.retries + 1} attempts ({self.redact(last)})", transient=True)
