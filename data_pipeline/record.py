"""The one record type every source yields: metadata of one recording, before its audio is fetched."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from .shards import sanitize_key

# Short key prefixes per source: keys look like ``xc_694038`` (dot-free, see shards.sanitize_key).
KEY_PREFIX = {
    "xeno-canto": "xc",
    "inaturalist": "inat",
    "gbif": "gbif",
    "animalspeak-csv": "as",
    "local": "local",
    "synthetic": "syn",
}


_SUFFIX_LIKE = re.compile(r"-(c\d+|[0-9a-f]{10})$")  # a clip suffix (-c1) or a hash suffix (see Record.key)


@dataclass
class Record:
    source: str  # source type, e.g. "xeno-canto"
    source_id: str  # the archive's id of the recording, e.g. "694038"
    species_common: str = ""
    species_scientific: str = ""
    audio_url: str = ""  # where the audio is fetched from ("" = not available, e.g. restricted)
    page_url: str = ""
    license: str | None = None  # normalised code, e.g. "cc-by-nc" (see licenses.py); None = unknown/none
    license_url: str = ""
    attribution: str = ""
    recordist: str = ""
    description: str = ""  # free text a captioner may use (only what is audible is kept)
    sound_type: str = ""  # e.g. "song", "call" (Xeno-canto's type)
    places: list[str] = field(default_factory=list)  # place names of the record: never allowed in a caption
    captions: list[str] = field(default_factory=list)  # ready-made captions (AnimalSpeak CSV) kept as they are
    aliases: list[str] = field(default_factory=list)  # other uids of the same recording (cross-source dedup)
    excluded: str = ""  # non-empty: why this record must not be fetched (restricted, Macaulay/Watkins...)
    extra: dict = field(default_factory=dict)  # source-specific fields a fetcher needs (kept in the manifest)

    @property
    def uid(self) -> str:
        return f"{self.source}:{self.source_id}"

    @property
    def key(self) -> str:
        """The sample key: ``xc_694038`` as it is when the id is already a safe key; otherwise the sanitized id
        plus ``-`` and 10 hex digits of the uid's SHA-1 (``local_a___wav-3f2a9c01bd`` for ``a ü.wav``), so distinct
        records never share a key. The build appends ``-c1``, ``-c2``... for further clips; an id that itself
        ends like one of these suffixes is hashed too, so a key never equals another record's clip key."""
        raw = f"{KEY_PREFIX.get(self.source, self.source)}_{self.source_id}"
        key = sanitize_key(raw)
        if key != raw or _SUFFIX_LIKE.search(key):
            key += "-" + hashlib.sha1(self.uid.encode()).hexdigest()[:10]
        return key

    @property
    def species(self) -> str:
        """The species identity used for splits and counts: the scientific name, else the common one."""
        return re.sub(r"\s+", " ", (self.species_scientific or self.species_common).strip().lower())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        return cls(**json.loads(text))


def normalize_url(url: str) -> str:
    """The dedup form of an audio URL: no scheme, no 'www.', lower-case host, no numeric cache-buster query
    (iNaturalist appends ``?<unix time>``)."""
    url = re.sub(r"^(https?:)?//", "", url.strip())
    url = re.sub(r"\?\d+$", "", url)
    host, _, rest = url.partition("/")
    host = host.lower().removeprefix("www.")
    return f"{host}/{rest}".rstrip("/")
