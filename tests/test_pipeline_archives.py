"""iNaturalist, GBIF and AnimalSpeak-CSV sources against a real HTTP server on 127.0.0.1 speaking
their JSON: id_above paging, per-sound licences, m4a audio, GBIF offset paging and common-name
look-ups, kept AnimalSpeak captions, excluded archives, and dedup across sources."""

from __future__ import annotations

import io
import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import av
import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from biolingual.synthetic import invented_species, synth_pattern
from data_pipeline.build import build
from data_pipeline.config import resolve_config

SPECIES = list(invented_species(4, seed=5).items())


def m4a_bytes(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for i in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(x[None, i : i + 1024].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV")
    return buf.getvalue()


def audio(i: int) -> np.ndarray:
    return synth_pattern(SPECIES[i % 4][1], 1.5, 44100, seed=i)


FILES = {f"/files/{i}.m4a": m4a_bytes(audio(i), 44100) for i in range(1, 4)}
FILES.update({f"/files/{i}.wav": wav_bytes(audio(i), 44100) for i in range(4, 9)})


def observation(i, base, sounds, description="", place="Somewhere Park"):
    name, p = SPECIES[i % 4]
    return {
        "id": i,
        "uri": f"https://www.inaturalist.org/observations/{i}",
        "description": description,
        "place_guess": place,
        "quality_grade": "research",
        "license_code": "cc-by",
        "user": {"login": f"user{i}", "name": f"User {i}"},
        "taxon": {"id": 100 + i, "name": p.scientific, "preferred_common_name": name, "rank": "species"},
        "sounds": sounds,
    }


def sound(sid, base, path, lic="cc-by", **kw):
    return {
        "id": sid,
        "license_code": lic,
        "attribution": f"(c) someone, some rights reserved ({lic})",
        "file_url": f"{base}{path}?1700000000" if path else None,
        "file_content_type": "audio/mp4",
        "flags": [],
        "hidden": False,
        **kw,
    }


def make_handler(seen: list):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status, body: bytes, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            seen.append((url.path, q))
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if url.path == "/inat/v1/observations":
                assert "page" not in q and q["order_by"] == "id" and q["sounds"] == "true"
                after = int(q["id_above"])
                pages = {
                    0: [
                        observation(
                            1, base, [sound(11, base, "/files/1.m4a"), sound(12, base, "/files/2.m4a", lic=None)]
                        ),
                        observation(
                            2,
                            base,
                            [sound(21, base, "/files/3.m4a"), sound(22, base, "/files/4.wav", hidden=True)],
                            description="calling",
                        ),
                    ],
                    2: [
                        observation(
                            3, base, [sound(31, base, "/files/5.wav", lic="cc-by-nc-nd"), sound(32, base, None)]
                        )
                    ],
                }
                return self._send(
                    200,
                    json.dumps(
                        {"total_results": 3, "page": 1, "per_page": 2, "results": pages.get(after, [])}
                    ).encode(),
                )
            if url.path == "/gbif/v1/occurrence/search":
                assert q["mediaType"] == "Sound"
                offset = int(q["offset"])
                name, p = SPECIES[3]
                occs = [
                    {
                        "key": 900 + offset,
                        "datasetKey": "b7ec1bf8-819b-11e2-bad2-00145eb45e9a",
                        "species": p.scientific,
                        "scientificName": p.scientific + " L., 1758",
                        "recordedBy": "K.-H. Frommolt",
                        "country": "Germany",
                        "media": [
                            {
                                "type": "Sound",
                                "format": "audio/wav",
                                "identifier": f"{base}/files/{6 + offset}.wav",
                                "references": f"https://www.animalsoundarchive.org/x/{offset}",
                                "license": "http://creativecommons.org/licenses/by-nc-sa/4.0/",
                                "creator": "Frommolt",
                            },
                            {"type": "StillImage", "identifier": f"{base}/img.jpg"},
                        ],
                    }
                ]
                return self._send(
                    200,
                    json.dumps(
                        {"offset": offset, "limit": 1, "endOfRecords": offset >= 1, "count": 2, "results": occs}
                    ).encode(),
                )
            if url.path == "/gbif/v1/species":
                return self._send(200, json.dumps({"results": [{"key": 4242, "scientificName": q["name"]}]}).encode())
            if url.path == "/gbif/v1/species/4242/vernacularNames":
                return self._send(
                    200,
                    json.dumps(
                        {
                            "results": [
                                {"vernacularName": "Rote Pfeifer", "language": "deu"},
                                {"vernacularName": SPECIES[3][0], "language": "eng"},
                            ]
                        }
                    ).encode(),
                )
            if url.path in FILES:
                return self._send(200, FILES[url.path], "audio/mp4")
            return self._send(404, b"no")

    return Handler


@pytest.fixture()
def archive(http_server):
    seen = []
    return http_server(make_handler(seen)).url, seen


def test_inaturalist_gbif_and_animalspeak_csv(archive, tmp_path):
    base, seen = archive
    csv_path = tmp_path / "AnimalSpeak.csv"
    name0, p0 = SPECIES[0]
    csv_path.write_text(
        ",url,source,recordist,species_common,species_scientific,caption,caption2\n"
        f"0,https://mirror.example.org/files/8.wav,xeno-canto,Rec A,{name0},{p0.scientific},A {name0} trilling,A "
        f"{p0.scientific} trilling\n1,https://mirror.example.org/files/1.m4a,inaturalist,Rec "
        f"B,{name0},{p0.scientific},A {name0} calling,\n2,https://macaulaylibrary.org/asset/1,macaulay,Rec "
        f"C,{name0},{p0.scientific},A {name0},A {p0.scientific}\n"
    )
    config = resolve_config(
        {
            "sources": [
                {
                    "type": "inaturalist",
                    "base_url": f"{base}/inat/v1",
                    "per_page": 2,
                    "rate": 0,
                    "params": {"taxon_id": 3},
                },
                {
                    "type": "gbif",
                    "base_url": f"{base}/gbif/v1",
                    "limit": 1,
                    "rate": 0,
                    "params": {"datasetKey": "b7ec1bf8-819b-11e2-bad2-00145eb45e9a"},
                },
                {"type": "animalspeak-csv", "path": str(csv_path), "base_url": base, "rate": 0},
            ],
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
        }
    )
    summary = build(config, tmp_path / "out", progress=False)
    samples = {
        s["__key__"]: json.loads(s["json"])
        for s in wds.WebDataset(str(tmp_path / "out" / "train-000000.tar"), shardshuffle=False)
    }
    assert sorted(samples) == ["as_0", "gbif_900-0", "gbif_901-0", "inat_1-11", "inat_2-21"]
    inat = samples["inat_1-11"]
    assert inat["license"] == "cc-by" and inat["original_sample_rate"] == 44100 and inat["recordist"] == "User 1"
    assert inat["page_url"] == "https://www.inaturalist.org/observations/1" and inat["attribution"].startswith("(c)")
    gbif = samples["gbif_900-0"]
    assert gbif["species_common"] == SPECIES[3][0] and gbif["license"] == "cc-by-nc-sa"
    assert samples["as_0"]["text"] == [f"A {name0} trilling", f"A {p0.scientific} trilling"]
    by_source = {(src, st): n for src, st, n in summary["stages"]}
    assert by_source[("inaturalist", "excluded")] == 4  # no licence, hidden, ND licence, no file
    assert by_source[("animalspeak-csv", "duplicate")] == 1  # the same file as iNat sound 11
    assert by_source[("animalspeak-csv", "excluded")] == 1  # Macaulay
    assert sum(n for _, st, n in summary["stages"] if st == "written") == 5
    inat_calls = [q["id_above"] for path, q in seen if path.endswith("/observations")]
    assert inat_calls == ["0", "2", "3"]
    assert [q["offset"] for path, q in seen if path.endswith("/occurrence/search")] == ["0", "1"]
    assert sum(1 for path, _ in seen if path.endswith("/vernacularNames")) == 1  # looked up once per species
    assert not any("macaulaylibrary" in path for path, _ in seen)


def test_gbif_copy_of_a_xeno_canto_recording_is_a_duplicate(tmp_path):
    from data_pipeline.manifest import Manifest
    from data_pipeline.sources.gbif import XENO_CANTO_DATASET, GbifSource
    from data_pipeline.sources.xeno_canto import XenoCantoSource

    xc = XenoCantoSource.to_record(
        {
            "id": "694038",
            "gen": "Larus",
            "sp": "fuscus",
            "en": "Lesser Black-backed Gull",
            "file": "https://xeno-canto.org/694038/download",
            "lic": "//creativecommons.org/licenses/by/4.0/",
        }
    )
    occ = {
        "key": 77,
        "datasetKey": XENO_CANTO_DATASET,
        "catalogNumber": "XC694038",
        "species": "Larus fuscus",
        "vernacularName": "Lesser Black-backed Gull",
        "media": [
            {
                "type": "Sound",
                "identifier": "https://xeno-canto.org/sounds/uploaded/ABC/XC694038.mp3",
                "license": "http://creativecommons.org/licenses/by/4.0/",
            }
        ],
    }
    (gbif,) = GbifSource(common_names=False).to_records(occ)
    assert gbif.license == "cc-by" and gbif.species_common == "Lesser Black-backed Gull"
    for first, second in ((xc, gbif), (gbif, xc)):  # whichever source is listed first keeps the recording
        m = Manifest(tmp_path / f"{first.source}.sqlite")
        m.add_record(first, first.audio_url, "train", True, "listed")
        assert m.find_duplicate(second.uid, second.audio_url, second.aliases) == first.uid
        m.close()
