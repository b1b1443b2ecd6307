"""GBIF occurrence search with ``mediaType=Sound`` (covers the Animal Sound Archive): one record per
sound media object; the media's licence (else the occurrence's); English common names looked up
(``/species?name=`` then ``/species/{key}/vernacularNames``) when ``vernacularName`` is empty."""

from __future__ import annotations

import logging
from pathlib import Path

from ..http import FetchError, PoliteClient
from ..licenses import normalize_license
from ..record import Record

log = logging.getLogger(__name__)
XENO_CANTO_DATASET = "b1047888-ae52-4179-9dd5-5448ea342a24"
MAX_OFFSET = 100_000  # GBIF refuses offset + limit beyond this; use its download API for more


class GbifSource:
    def __init__(
        self,
        params: dict | None = None,
        base_url: str = "https://api.gbif.org/v1",
        rate: float = 1.0,
        retries: int = 5,
        backoff: float = 2.0,
        timeout: float = 60.0,
        deadline: float = 600.0,
        limit: int = 300,
        common_names: bool = True,
        max_bytes: int = 300_000_000,
    ):
        self.params = {**(params or {}), "mediaType": "Sound"}
        self.base_url, self.limit, self.max_bytes = base_url.rstrip("/"), min(int(limit), 300), int(max_bytes)
        self.common_names = common_names
        self.client = PoliteClient(rate=rate, retries=retries, backoff=backoff, timeout=timeout, deadline=deadline)
        self._names: dict[str, str] = {}

    def records(self):
        offset = 0
        while True:
            if offset + self.limit > MAX_OFFSET:
                log.warning(
                    "GBIF search stops at %d records (offset limit); use the GBIF download API for more", offset
                )
                return
            data = self.client.get_json(
                f"{self.base_url}/occurrence/search", {**self.params, "limit": self.limit, "offset": offset}
            )
            results = data.get("results") or []
            for occ in results:
                yield from self.to_records(occ)
            offset += len(results)
            if data.get("endOfRecords", True) or not results:
                return

    def common_name(self, occ: dict) -> str:
        if occ.get("vernacularName"):
            return occ["vernacularName"].strip()
        scientific = occ.get("species") or occ.get("scientificName") or ""
        if not self.common_names or not scientific:
            return ""
        if scientific not in self._names:
            self._names[scientific] = self._lookup(scientific)
        return self._names[scientific]

    def _lookup(self, scientific: str) -> str:
        try:
            found = self.client.get_json(f"{self.base_url}/species", {"name": scientific})
            results = found.get("results") or []
            if not results:
                return ""
            names = self.client.get_json(f"{self.base_url}/species/{results[0]['key']}/vernacularNames", {"limit": 100})
            english = [
                n["vernacularName"]
                for n in names.get("results") or []
                if n.get("language") == "eng" and n.get("vernacularName")
            ]
            return english[0].strip() if english else ""
        except (FetchError, KeyError, TypeError) as e:
            log.warning("GBIF common name of '%s' not found: %s", scientific, e)
            return ""

    def to_records(self, occ: dict):
        sounds = [m for m in occ.get("media") or [] if (m.get("type") or "").lower() == "sound"]
        for i, media in enumerate(sounds):
            aliases = []
            catalog = str(occ.get("catalogNumber") or "")
            if occ.get("datasetKey") == XENO_CANTO_DATASET and catalog.upper().startswith("XC"):
                aliases.append(f"xeno-canto:{catalog[2:]}")
            licence = media.get("license") or occ.get("license") or ""
            recordist = (media.get("creator") or occ.get("recordedBy") or "").strip()
            yield Record(
                "gbif",
                f"{occ['key']}-{i}",
                species_common=self.common_name(occ),
                species_scientific=(occ.get("species") or occ.get("scientificName") or "").strip(),
                audio_url=(media.get("identifier") or "").strip(),
                page_url=media.get("references") or f"https://www.gbif.org/occurrence/{occ['key']}",
                license=normalize_license(licence),
                license_url=licence,
                attribution="; ".join(
                    x
                    for x in (
                        media.get("rightsHolder") or recordist,
                        media.get("publisher"),
                        f"GBIF occurrence {occ['key']}",
                    )
                    if x
                ),
                recordist=recordist,
                description=(occ.get("occurrenceRemarks") or media.get("description") or "").strip(),
                places=[p for p in (occ.get("locality"), occ.get("country")) if p],
                aliases=aliases,
                extra={"datasetKey": occ.get("datasetKey"), "format": media.get("format")},
            )

    def fetch(self, record: Record, dest: Path) -> Path:
        return self.client.download(record.audio_url, dest, self.max_bytes)
