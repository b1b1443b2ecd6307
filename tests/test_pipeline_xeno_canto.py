"""The Xeno-canto v3 source against a real HTTP server on 127.0.0.1 speaking its JSON: paging,
429 with Retry-After, 500s, timeouts, truncated transfers, corrupt audio, empty ``file`` fields,
licences, duplicates, the User-Agent, the request rate, bounded concurrency and key secrecy."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import soundfile as sf
import webdataset as wds

from biolingual.synthetic import invented_species, synth_pattern
from data_pipeline.build import build
from data_pipeline.config import resolve_config
from data_pipeline.http import FetchError, PoliteClient, retry_after_seconds
from data_pipeline.sources.xeno_canto import XenoCantoSource

KEY = "xc-secret-key-4242"
SPECIES = invented_species(3, seed=7)


def _audio(fmt: str, seed: int) -> bytes:
    name, p = list(SPECIES.items())[seed % 3]
    buf = io.BytesIO()
    sf.write(buf, synth_pattern(p, 1.5, 32000, seed=seed), 32000, format=fmt)
    return buf.getvalue()


class Archive:
    """State of the fake archive: what each path does on each request, and what the server saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.log: list[tuple[float, str, str]] = []  # (time, path, user agent)
        self.active = 0
        self.max_active = 0
        self.files = {f"/audio/{i}": _audio("WAV" if i % 2 else "MP3", i) for i in range(1, 9)}
        self.files["/audio/corrupt"] = b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 8
        self.gave_up: list[str] = []  # paths whose client closed the connection while waiting for the answer
        self.retry_after_sent = 0.0  # when the 429 with Retry-After: 1 was sent


def recording(i, base, file_path, lic="//creativecommons.org/licenses/by-nc-sa/4.0/", en=None):
    name, p = list(SPECIES.items())[i % 3]
    gen, sp = p.scientific.split()
    return {
        "id": str(i),
        "gen": gen,
        "sp": sp,
        "ssp": "",
        "grp": "birds",
        "en": en or name,
        "rec": f"Recordist {i}",
        "cnt": "Freedonia",
        "loc": "Lake Placid",
        "lat": "",
        "lon": "",
        "type": "song",
        "sex": "",
        "stage": "",
        "file": f"{base}{file_path}" if file_path else "",
        "file-name": f"XC{i}.mp3",
        "lic": lic,
        "q": "A",
        "length": "0:01",
        "smp": 32000,
        "rmk": "",
        "url": f"//xeno-canto.org/{i}",
    }


def make_handler(archive: Archive):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status, body: bytes, ctype="application/json", headers=(), length=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _wait_until_the_client_gives_up(self) -> bool:
            """Block until the client closes this connection (True); a GET sends nothing more, so the
            first thing a read returns is the end of the stream. The moment is the client's, not a
            sleep's; the 60 s limit only keeps a broken client from hanging the suite."""
            self.connection.settimeout(60)
            try:
                return self.connection.recv(1) == b""
            except OSError:
                return False

        def do_GET(self):
            url = urlparse(self.path)
            with archive.lock:
                n = archive.hits[url.path] = archive.hits.get(url.path, 0) + 1
                archive.log.append((time.monotonic(), url.path, self.headers.get("User-Agent", "")))
                archive.active += 1
                archive.max_active = max(archive.max_active, archive.active)
            try:
                self.route(url, n)
            finally:
                with archive.lock:
                    archive.active -= 1

        def route(self, url, n):
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if url.path == "/api/3/recordings":
                q = parse_qs(url.query)
                if q.get("key") != [KEY]:
                    return self._send(
                        401,
                        json.dumps(
                            {"error": {"code": "missing_parameter", "message": "Missing or invalid 'key' parameter"}}
                        ).encode(),
                    )
                page = int(q["page"][0])
                if page == 1 and n == 1:
                    archive.retry_after_sent = time.monotonic()  # before the client can have the answer
                    return self._send(429, b'{"error": "slow down"}', headers=[("Retry-After", "1")])
                if page == 2 and archive.hits.get("page2", 0) == 0:
                    archive.hits["page2"] = 1
                    return self._send(500, b"oops", ctype="text/plain")
                recs = (
                    [recording(i, base, f"/audio/{i}") for i in range(1, 5)]
                    if page == 1
                    else [recording(i, base, f"/audio/{i}") for i in range(5, 9)]
                    + [
                        recording(20, base, ""),  # restricted species: empty file field
                        recording(21, base, "/audio/1"),  # the same audio as XC1
                        recording(22, base, "/audio/nd", lic="//creativecommons.org/licenses/by-nc-nd/4.0/"),
                        recording(23, base, "/audio/corrupt"),
                        recording(24, base, "/audio/truncated"),
                        recording(25, base, "/audio/missing"),
                        recording(26, base, "/audio/slow"),
                    ]
                )
                body = {
                    "numRecordings": str(len(recs)),
                    "numSpecies": "3",
                    "page": page,
                    "numPages": 2,
                    "recordings": recs,
                }
                return self._send(200, json.dumps(body).encode())
            if url.path == "/audio/3" and n <= 2:
                return self._send(503, b"busy", ctype="text/plain")
            if url.path == "/audio/slow":
                if n == 1:  # no answer until the client has given up waiting (its timeout), whenever that is
                    if self._wait_until_the_client_gives_up():
                        archive.gave_up.append(url.path)
                    self.close_connection = True
                    return
                return self._send(200, archive.files["/audio/5"], ctype="audio/wav")
            if url.path in ("/audio/trickle", "/audio/trickle-headers"):
                # one byte every 0.2 s: every read comes well within any per-read timeout, and the
                # whole answer would take 200 s (headers first, or the body of a normal header)
                body = archive.files["/audio/5"][:1000]
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                slow = head + body if url.path.endswith("headers") else body
                self.wfile.write((head + body)[: -len(slow)])  # what is sent at once: the headers, or nothing
                for i in range(len(slow)):
                    self.wfile.write(slow[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)  # the server's pace (the test waits for nothing)
                self.close_connection = True
                return
            if url.path == "/audio/truncated":
                data = archive.files["/audio/6"]
                self._send(200, data[: len(data) // 2], ctype="audio/mpeg", length=len(data))
                self.close_connection = True
                return
            if url.path in archive.files:
                return self._send(200, archive.files[url.path], ctype="audio/mpeg")
            return self._send(404, b"not found", ctype="text/plain")

    return Handler


@pytest.fixture()
def server(http_server):
    archive = Archive()
    # quiet: clients dropping timed-out connections are expected
    return http_server(make_handler(archive), quiet=True).url, archive


def test_build_from_xeno_canto_with_a_misbehaving_server(server, tmp_path, monkeypatch, caplog):
    base, archive = server
    monkeypatch.setenv("XENO_CANTO_API_KEY", KEY)
    caplog.set_level(logging.INFO)
    # timeout: what /audio/slow's first answer waits for (the server holds it until the client gives up);
    # far longer than any other answer of a local server takes, so no other request times out
    config = resolve_config(
        {
            "sources": [
                {
                    "type": "xeno-canto",
                    "query": "grp:birds q:A",
                    "base_url": f"{base}/api/3",
                    "rate": 20,
                    "retries": 3,
                    "backoff": 0.05,
                    "timeout": 2,
                }
            ],
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            "download": {"concurrency": 2},
        }
    )
    out = tmp_path / "out"
    summary = build(config, out, progress=False)
    samples = {
        s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False)
    }
    assert sorted(samples) == sorted(f"xc_{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 26))
    meta = samples["xc_3"]
    assert meta["license"] == "cc-by-nc-sa" and meta["page_url"] == "https://xeno-canto.org/3"
    assert meta["text"][0].startswith("The song of") and "XC3" in meta["attribution"]
    assert meta["original_sample_rate"] == 32000 and meta["recordist"] == "Recordist 3"
    stages = {st: n for _, st, n in summary["stages"]}
    assert stages == {"written": 9, "excluded": 2, "duplicate": 1, "rejected": 2, "failed": 1}
    reasons = {r[2].split(":")[0] if not r[2].startswith("fetch") else r[2][:60] for r in summary["reasons"]}
    assert any("restricted" in r for r in reasons) and any("licence not accepted" in r for r in reasons)
    assert any("undecodable" in r for r in reasons) and any("HTTP 404" in r for r in reasons)
    failed = [r[2] for r in summary["reasons"] if r[1] == "failed"]
    assert len(failed) == 1 and "/audio/truncated" in failed[0] and "IncompleteRead" in failed[0]
    # politeness: User-Agent, Retry-After honoured, retries after 500/503/timeout, rate, concurrency
    assert all(ua.startswith("biolingual-data-pipeline/") for _, _, ua in archive.log)
    page1 = [t for t, path, _ in archive.log if path == "/api/3/recordings"]
    assert page1[1] >= archive.retry_after_sent + 1.0  # waited Retry-After: 1
    assert archive.hits["/audio/3"] == 3 and archive.hits["/audio/truncated"] == 4
    assert archive.gave_up == ["/audio/slow"] and archive.hits["/audio/slow"] == 2  # timed out, then retried
    # at most 20 requests/s. Every request after the 429 started in its own slot of the client's 20/s schedule,
    # the first slot at least 1 s after the 429 was sent; so however late a busy machine delivers each one,
    # the k-th arrival (0-based) is at least k slots after that (of any k + 1 requests one has slot k or later)
    later = sorted(t for t, _, _ in archive.log[1:])
    assert all(t >= archive.retry_after_sent + 1.0 + k * 0.05 - 1e-3 for k, t in enumerate(later)), later
    assert archive.max_active <= 2
    # the key is never written or logged
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text
    # a rerun retries only the failed record (the truncated one), and lists nothing again
    before = dict(archive.hits)
    build(config, out, progress=False)
    assert {k: v - before.get(k, 0) for k, v in archive.hits.items() if v != before.get(k, 0)} == {
        "/audio/truncated": 4
    }


def test_missing_or_wrong_key_is_a_clear_error_without_the_key(server, monkeypatch):
    base, _ = server
    monkeypatch.delenv("XENO_CANTO_API_KEY", raising=False)
    from data_pipeline.sources import SourceError

    with pytest.raises(SourceError, match="XENO_CANTO_API_KEY"):
        next(XenoCantoSource("grp:frogs", base_url=f"{base}/api/3").records())
    source = XenoCantoSource("grp:frogs", base_url=f"{base}/api/3", key="wrong-key-123", rate=0)
    with pytest.raises(FetchError) as e:
        next(source.records())
    assert "HTTP 401" in str(e.value) and "wrong-key-123" not in str(e.value)


def test_record_fields_protocol_relative_urls_and_retry_after_dates():
    rec = XenoCantoSource.to_record(
        {
            "id": "694038",
            "gen": "Larus",
            "sp": "fuscus",
            "en": "Lesser Black-backed Gull",
            "rec": "A B",
            "file": "//xeno-canto.org/694038/download",
            "lic": "//creativecommons.org/licenses/by-nc-sa/4.0/",
            "type": "call, flight call",
        }
    )
    assert rec.key == "xc_694038" and rec.audio_url == "https://xeno-canto.org/694038/download"
    assert rec.license == "cc-by-nc-sa" and rec.sound_type == "call" and rec.species == "larus fuscus"
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert 0 <= retry_after_seconds(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))) <= 6


def test_rate_limit_spaces_requests(server):
    base, archive = server
    client = PoliteClient(rate=5, retries=0)
    start = time.monotonic()
    for _ in range(4):
        client.download(f"{base}/audio/1", Path("/dev/null"), 10**7)
    assert time.monotonic() - start >= 0.6 - 0.02  # 4 requests at 5/s: 3 gaps of 0.2 s


@pytest.mark.parametrize("path", ["/audio/trickle", "/audio/trickle-headers"])
def test_a_trickling_server_is_cut_off_at_the_deadline(server, tmp_path, path):
    """A server sending one byte every 0.2 s never trips the 5 s per-read timeout; the 1 s deadline
    stops the request (headers or body), and it is not retried within the run."""
    base, archive = server
    client = PoliteClient(rate=0, retries=3, backoff=0, timeout=5, deadline=1)
    start = time.monotonic()
    with pytest.raises(FetchError, match="deadline of 1 s") as e:
        client.download(f"{base}{path}", tmp_path / "x.wav", 10**7)
    elapsed = time.monotonic() - start
    assert e.value.transient  # the record is 'failed': tried again by the next run
    # the deadline cannot fire early; the bound above is loose (the whole answer would take 200 s) so that a
    # loaded machine's late wake-ups cannot fail the test
    assert 0.9 <= elapsed < 60, elapsed
    assert archive.hits[path] == 1


def test_a_failing_source_does_not_stop_the_others(server, tmp_path, monkeypatch, capsys):
    base, _ = server
    monkeypatch.setenv("XENO_CANTO_API_KEY", "not-the-right-key")
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "sources": [
                    {"type": "xeno-canto", "query": "grp:birds", "base_url": f"{base}/api/3", "rate": 0, "retries": 0},
                    {"type": "synthetic", "species": 2, "clips_per_species": 2, "seconds": 1.0},
                ],
                "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            }
        )
    )
    from data_pipeline.__main__ import main

    assert main(["build", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "source #1 (xeno-canto) stopped listing" in captured.err and "HTTP 401" in captured.err
    assert "not-the-right-key" not in captured.err + captured.out
    assert "| synthetic | 0 | 0 | 4 |" in captured.out


def calm_handler(archive: Archive):
    """The archive without misbehaviour: 2 pages of 3 recordings, their audio, and a log of every request."""

    class Handler(make_handler(archive)):
        def route(self, url, n):
            if url.path != "/api/3/recordings":
                return self._send(200, archive.files[url.path], ctype="audio/mpeg")
            page = int(parse_qs(url.query)["page"][0])
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            recs = [recording(i, base, f"/audio/{i}") for i in range(3 * page - 2, 3 * page + 1)]
            body = {"numRecordings": "6", "numSpecies": "3", "page": page, "numPages": 2, "recordings": recs}
            return self._send(200, json.dumps(body).encode())

    return Handler


def test_partitions_share_the_request_rate_and_list_the_catalogue_once(http_server, tmp_path, monkeypatch):
    """Two --partition runs of one build folder, side by side against one archive: together they keep to the
    source's rate (each alone used to, so two asked twice as fast) and the catalogue is listed once."""
    archive = Archive()
    base = http_server(calm_handler(archive)).url
    monkeypatch.setenv("XENO_CANTO_API_KEY", KEY)
    rate = 2.0
    config = resolve_config(
        {
            "sources": [
                {
                    "type": "xeno-canto",
                    "query": "grp:birds q:A",
                    "base_url": f"{base}/api/3",
                    "rate": rate,
                    "per_page": 3,
                    "retries": 0,
                }
            ],
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            "download": {"concurrency": 2},
        }
    )
    out = tmp_path / "out"
    # two processes, as on two machines (forked: no re-import); the server, in this one, logs their requests
    parts = [
        multiprocessing.get_context("fork").Process(
            target=build, args=(config, out, (i, 2)), kwargs={"progress": False}
        )
        for i in (1, 2)
    ]
    for p in parts:
        p.start()
    for p in parts:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in parts] == [0, 0]
    assert archive.hits["/api/3/recordings"] == 2  # pages 1 and 2, once (each part listing used to ask 4 times)
    samples = [
        s["__key__"] for tar in sorted(out.glob("train-*.tar")) for s in wds.WebDataset(str(tar), shardshuffle=False)
    ]
    assert sorted(samples) == [f"xc_{i}" for i in range(1, 7)]
    times = sorted(t for t, _, _ in archive.log)
    assert len(times) == 2 + 6
    # requests start at least 1/rate apart whichever part sends them; seen by the server, one may arrive late
    # (the gap before it grows, the one after shrinks), so half of that is the bound. Unshared, the two parts'
    # first listing requests came within milliseconds of each other.
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.5 / rate, gaps
