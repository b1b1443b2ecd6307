"""Xeno-canto API v3: ``GET {base_url}/recordings?query=...&key=...&per_page=...&page=...``.

The key comes from ``XENO_CANTO_API_KEY`` (or the ``key`` option); it is sent only as a query
parameter and redacted from every message. Restricted species come with an empty ``file``: such
records are listed as excluded and never fetched.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..http import PoliteClient
from ..licenses import normalize_license
from ..record import Record
from . import SourceError


class XenoCantoSource:
    def __init__(
        self,
        query: str,
        base_url: str = "https://xeno-canto.org/api/3",
        key: str | None = None,
        per_page: int = 500,
        rate: float = 1.0,
        retries: int = 5,
        backoff: float = 2.0,
        timeout: float = 60.0,
        deadline: float = 600.0,
        max_bytes: int = 300_000_000,
    ):
        if not query or not isinstance(query, str):
            raise SourceError("xeno-canto source needs a 'query' such as 'grp:frogs q:A' (v3 wants tagged terms)")
        self.key = key or os.environ.get("XENO_CANTO_API_KEY", "")
        self.query, self.base_url, self.per_page, self.max_bytes = (
            query,
            base_url.rstrip("/"),
            int(per_page),
            int(max_bytes),
        )
        self.client = PoliteClient(
            rate=rate, retries=retries, backoff=backoff, timeout=timeout, deadline=deadline, secrets=[self.key]
        )

    def records(self):
        if not self.key:
            raise SourceError(
                "xeno-canto API v3 needs a key: set XENO_CANTO_API_KEY (see https://xeno-canto.org/explore/api)"
            )
        page = 1
        while True:
            data = self.client.get_json(
                f"{self.base_url}/recordings",
                {"query": self.query, "key": self.key, "per_page": self.per_page, "page": page},
            )
            if not isinstance(data, dict) or "error" in data:
                error = data.get("error") if isinstance(data, dict) else data
                raise SourceError(self.client.redact(f"xeno-canto refused query {self.query!r} (page {page}): {error}"))
            for item in data.get("recordings") or []:
                yield self.to_record(item)
            if page >= int(data.get("numPages") or 0):
                return
            page += 1

    @staticmethod
    def to_record(item: dict) -> Record:
        xc_id = str(item.get("id", "")).strip()
        file_url = (item.get("file") or "").strip()
        if file_url.startswith("//"):
            file_url = "https:" + file_url
        licence_url = (item.get("lic") or "").strip()
        if licence_url.startswith("//"):
            licence_url = "https:" + licence_url
        scientific = " ".join(x for x in (item.get("gen"), item.get("sp")) if x).strip()
        recordist = (item.get("rec") or "").strip()
        places = [p for p in (item.get("loc"), item.get("cnt")) if p]
        kind = (item.get("type") or "").split(",")[0].strip()
        return Record(
            "xeno-canto",
            xc_id,
            species_common=(item.get("en") or "").strip(),
            species_scientific=scientific,
            audio_url=file_url,
            page_url=f"https://xeno-canto.org/{xc_id}",
            license=normalize_license(licence_url),
            license_url=licence_url,
            attribution=f"{recordist}, XC{xc_id}. Accessible at www.xeno-canto.org/{xc_id}",
            recordist=recordist,
            description=(item.get("rmk") or "").strip(),
            sound_type=kind,
            places=places,
            aliases=[f"xeno-canto:{xc_id}", f"XC{xc_id}"],
            excluded="" if file_url else "restricted: empty 'file' field",
            extra={"length": item.get("length", ""), "smp": item.get("smp"), "q": item.get("q", "")},
        )

    def fetch(self, record: Record, dest: Path) -> Path:
        return self.client.download(record.audio_url, dest, self.max_bytes)
