"""iNaturalist API v1: observations with sounds, paged by ``id_above`` (page x per_page beyond
10,000 answers 403), one record per sound, filtered on each *sound's* licence."""

from __future__ import annotations

from pathlib import Path

from ..http import PoliteClient
from ..licenses import normalize_license
from ..record import Record


class INaturalistSource:
    def __init__(
        self,
        params: dict | None = None,
        base_url: str = "https://api.inaturalist.org/v1",
        rate: float = 0.9,
        retries: int = 5,
        backoff: float = 2.0,
        timeout: float = 60.0,
        deadline: float = 600.0,
        per_page: int = 200,
        max_bytes: int = 300_000_000,
    ):
        self.params = {"sounds": "true", "verifiable": "true", "locale": "en", **(params or {})}
        self.base_url, self.per_page, self.max_bytes = base_url.rstrip("/"), min(int(per_page), 200), int(max_bytes)
        self.client = PoliteClient(rate=rate, retries=retries, backoff=backoff, timeout=timeout, deadline=deadline)

    def records(self):
        last = int(self.params.pop("id_above", 0) or 0)
        while True:
            data = self.client.get_json(
                f"{self.base_url}/observations",
                {**self.params, "order_by": "id", "order": "asc", "per_page": self.per_page, "id_above": last},
            )
            results = data.get("results") or []
            if not results:
                return
            for obs in results:
                last = max(last, int(obs["id"]))
                yield from self.to_records(obs)

    @staticmethod
    def to_records(obs: dict):
        taxon = obs.get("taxon") or {}
        user = obs.get("user") or {}
        places = [p for p in (obs.get("place_guess"),) if p]
        for sound in obs.get("sounds") or []:
            file_url = sound.get("file_url") or ""
            excluded = ""
            if sound.get("hidden") or sound.get("flags"):
                excluded = "sound hidden or flagged"
            elif not file_url:
                excluded = "no sound file (not hosted by iNaturalist)"
            yield Record(
                "inaturalist",
                f"{obs['id']}-{sound.get('id')}",
                species_common=(taxon.get("preferred_common_name") or "").strip(),
                species_scientific=(taxon.get("name") or "").strip(),
                audio_url=file_url,
                page_url=obs.get("uri") or f"https://www.inaturalist.org/observations/{obs['id']}",
                license=normalize_license(sound.get("license_code")),
                license_url=sound.get("license_code") or "",
                attribution=sound.get("attribution") or "",
                recordist=(user.get("name") or user.get("login") or "").strip(),
                description=(obs.get("description") or "").strip(),
                places=places,
                excluded=excluded,
                extra={"observed_on": obs.get("observed_on"), "content_type": sound.get("file_content_type")},
            )

    def fetch(self, record: Record, dest: Path) -> Path:
        return self.client.download(record.audio_url, dest, self.max_bytes)
