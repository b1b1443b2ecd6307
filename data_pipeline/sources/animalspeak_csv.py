"""The released AnimalSpeak CSV (``url, source, recordist, species_common, species_scientific,
caption, caption2``): re-downloads the audio each row points to and keeps its captions.

The release is cc-by-nc-sa-4.0 (``license``); rows from Macaulay or Watkins are not fetched.
``base_url``, when given, replaces the scheme and host of every audio URL (a mirror).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..http import PoliteClient
from ..licenses import normalize_license
from ..record import Record
from . import SourceError

REQUIRED = ("url", "species_common", "caption")


class AnimalSpeakCsvSource:
    def __init__(
        self,
        path: str,
        base_url: str | None = None,
        license: str = "cc-by-nc-sa",
        rate: float = 1.0,
        retries: int = 5,
        backoff: float = 2.0,
        timeout: float = 60.0,
        deadline: float = 600.0,
        max_bytes: int = 300_000_000,
        base_dir=None,
    ):
        csv_path = Path(path)
        if not csv_path.is_absolute() and not csv_path.exists() and base_dir is not None:
            csv_path = Path(base_dir) / csv_path
        if not csv_path.is_file():
            raise SourceError(f"animalspeak-csv: file not found: '{path}'")
        self.path, self.base_url, self.license, self.max_bytes = csv_path, base_url, license, int(max_bytes)
        self.client = PoliteClient(rate=rate, retries=retries, backoff=backoff, timeout=timeout, deadline=deadline)

    def records(self):
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceError(f"'{self.path}': missing column(s) {missing} (has {reader.fieldnames})")
            for line, row in enumerate(reader, start=2):
                yield self.to_record(row, line)

    def to_record(self, row: dict, line: int) -> Record:
        url = (row.get("url") or "").strip()
        if self.base_url and url:
            url = re.sub(r"^(https?:)?//[^/]+", self.base_url.rstrip("/"), url)
        index = (row.get("i") or row.get("Unnamed: 0") or row.get("") or str(line)).strip()
        origin = (row.get("source") or "").strip()
        xc = re.search(r"xeno-canto\.org/(\d+)", row.get("url") or "")
        excluded = f"excluded archive: {origin}" if origin.lower() in {"macaulay", "watkins"} else ""
        captions = [c.strip() for c in (row.get("caption"), row.get("caption2")) if c and c.strip()]
        return Record(
            "animalspeak-csv",
            index,
            species_common=(row.get("species_common") or "").strip(),
            species_scientific=(row.get("species_scientific") or "").strip(),
            audio_url=url,
            page_url=(row.get("url") or "").strip(),
            license=normalize_license(self.license),
            license_url=self.license,
            recordist=(row.get("recordist") or "").strip(),
            attribution="; ".join(
                x for x in ((row.get("recordist") or "").strip(), origin, "AnimalSpeak (cc-by-nc-sa-4.0)") if x
            ),
            captions=captions,
            aliases=[f"xeno-canto:{xc.group(1)}"] if xc else [],
            excluded=excluded,
            extra={"origin": origin},
        )

    def fetch(self, record: Record, dest: Path) -> Path:
        return self.client.download(record.audio_url, dest, self.max_bytes)
