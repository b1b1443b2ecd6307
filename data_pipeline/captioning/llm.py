"""Captions from an LLM through the ``openai`` client (any OpenAI-compatible endpoint).

Few-shot prompts are versioned files in ``prompts/`` (``prompt: describe_v1``). A record without
notes gets the template caption (no call). A reply that fails validate.problem() is asked again once
(with some temperature), then replaced by the template caption. Replies are cached in SQLite by a
hash of the request, so a rerun makes no API calls. Transient errors (429 with Retry-After, 5xx,
timeouts) are retried by the openai client itself (``max_retries``). The API key is read from the
environment variable named by ``api_key_env`` and is never logged or written: every error of the
client (whose message carries the server's reply, which may echo the key) is raised again as
:class:`CaptionError` with the key redacted and the original exception dropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

from biolingual.extras import require

from ..http import RateLimiter, redact
from ..record import Record
from .template import TemplateCaptioner, given_captions, second_caption
from .validate import problem

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).parent / "prompts"


class CaptionError(RuntimeError):
    """The LLM request failed (after the client's retries); the message never contains the API key."""


def load_prompt(name: str) -> list[dict]:
    path = Path(name) if Path(name).suffix == ".jsonl" else PROMPTS / f"{name}.jsonl"
    if not path.is_file():
        raise ValueError(f"caption prompt not found: '{path}' (available: {sorted(p.stem for p in PROMPTS.glob('*.jsonl'))})")
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

    def __init__(self, cache_path: Path, model: str = "gpt-4o-mini", base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", prompt: str = "describe_v1", rate: float = 5.0,
                 concurrency: int = 4, max_retries: int = 6, timeout: float = 60.0, temperature: float = 0.0,
                 retry_temperature: float = 0.7, max_tokens: int = 80):
        openai = require("openai", "pipeline", "the 'openai' captioner")

        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"captioner 'openai' needs an API key in the environment variable {api_key_env} "
                             "(any non-empty value for a local server)")
        self._secrets = [key]
        self._errors = openai.OpenAIError
        self.client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        self.model, self.temperature, self.retry_temperature, self.max_tokens = model, temperature, retry_temperature, max_tokens
        self.prompt_name = prompt
        self.few_shot = load_prompt(prompt)
        self.cache = CaptionCache(cache_path)
        self.limiter = RateLimiter(rate)
        self.slots = threading.Semaphore(max(1, int(concurrency)))
        self.calls = 0

    def caption(self, record: Record) -> list[str]:
        if record.captions:
            return given_captions(record)
        if not record.description.strip():
            return TemplateCaptioner.template(record)
        name = record.species_common or record.species_scientific
        messages = [*self.few_shot, {"role": "user", "content": f"Species: {name}\nNotes: {record.description.strip()}"}]
        for attempt in range(2):
            reply = self._ask(messages, attempt)
            why = problem(reply, record)
            if not why:
                return [reply, second_caption(reply, record)]
            log.info("caption for %s rejected (%s): %r", record.uid, why, reply[:120])
        return TemplateCaptioner.template(record)

    def _ask(self, messages: list[dict], attempt: int) -> str:
        request = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                   "temperature": self.temperature if attempt == 0 else self.retry_temperature}
        key = hashlib.sha256(json.dumps({**request, "attempt": attempt}, sort_keys=True).encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        with self.slots:
            self.limiter.wait()
            self.calls += 1
            try:
                response = self.client.chat.completions.create(**request)
            except self._errors as e:
                # a server may echo the Authorization header in its error body (seen with a 401), and the
                # client puts that body in the message; 'from None' keeps the original out of tracebacks
                raise CaptionError(redact(f"{type(e).__name__}: {e}", self._secrets)) from None
        reply = (response.choices[0].message.content or "").strip().strip('"')
        self.cache.put(key, self.model, reply)
        return reply

    def close(self) -> None:
        self.cache.close()
        self.client.close()
