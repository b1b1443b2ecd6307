"""Captions from an LLM through the ``openai`` client (any OpenAI-compatible endpoint).

Few-shot prompts are versioned files in ``prompts/`` (``prompt: describe_v1``). A record without
notes gets the template caption (no call). A reply that fails validate.problem() is asked again once
(with some temperature), then replaced by the template caption. Replies are cached in SQLite by a
hash of the request, so a rerun makes no API calls.

Waiting: ``timeout`` bounds each wait for the server (connecting, each read), as in
:mod:`data_pipeline.http`; ``deadline`` bounds the whole caption request, its retries included, so a server
that never answers or trickles a byte every few seconds cannot hold a worker. Transient errors (408, 409,
429 with its Retry-After, 5xx, timeouts, broken connections) are retried here, not by the openai client, up
to ``max_retries`` times with exponential backoff, each retry logged with the time left; at the deadline the
request stops (no further retry) and the record is ``failed`` with the reason, to be tried again by the next
run. The deadline is enforced in the client's network layer (:func:`_deadline_transport`): every connect,
read and write waits at most until it, whatever the per-read timeout.

The API key is read from the environment variable named by ``api_key_env`` and is never logged or written:
every error of the client (whose message carries the server's reply, which may echo the key) is raised again
as :class:`CaptionError` with the key redacted and the original exception dropped, and a reply that contains
the key (a server quoting the request's credentials in a 200 answer) is a failed caption, neither cached nor
logged, whose reason does not repeat it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from biolingual.extras import require

from ..http import RateLimiter, redact, retry_after_seconds
from ..record import Record
from .template import TemplateCaptioner, given_captions, second_caption
from .validate import MAX_CHARS, problem

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).parent / "prompts"
RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx: the statuses the openai client itself retries
BACKOFF, MAX_BACKOFF = 0.5, 8.0  # seconds: the first wait between tries, doubling up to this (the openai client's)


class CaptionError(RuntimeError):
    """The LLM request failed (after the client's retries); the message never contains the API key."""


NOT_A_COMPLETION = "not a usable chat completion from the LLM server"
KEEP_CHARS = 1000  # of a reply, cached and logged: enough to see why it was refused (a caption has at most MAX_CHARS)


def _reply_text(response, secrets: list[str]) -> str:
    """The text of a chat completion's first choice ('' for none), or CaptionError saying what the reply lacks: the
    client builds its objects from any JSON without checking them, so another API's answer or content that is not
    text surfaced as AttributeError or TypeError. Only key names are shown, never values."""
    choices = getattr(response, "choices", None)
    if choices is not None and not isinstance(choices, list):
        raise CaptionError(f"{NOT_A_COMPLETION}: the reply's 'choices' is a {type(choices).__name__}, not a list")
    if not choices:
        dump = getattr(response, "model_dump", None)
        keys = sorted(k for k, v in dump(warnings=False).items() if v is not None) if callable(dump) else []
        has = f"it has {', '.join(map(str, keys))}" if keys else f"it is {redact(repr(response)[:60], secrets)}"
        raise CaptionError(f"{NOT_A_COMPLETION}: the reply has no 'choices' list ({has})")
    message = getattr(choices[0], "message", None)
    if message is None:
        raise CaptionError(f"{NOT_A_COMPLETION}: the reply's first choice has no message")
    content = getattr(message, "content", None)
    if content is None:
        return ""
    if not isinstance(content, str):
        raise CaptionError(
            f"{NOT_A_COMPLETION}: the reply's message content is not text (it is a {type(content).__name__})"
        )
    return content


# ---- the deadline: the wait of every connect, read and write of a thread's caption request is cut to the time
# left before its deadline. The openai client's own timeout is per wait (like requests'), so a server sending a
# byte every 2 s never tripped even `timeout: 5`; bounding each wait by what is left needs no timer thread, and a
# trickle stops at the deadline as surely as silence does.
_DEADLINE = threading.local()  # .at: time.monotonic() when the thread's request must end (None: no deadline);
# .expired: whether a wait was stopped by it


def _left(timeout: float | None, error: type[Exception]) -> tuple[float | None, bool]:
    """(the wait to use instead of ``timeout``, whether the deadline is what bounds it); ``error`` when it passed."""
    at = getattr(_DEADLINE, "at", None)
    if at is None:
        return timeout, False
    left = at - time.monotonic()
    if left <= 0:
        _DEADLINE.expired = True
        raise error("the caption request's deadline passed")
    return (left, True) if timeout is None or left < timeout else (timeout, False)


def _bounded(call, timeout: float | None, error: type[Exception]):
    """``call(wait)`` with the wait cut to the deadline; a timeout (``error``) of a wait the deadline cut marks it
    expired."""
    wait, by_deadline = _left(timeout, error)
    try:
        return call(wait)
    except error:
        if by_deadline:
            _DEADLINE.expired = True
        raise


def _deadline_transport(limits):
    """An httpx2 transport (the openai client's HTTP library) whose network backend cuts every wait to the
    thread's deadline. httpx2 offers no public hook for its backend: the pool's is wrapped, and a version that
    moves it fails here, loudly, rather than leaving captions without a deadline."""
    import httpcore2
    import httpx2

    class DeadlineStream(httpcore2.NetworkStream):
        def __init__(self, inner):
            self.inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return _bounded(lambda t: self.inner.read(max_bytes, t), timeout, httpcore2.ReadTimeout)

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            return _bounded(lambda t: self.inner.write(buffer, t), timeout, httpcore2.WriteTimeout)

        def close(self) -> None:
            self.inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return DeadlineStream(
                _bounded(
                    lambda t: self.inner.start_tls(ssl_context, server_hostname, t), timeout, httpcore2.ConnectTimeout
                )
            )

        def get_extra_info(self, info: str):
            return self.inner.get_extra_info(info)

    class DeadlineBackend(httpcore2.NetworkBackend):
        def __init__(self, inner):
            self.inner = inner

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return DeadlineStream(
                _bounded(
                    lambda t: self.inner.connect_tcp(host, port, t, local_address, socket_options),
                    timeout,
                    httpcore2.ConnectTimeout,
                )
            )

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return DeadlineStream(
                _bounded(
                    lambda t: self.inner.connect_unix_socket(path, t, socket_options), timeout, httpcore2.ConnectTimeout
                )
            )

        def sleep(self, seconds: float) -> None:
            self.inner.sleep(seconds)

    transport = httpx2.HTTPTransport(limits=limits)
    pool = getattr(transport, "_pool", None)
    if not isinstance(getattr(pool, "_network_backend", None), httpcore2.NetworkBackend):
        raise RuntimeError(
            f"httpx2 {httpx2.__version__} keeps its network backend elsewhere: the caption deadline "
            "cannot be enforced (data_pipeline/captioning/llm.py, _deadline_transport)"
        )
    pool._network_backend = DeadlineBackend(pool._network_backend)
    return transport


def load_prompt(name: str) -> list[dict]:
    path = Path(name) if Path(name).suffix == ".jsonl" else PROMPTS / f"{name}.jsonl"
    if not path.is_file():
        raise ValueError(
            f"caption prompt not found: '{path}' (available: {sorted(p.stem for p in PROMPTS.glob('*.jsonl'))})"
        )
    messages = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            msg = json.loads(line)
            if msg.get("role") not in {"system", "user", "assistant"} or not isinstance(msg.get("content"), str):
                raise ValueError(f"'{path}' line {line_no}: each line must be {{'role': ..., 'content': ...}}")
            messages.append(msg)
    return messages


class CaptionCache:
    """prompt hash -> reply, in SQLite, shared by the worker threads."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS replies (hash TEXT PRIMARY KEY, model TEXT, reply TEXT)")
        self.lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT reply FROM replies WHERE hash=?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, reply: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO replies VALUES (?,?,?)", (key, model, reply))

    def close(self) -> None:
        self.db.close()


class OpenAICaptioner:
    name = "openai"

    def __init__(
        self,
        cache_path: Path,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        prompt: str = "describe_v1",
        rate: float = 5.0,
        concurrency: int = 4,
        max_retries: int = 6,
        timeout: float = 60.0,
        deadline: float = 180.0,
        temperature: float = 0.0,
        retry_temperature: float = 0.7,
        max_tokens: int = 80,
    ):
        openai = require("openai", "pipeline", "the 'openai' captioner")

        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(
                f"captioner 'openai' needs an API key in the environment variable {api_key_env} "
                "(any non-empty value for a local server)"
            )
        self._secrets = [key]
        self._errors = openai.OpenAIError
        self._openai = openai
        self.max_retries, self.timeout, self.deadline = int(max_retries), float(timeout), float(deadline)
        slots = max(1, int(concurrency))
        import httpx2  # the openai client's HTTP library, installed with it

        http_client = openai.DefaultHttpxClient(
            transport=_deadline_transport(
                httpx2.Limits(max_connections=max(10, slots), max_keepalive_connections=slots)
            )
        )
        # retries are made here (_request), not by the client: none may start past the deadline, and each is logged
        self.client = openai.OpenAI(
            api_key=key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client
        )
        self.model, self.temperature, self.retry_temperature, self.max_tokens = (
            model,
            temperature,
            retry_temperature,
            max_tokens,
        )
        self.prompt_name = prompt
        self.few_shot = load_prompt(prompt)
        self.cache = CaptionCache(cache_path)
        self.limiter = RateLimiter(rate)
        self.slots = threading.Semaphore(slots)
        self.calls = 0

    def caption(self, record: Record) -> list[str]:
        if record.captions:
            return given_captions(record)
        if not record.description.strip():
            return TemplateCaptioner.template(record)
        name = record.species_common or record.species_scientific
        messages = [
            *self.few_shot,
            {"role": "user", "content": f"Species: {name}\nNotes: {record.description.strip()}"},
        ]
        for attempt in range(2):
            reply = self._ask(messages, attempt, f"{record.uid} ({name})")
            why = problem(reply, record)
            if not why:
                return [reply, second_caption(reply, record)]
            log.info("caption for %s rejected (%s): %r", record.uid, why, reply[:120])
        return TemplateCaptioner.template(record)

    def _ask(self, messages: list[dict], attempt: int, what: str) -> str:
        """The model's reply to ``messages`` (``attempt`` 1: the retry with some temperature), from the cache or the
        server; CaptionError (never holding the key) when the request fails, passes its deadline, or the reply
        holds the key. ``what`` names the record in log lines."""
        request = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature if attempt == 0 else self.retry_temperature,
        }
        key = hashlib.sha256(json.dumps({**request, "attempt": attempt}, sort_keys=True).encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None:
            return self._checked(cached)  # a cache written before replies were checked may hold the key
        with self.slots:
            response = self._request(request, what)
        reply = self._checked(_reply_text(response, self._secrets).strip().strip('"'))
        if len(reply) > KEEP_CHARS:  # a server ignoring max_tokens: a 6 MB reply was cached whole
            log.info(
                "caption reply for %s has %d characters, more than a caption may (%d): %d kept",
                what,
                len(reply),
                MAX_CHARS,
                KEEP_CHARS,
            )
            reply = reply[:KEEP_CHARS]
        self.cache.put(key, self.model, reply)
        return reply

    def _checked(self, reply: str) -> str:
        """``reply``, or CaptionError when it holds the API key: a server that quotes the request's credentials in a
        successful answer would otherwise put the key into both captions, the shards and the cache."""
        if any(secret and secret in reply for secret in self._secrets):
            raise CaptionError(
                "the LLM's reply contains the API key (the server quoted the request's credentials); "
                "the caption is not used, cached or logged"
            )
        return reply

    def _request(self, request: dict, what: str):
        """One chat completion, retried on transient errors (see the module docstring) until ``max_retries`` or the
        deadline; each retry logged with its reason and the time left."""
        openai = self._openai
        at = time.monotonic() + self.deadline
        for retry in range(self.max_retries + 1):
            self.limiter.wait()
            self.calls += 1
            _DEADLINE.at, _DEADLINE.expired = at, False
            try:
                return self.client.chat.completions.create(**request)
            except ValueError as e:  # JSONDecodeError: a 200 answer that is no JSON (a proxy's error page)
                text = getattr(e, "doc", "") or ""
                raise CaptionError(
                    f"{NOT_A_COMPLETION}: the reply is not JSON (it starts with {redact(text[:60], self._secrets)!r})"
                ) from None
            except self._errors as e:
                if _DEADLINE.expired or time.monotonic() >= at:
                    raise self._too_slow() from None
                status = getattr(e, "status_code", None)
                transient = isinstance(e, openai.APIConnectionError) or status in RETRY_STATUS or (status or 0) >= 500
                if not transient or retry == self.max_retries:
                    # a server may echo the Authorization header in its error body (seen with a 401), and the
                    # client puts that body in the message; 'from None' keeps the original out of tracebacks
                    raise CaptionError(redact(f"{type(e).__name__}: {e}", self._secrets)) from None
                response = getattr(e, "response", None)
                asked = retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
                wait = min(MAX_BACKOFF, BACKOFF * 2**retry) if asked is None else asked
                left = at - time.monotonic()
                why = f"HTTP {status}" if status else type(e).__name__
                if wait >= left:
                    raise CaptionError(
                        f"{why}, and the next try ({wait:.1f} s from now) would start past the deadline "
                        f"of {self.deadline:g} s for one caption request; tried again by the next run"
                    ) from None
                log.info(
                    "caption request for %s: %s; retrying in %.1f s (retry %d of %d; %.0f s of the %g s deadline left)",
                    what,
                    why,
                    wait,
                    retry + 1,
                    self.max_retries,
                    left,
                    self.deadline,
                )
                time.sleep(wait)
            finally:
                _DEADLINE.at = None
        raise AssertionError("unreachable: the last try returns or raises")

    def _too_slow(self) -> CaptionError:
        # not retried in this run, as downloads past their deadline are not: the server would hold the worker again
        return CaptionError(
            f"stopped at the deadline of {self.deadline:g} s for one caption request (timeout "
            f"{self.timeout:g} s per wait; the server answers too slowly or not at all; the record is "
            "tried again by the next run)"
        )

    def close(self) -> None:
        self.cache.close()
        self.client.close()
