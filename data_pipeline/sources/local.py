"""A local folder of audio files, with an optional CSV of
``file, species_common, species_scientific, description, license, recordist``.

Without a CSV (or for files it does not list), the species is the file's parent folder name and the
licence is the source's ``license`` option (None: such files are not used).

A record's id is the file's path under the folder, extension included (``Marsh Whistler/c.flac``), so
``x.wav`` and ``x.flac``, or ``a/b.wav`` and ``a_b.wav``, are distinct records; its sample key is that
path made key-safe plus a hash of it (see Record.key).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from biolingual.vocabulary import AUDIO_EXTENSIONS

from ..licenses import normalize_license
from ..record import Record
from . import SourceError

COLUMNS = ("file", "species_common", "species_scientific", "description", "license", "recordist")


class LocalSource:
    def __init__(self, path: str, metadata: str | None = None, license: str | None = None, base_dir=None):
        root = Path(path)
        if not root.is_absolute() and base_dir is not None and not root.exists():
            root = Path(base_dir) / root
        if not root.is_dir():
            raise SourceError(f"local source: folder not found: '{path}'")
        self.root, self.license = root, license
        self.metadata = Path(metadata) if metadata else None
        if self.metadata and not self.metadata.is_file():
            raise SourceError(f"local source: metadata CSV not found: '{metadata}'")

    def _rows(self) -> dict[str, dict]:
        if not self.metadata:
            return {}
        rows = {}
        with open(self.metadata, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "file" not in reader.fieldnames:
                raise SourceError(f"'{self.metadata}': needs a 'file' column (columns: {', '.join(COLUMNS)})")
            for line, row in enumerate(reader, start=2):
                name = (row.get("file") or "").strip()
                if not name:
                    raise SourceError(f"'{self.metadata}' line {line}: empty 'file'")
                rows[name] = row
        return rows

    def records(self):
        rows = self._rows()
        listed = set()
        for name, row in rows.items():
            listed.add(Path(name).as_posix())  # "./a.wav" in the CSV is the file a.wav found below
            yield self._record(name, row)
        unreadable: list[OSError] = []
        for path in self._audio_files(unreadable):
            name = path.relative_to(self.root).as_posix()
            if name not in listed:
                yield self._record(name, {"species_common": path.parent.name if path.parent != self.root else ""})
        if unreadable:  # after the rest is listed; the listing is not marked done, so the next run lists it again
            first = unreadable[0]
            more = f" and {len(unreadable) - 1} more folder(s)" if len(unreadable) > 1 else ""
            raise SourceError(
                f"cannot read the folder '{first.filename}' ({first.strerror}){more}: the audio files in it "
                "are not listed; give this process read access and run the build again"
            )

    def _audio_files(self, unreadable: list[OSError]) -> list[Path]:
        """The audio files below the folder, sorted; each sub-folder that cannot be listed (no permission, an
        I/O error) is appended to ``unreadable``: ``Path.rglob`` skipped such folders without a word. As with
        rglob, symbolic links to folders are not followed (no loops)."""
        found = []
        for folder, _, files in os.walk(self.root, onerror=unreadable.append):
            found += [Path(folder) / f for f in files if Path(f).suffix.lower() in AUDIO_EXTENSIONS]
        return sorted(found)

    def _record(self, name: str, row: dict) -> Record:
        licence = row.get("license") or self.license
        return Record(
            "local",
            Path(name).as_posix(),
            (row.get("species_common") or "").strip(),
            (row.get("species_scientific") or "").strip(),
            audio_url=(self.root / name).resolve().as_uri(),
            license=normalize_license(licence),
            license_url=licence or "",
            recordist=(row.get("recordist") or "").strip(),
            attribution=(row.get("recordist") or "").strip(),
            description=(row.get("description") or "").strip(),
            extra={"path": str((self.root / name).resolve()), "csv": str(self.metadata or "")},
        )

    def fetch(self, record: Record, dest: Path) -> Path:
        path = Path(record.extra["path"])
        if not path.is_file():
            where = f"listed in '{record.extra['csv']}' but " if record.extra.get("csv") else ""
            raise FileNotFoundError(f"{where}not found: '{path}'")
        return path
