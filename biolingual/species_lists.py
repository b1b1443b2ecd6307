"""Candidate species by place and season: which calling animals were recorded near a point around a date.

In: a latitude and longitude, a date (or month range), a radius and the taxa to ask for; GBIF's
occurrence search (``/v1/occurrence/search``, faceted by ``speciesKey``) answers with each species' number
of occurrence records there and then, and ``/v1/species/{key}`` (``/vernacularNames``) gives its names.
Out: a :class:`SpeciesList`: the names kept (those with at least ``min_records`` records: the threshold is
part of the list, printed and written beside the results), each species' record count, and the query.

Cached on disk by query (a list for one place and season does not change within a run of a project), so
a second run and a run without network read the cache; a saved list (:meth:`SpeciesList.save`) or a user's
own file (one name per line, or a CSV with a ``name`` column) work offline too (:func:`read_species_list`).
:meth:`SpeciesList.match` says whether a label (a benchmark's class) names a listed species by its common or
scientific name.

GBIF filters by month, not week: ``weeks`` around ``date`` are widened to the months they touch, and the
list says which months it covers. Backbone keys of the calling classes: birds (Aves) 212, amphibians
(Amphibia) 131, mammals (Mammalia) 359, insects (Insecta) 216.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .atomic import atomic_write_text

log = logging.getLogger(__name__)

GBIF_API = "https://api.gbif.org/v1"
TAXA = {"birds": 212, "amphibians": 131, "mammals": 359, "insects": 216}
DEFAULT_TAXA = ("birds", "amphibians", "mammals", "insects")
DEFAULT_MIN_RECORDS = 3  # a species seen fewer times than this near the point in those months is left out
DEFAULT_RADIUS_KM = 50.0
DEFAULT_WEEKS = 3
FACET_LIMIT = 1000  # species per taxon asked for (GBIF pages facets; the most recorded come first)
KM_PER_DEGREE = 111.32


class SpeciesListError(ValueError):
    """A species list cannot be made or read: the message says what to fix (or how to work offline)."""


@dataclass
class SpeciesList:
    """Species names (common names where GBIF has an English one), most recorded first."""

    names: list[str]
    records: dict[str, int] = field(default_factory=dict)  # name -> occurrence records in the query's place and months
    scientific: dict[str, str] = field(default_factory=dict)  # name -> scientific name
    query: dict = field(
        default_factory=dict
    )  # what was asked (place, months, radius, taxa, threshold); {} for a user file
    source: str = ""

    def describe(self) -> str:
        """One line for a command's output: how many species, from where, with which threshold."""
        if not self.query:
            return f"{len(self.names)} candidate species from {self.source}"
        q = self.query
        return (
            f"{len(self.names)} candidate species with at least {q['min_records']} GBIF occurrence records within "
            f"{q['radius_km']:g} km of {q['latitude']:.4f}, {q['longitude']:.4f} in months {q['months']} "
            f"({', '.join(q['taxa'])}); {q.get('dropped', 0)} rarer ones left out (--min-records)"
        )

    def match(self, label: str) -> str | None:
        """The list's name for ``label`` when the label names a species on the list by its common or its
        scientific name, else None. Compared without case, with ``_`` as a space (benchmarks write
        "Humpback_Whale") and runs of spaces as one, since datasets spell names their own way."""
        return self._match_keys.get(_name_key(label))

    @cached_property
    def _match_keys(self) -> dict[str, str]:
        # built once: a benchmark asks for each of its classes; a common name wins over a scientific one
        keys = {_name_key(self.scientific[n]): n for n in self.names if self.scientific.get(n)}
        return keys | {_name_key(n): n for n in self.names}

    def save(self, path: str | Path) -> Path:
        """Write the list as CSV (name, scientific_name, gbif_records), the query in comment lines above it."""
        lines = [
            f"# {self.describe()}",
            f"# query: {json.dumps(self.query, sort_keys=True)}" if self.query else "# query: none",
            "name,scientific_name,gbif_records",
        ]
        for name in self.names:
            row = [name, self.scientific.get(name, ""), str(self.records.get(name, ""))]
            lines.append(",".join(f'"{v}"' if "," in v or '"' in v else v for v in (c.replace('"', '""') for c in row)))
        return atomic_write_text(path, "\n".join(lines) + "\n")


def _name_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def months_around(date: dt.date, weeks: int) -> str:
    """GBIF's ``month`` filter for ``weeks`` either side of ``date``: "4,6" (a range), or across the new year
    two ranges joined by ';' ("11,12;1,2"), each sent as its own ``month`` parameter."""
    start, end = date - dt.timedelta(weeks=weeks), date + dt.timedelta(weeks=weeks)
    if weeks >= 26:
        return "1,12"
    if start.year == end.year:
        return f"{start.month},{end.month}"
    return f"{start.month},12;1,{end.month}"


def _get_json(url: str, params: dict, timeout: float) -> dict:
    # urllib, not requests: one GET of JSON, and the core install (predict, detect) has no requests
    query = urllib.parse.urlencode(params, doseq=True)
    request = urllib.request.Request(
        f"{url}?{query}" if query else url, headers={"User-Agent": "biolingual species list"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        raise SpeciesListError(
            f"GBIF could not be asked ({url}): {getattr(e, 'reason', e)}; work offline with "
            "--species-list FILE (a list saved by an earlier run, or one name per line)"
        ) from None


def _names(api: str, key: str, timeout: float) -> tuple[str, str]:
    """(common name or scientific name, scientific name) of a GBIF backbone species key."""
    species = _get_json(f"{api}/species/{key}", {}, timeout)
    scientific = (species.get("canonicalName") or species.get("scientificName") or str(key)).strip()
    common = (species.get("vernacularName") or "").strip()
    if not common:
        found = _get_json(f"{api}/species/{key}/vernacularNames", {"limit": 100}, timeout)
        english = [
            n.get("vernacularName", "").strip() for n in found.get("results") or [] if n.get("language") == "eng"
        ]
        common = next((n for n in english if n), "")
    return (common or scientific), scientific


def species_near(
    latitude: float,
    longitude: float,
    date: dt.date,
    *,
    weeks: int = DEFAULT_WEEKS,
    radius_km: float = DEFAULT_RADIUS_KM,
    taxa=DEFAULT_TAXA,
    min_records: int = DEFAULT_MIN_RECORDS,
    cache_dir: str | Path | None = None,
    api: str = GBIF_API,
    timeout: float = 30.0,
) -> SpeciesList:
    """The species of ``taxa`` with at least ``min_records`` GBIF occurrence records within ``radius_km`` of
    the point in the months around ``date`` (see the module docstring); cached in ``cache_dir``."""
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise SpeciesListError(f"no such place: latitude {latitude} (-90..90), longitude {longitude} (-180..180)")
    unknown = [t for t in taxa if t not in TAXA]
    if unknown:
        raise SpeciesListError(f"unknown taxa {unknown}: choose among {', '.join(TAXA)}")
    if radius_km <= 0 or min_records < 1:
        raise SpeciesListError("the radius must be above 0 km and --min-records at least 1")
    months = months_around(date, weeks)
    dlat = radius_km / KM_PER_DEGREE
    dlon = min(
        180.0, radius_km / (KM_PER_DEGREE * max(0.01, abs(math.cos(math.radians(latitude)))))
    )  # degrees shrink poleward
    query = {
        "latitude": round(latitude, 5),
        "longitude": round(longitude, 5),
        "radius_km": radius_km,
        "months": months,
        "weeks": weeks,
        "date": date.isoformat(),
        "taxa": list(taxa),
        "min_records": min_records,
        "api": api,
    }
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(
            json.dumps({k: v for k, v in query.items() if k != "min_records"}, sort_keys=True).encode()
        ).hexdigest()[:16]
        cache = Path(cache_dir) / f"gbif-{digest}.json"
    counts: dict[str, int] | None = None
    if cache is not None and cache.is_file():
        counts = json.loads(cache.read_text())["counts"]
    if counts is None:
        counts = {}
        for name in taxa:
            params = {
                "decimalLatitude": f"{latitude - dlat},{latitude + dlat}",
                "decimalLongitude": f"{longitude - dlon},{longitude + dlon}",
                "month": months.split(";"),
                "taxonKey": TAXA[name],
                "hasCoordinate": "true",
                "occurrenceStatus": "PRESENT",
                "limit": 0,
                "facet": "speciesKey",
                "facetLimit": FACET_LIMIT,
            }
            found = _get_json(f"{api}/occurrence/search", params, timeout)
            for facet in found.get("facets") or []:
                for entry in facet.get("counts") or []:
                    counts[str(entry["name"])] = counts.get(str(entry["name"]), 0) + int(entry["count"])
        if cache is not None:
            atomic_write_text(cache, json.dumps({"query": query, "counts": counts}, sort_keys=True))
    kept = sorted((k for k, n in counts.items() if n >= min_records), key=lambda k: (-counts[k], k))
    names, records, scientific = [], {}, {}
    name_cache = Path(cache_dir) / "gbif-names.json" if cache_dir is not None else None
    known = json.loads(name_cache.read_text()) if name_cache is not None and name_cache.is_file() else {}
    for key in kept:
        if key not in known:
            known[key] = list(_names(api, key, timeout))
        common, latin = known[key]
        if common in records:  # two keys, one name (a subspecies' key): add them up
            records[common] += counts[key]
            continue
        names.append(common)
        records[common], scientific[common] = counts[key], latin
    if name_cache is not None:
        atomic_write_text(name_cache, json.dumps(known, sort_keys=True))
    query["dropped"] = len(counts) - len(kept)
    if not names:
        raise SpeciesListError(
            f"GBIF has no species of {', '.join(taxa)} with at least {min_records} records within "
            f"{radius_km:g} km of {latitude}, {longitude} in months {months}: widen --radius-km or "
            "--weeks, or lower --min-records"
        )
    return SpeciesList(names, records, scientific, query, source=api)


def read_species_list(path: str | Path) -> SpeciesList:
    """A list saved by :meth:`SpeciesList.save`, a CSV with a ``name`` column, or one name per line
    (``#`` lines are comments); SpeciesListError naming the file when it holds no name."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SpeciesListError(f"cannot read species list '{path}': {e}") from None
    body = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    query = {}
    for line in lines:
        if line.startswith("# query: {"):
            query = json.loads(line[len("# query: ") :])
    names, records, scientific = [], {}, {}
    if body and body[0].split(",")[0].strip().lower() == "name":
        for row in csv.DictReader(body):
            name = (row.get("name") or "").strip()
            if name and name not in records:
                names.append(name)
                records[name] = int(row["gbif_records"]) if (row.get("gbif_records") or "").isdigit() else 0
                scientific[name] = (row.get("scientific_name") or "").strip()
    else:
        for line in body:
            name = line.strip()
            if name not in records:
                names.append(name)
                records[name] = 0
    if not names:
        raise SpeciesListError(f"species list '{path}' holds no name: write one name per line")
    return SpeciesList(names, records if query else {}, scientific, query, source=str(path))
