"""The review page over HTTP (`biolingual review`): a real uvicorn server on 127.0.0.1 over an index that
`biolingual index` built from synthetic recordings with the tiny model.

Security (path traversal, token, Host/Origin, upload size, non-local bind), durability (kill -9 of the
server between labels), concurrent writers, and windows whose recording went missing or unreadable.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pytest
import soundfile as sf

import biolingual.extras as extras
from biolingual.cli import main
from biolingual.synthetic import synth_call
from biolingual.windows import read_segment

pytest.importorskip("fastapi", reason="the review page needs the agile extra")

from biolingual.agile.app import create_app
from biolingual.agile.labels import LabelStore
from biolingual.agile.server import ReviewServer
from biolingual.agile.session import AgileSession

RATE = 16_000
# name -> (species, seconds); 10 s windows every 5 s
RECORDINGS = {
    "owl.wav": ("Barred Owl", 60.0),
    "peeper.wav": ("Spring Peeper", 40.0),
    "loon.flac": ("Common Loon", 40.0),
}


def build_index(
    root: Path, model_dir: Path, broken: bool = False, recordings: dict | None = None, deployments: str | None = None
) -> Path:
    """Recordings under ``root/rec`` indexed by the real command into ``root/index``. ``broken``: also a
    recording deleted after indexing (gone.wav) and one overwritten with bytes that are no audio (noise.wav).
    ``recordings``: name (a path under rec/) -> (species, seconds), :data:`RECORDINGS` if not given.
    ``deployments``: the text of a deployments CSV, given to the command as ``--deployments``."""
    rec = root / "rec"
    rec.mkdir(parents=True)
    for i, (name, (species, seconds)) in enumerate((recordings or RECORDINGS).items()):
        (rec / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(rec / name, synth_call(species, seconds, RATE, seed=i), RATE)
    if broken:
        for name in ("gone.wav", "noise.wav"):
            sf.write(rec / name, synth_call("Field Cricket", 10.0, RATE, seed=9), RATE)
    placed = []
    if deployments is not None:
        (root / "deployments.csv").write_text(deployments)
        placed = ["--deployments", str(root / "deployments.csv")]
    assert (
        main(["index", str(rec), "--out", str(root / "index"), "--model", str(model_dir), "--hop", "5", *placed]) == 0
    )
    if broken:
        (rec / "gone.wav").unlink()
        (rec / "noise.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + os.urandom(2000))
    return root / "index"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, saved_model):
    return build_index(tmp_path_factory.mktemp("review"), saved_model, broken=True)


@pytest.fixture(scope="module")
def session(index_dir):
    return AgileSession(index_dir)


@pytest.fixture(scope="module")
def server(session):
    with ReviewServer(create_app(session, max_upload_bytes=256 * 1024), "127.0.0.1", 0) as s:
        yield s


@pytest.fixture(scope="module")
def token_server(session):
    with ReviewServer(create_app(session, token="s3cret-token"), "127.0.0.1", 0) as s:
        yield s


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, chunked: bool = False):
    """One request on its own connection, the path sent exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def add_target(port: int, name: str, prompt: str = "The sound of a Barred Owl", headers: dict | None = None) -> int:
    form = urlencode({"name": name, "prompt": prompt}).encode()
    status, head, _ = request(
        port, "POST", "/targets", form, {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    )
    return status


def rows_of(session, name: str) -> list[int]:
    files = [Path(f).name for f in session.index.files]
    return [i for i, f in enumerate(session.index.file_ids) if files[f] == name]


# ---- security -------------------------------------------------------------------------------------


def test_a_non_local_bind_without_token_is_refused(index_dir, capsys):
    assert main(["review", str(index_dir), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --host 0.0.0.0") and "--token" in err
    assert main(["review", str(index_dir), "--host", "192.0.2.7", "--port", "0"]) == 1
    assert "--token" in capsys.readouterr().err


def test_check_serves_one_health_request_and_exits(index_dir, capsys):
    assert main(["review", str(index_dir), "--port", "0", "--check"]) == 0
    assert "review page answered at http://127.0.0.1:" in capsys.readouterr().out


def test_serving_leaves_the_callers_logging_alone(index_dir, capsys):
    """uvicorn's default logging config would close every handler of the process: a caller's, and absl's
    (imported with perch-hoplite), which then closes the stream it writes to (here it closed pytest's capture
    file, and every later test of that process failed)."""
    import logging

    class Recording(logging.Handler):
        closed = False

        def emit(self, record):
            pass

        def close(self):
            Recording.closed = True
            super().close()

    handler = Recording()
    logging.getLogger("a_callers_logger").addHandler(handler)
    try:
        assert main(["review", str(index_dir), "--port", "0", "--check"]) == 0
        assert not Recording.closed and handler in logging.getLogger("a_callers_logger").handlers
    finally:
        logging.getLogger("a_callers_logger").removeHandler(handler)


def test_a_missing_extra_names_agile(index_dir, monkeypatch, capsys):
    real = extras.importlib.import_module

    def without_uvicorn(name, *args):
        if name.split(".")[0] == "uvicorn":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *args)

    monkeypatch.setattr(extras.importlib, "import_module", without_uvicorn)
    assert main(["review", str(index_dir)]) == 1
    assert "pip install 'biolingual[agile]'" in capsys.readouterr().err


def test_paths_from_the_request_reach_nothing_outside_the_index(server, session, tmp_path):
    secret = tmp_path / "secret.wav"
    sf.write(secret, np.full(RATE, 0.25, np.float32), RATE)
    marker = secret.read_bytes()[-64:]
    app_source = b"def create_app"
    static_up = "/static/" + "../" * 12
    attempts = [
        "/windows/../../etc/passwd/audio.wav",
        "/windows/..%2F..%2F..%2Fetc%2Fpasswd/audio.wav",
        f"/windows/{quote(str(secret), safe='')}/audio.wav",
        f"/windows/{quote(str(secret), safe='')}/spectrogram.png",
        f"/windows/%2e%2e%2f{quote(secret.name)}/audio.wav",
        "/windows/-1/audio.wav",
        "/windows/0x1/audio.wav",
        "/windows/1e3/spectrogram.png",
        f"/windows/{len(session.index)}/audio.wav",
        "/windows/99999999999/spectrogram.png",
        "/static/../app.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2fapp.py",
        static_up + str(secret).lstrip("/"),
        "/static/" + quote(str(secret), safe=""),
        "/static//" + str(secret).lstrip("/"),
        "/export.raven.txt?target=" + quote("../../" + str(secret)),
    ]
    for path in attempts:
        status, _, body = request(server.port, "GET", path)
        assert status in (400, 404), (path, status)
        assert marker not in body and app_source not in body, path
    # a path in the query string is ignored: the window of the row is what comes back
    row = rows_of(session, "owl.wav")[0]
    status, head, body = request(server.port, "GET", f"/windows/{row}/audio.wav?path={quote(str(secret))}")
    assert status == 200 and head["content-type"] == "audio/wav" and marker not in body


def test_a_token_is_required_on_every_request_when_set(token_server, session):
    port = token_server.port
    row = rows_of(session, "owl.wav")[0]
    for path in ("/", "/health", "/static/review.js", f"/windows/{row}/audio.wav", f"/windows/{row}/spectrogram.png"):
        assert request(port, "GET", path)[0] == 401, path
        assert request(port, "GET", path, headers={"X-BioLingual-Token": "wrong"})[0] == 403, path
        assert request(port, "GET", path, headers={"X-BioLingual-Token": "s3cret-token"})[0] == 200, path
    assert request(port, "GET", "/health", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
    assert request(port, "GET", "/health", headers={"Cookie": "biolingual_token=nope"})[0] == 403
    # a first visit with ?token= sets the cookie and drops the token from the address
    status, head, _ = request(port, "GET", "/?token=s3cret-token")
    assert status == 303 and head["location"] == "/" and "biolingual_token=s3cret-token" in head["set-cookie"]
    assert "httponly" in head["set-cookie"].lower() and "samesite=strict" in head["set-cookie"].lower()
    assert request(port, "GET", "/", headers={"Cookie": "biolingual_token=s3cret-token"})[0] == 200
    assert request(port, "GET", "/?token=guess")[0] == 403
    # writes too: nothing is stored without the token
    assert add_target(port, "Tokened") == 401
    assert "Tokened" not in [t.name for t in session.labels.targets()]
    assert add_target(port, "Tokened", headers={"X-BioLingual-Token": "s3cret-token"}) == 303
    label = {"target": "Tokened", "row": 0, "value": "positive"}
    assert request(port, "POST", "/api/label", label)[0] == 401
    assert session.labels.labels("Tokened") == {}
    assert request(port, "POST", "/api/label", label, {"X-BioLingual-Token": "s3cret-token"})[0] == 200
    assert session.labels.labels("Tokened") == {0: "positive"}


def test_other_hosts_and_origins_are_refused_without_a_token(server, session):
    assert add_target(server.port, "Origins") == 303
    assert request(server.port, "GET", "/health", headers={"Host": "attacker.example:8765"})[0] == 400
    label = {"target": "Origins", "row": 1, "value": "positive"}
    assert request(server.port, "POST", "/api/label", label, {"Origin": "http://attacker.example"})[0] == 403
    assert session.labels.labels("Origins") == {}
    same = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert request(server.port, "POST", "/api/label", label, same)[0] == 200
    assert session.labels.labels("Origins") == {1: "positive"}


def test_writes_from_a_null_or_foreign_origin_and_non_json_bodies_are_refused(server, session):
    """A sandboxed iframe or a file: page sends `Origin: null`, and a text/plain body needs no CORS preflight: no
    label, undo or target is written by such a request (the curl of issue 25), nor by a JSON body that is not sent
    as application/json, nor by a browser's cross-site request that carries no Origin (Sec-Fetch-Site). The page's
    own requests (same Origin, application/json, or a same-origin form) still work."""
    port = server.port
    assert add_target(port, "Null origin") == 303
    label = json.dumps({"target": "Null origin", "row": "7", "value": "negative"}).encode()
    null = {"Origin": "null"}
    # the exact request of the issue: Origin null, text/plain
    assert request(port, "POST", "/api/label", label, {**null, "Content-Type": "text/plain"})[0] == 403
    assert request(port, "POST", "/api/label", label, {**null, "Content-Type": "application/json"})[0] == 403
    # no Origin (curl, scripts) but not JSON: refused too, before the body is read as JSON
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        status, _, answer = request(port, "POST", "/api/label", label, {"Content-Type": ctype} if ctype else {})
        assert status == 415 and b"application/json" in answer, (ctype, status)
    # a browser's cross-site request that left Origin out still names where it came from
    cross = {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}
    assert request(port, "POST", "/api/label", label, cross)[0] == 403
    assert session.labels.labels("Null origin") == {}
    # the same label from the page itself (its Origin, JSON) is stored, and /api/undo is guarded alike
    own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    assert request(port, "POST", "/api/label", label, own)[0] == 200
    undo = json.dumps({"target": "Null origin"}).encode()
    assert request(port, "POST", "/api/undo", undo, {**null, "Content-Type": "text/plain"})[0] == 403
    assert request(port, "POST", "/api/undo", undo, {"Content-Type": "text/plain"})[0] == 415
    assert session.labels.labels("Null origin") == {7: "negative"}
    # the form that adds a target: refused from Origin null, accepted from the page's own origin
    assert add_target(port, "From a sandbox", headers=null) == 403
    assert add_target(port, "From a sandbox", headers={"Origin": "http://127.0.0.1:1"}) == 403  # another port
    assert "From a sandbox" not in {t.name for t in session.targets()}
    assert add_target(port, "From the page", headers={"Origin": f"http://127.0.0.1:{port}"}) == 303


def test_names_and_prompts_are_escaped_in_the_page(server):
    name = 'Owl <img src=x onerror="alert(1)">'
    assert add_target(server.port, name, prompt="<script>alert(2)</script>") == 303
    for path in ("/", f"/review?target={quote(name, safe='')}"):
        status, _, page = request(server.port, "GET", path)
        assert status == 200 and b"<img src=x" not in page and b"<script>alert" not in page
        assert b"&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


def _multipart(fields: dict, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="example_file"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_uploaded_examples_have_a_size_limit(server, session):
    clip = io.BytesIO()
    sf.write(clip, synth_call("Barred Owl", 3.0, RATE, seed=5), RATE, format="WAV")
    body, kind = _multipart({"name": "Owl by example"}, "owl call.wav", clip.getvalue())
    assert len(body) < 256 * 1024
    status, head, _ = request(server.port, "POST", "/targets", body, {"Content-Type": kind})
    assert status == 303 and head["location"] == "/review?target=Owl%20by%20example"
    target = session.labels.target("Owl by example")
    assert target.example_embedding is not None and target.prompt is None

    big, kind = _multipart({"name": "Too big"}, "big.wav", os.urandom(300 * 1024))
    assert request(server.port, "POST", "/targets", big, {"Content-Type": kind})[0] == 413
    # announced by no Content-Length: counted as it arrives
    chunks = (big[i : i + 16384] for i in range(0, len(big), 16384))
    assert request(server.port, "POST", "/targets", chunks, {"Content-Type": kind}, chunked=True)[0] == 413
    assert "Too big" not in [t.name for t in session.labels.targets()]

    junk, kind = _multipart({"name": "Junk"}, "junk.wav", b"not audio at all" * 100)
    status, _, page = request(server.port, "POST", "/targets", junk, {"Content-Type": kind})
    assert status == 400 and b"junk.wav" in page and b"could not be used" in page
    assert request(server.port, "GET", "/health")[0] == 200


# ---- what the page serves ---------------------------------------------------------------------------


def test_window_audio_and_spectrogram_come_from_the_index(server, session):
    row = rows_of(session, "owl.wav")[2]
    path, start, end = session.window(row)
    status, head, body = request(server.port, "GET", f"/windows/{row}/audio.wav")
    assert status == 200 and head["content-type"] == "audio/wav"
    served, rate = sf.read(io.BytesIO(body), dtype="float32", always_2d=True)
    expected, file_rate = read_segment(path, start, end)
    assert rate == file_rate and served.shape == expected.shape
    assert np.abs(served - expected).max() < 2 / 32768  # 16-bit PCM of the same samples

    status, head, png = request(server.port, "GET", f"/windows/{row}/spectrogram.png")
    assert status == 200 and head["content-type"] == "image/png"
    image = pytest.importorskip("matplotlib.image").imread(io.BytesIO(png))
    mel = session.model.front_end.config
    frames = (end - start) * mel.sampling_rate // mel.hop_length + 1
    assert image.shape == (2 * mel.n_mels, frames, 3)
    assert image.std() > 0.05  # calls and noise, not one flat colour


def test_missing_and_unreadable_recordings_answer_an_error_and_the_server_goes_on(server, session):
    assert add_target(server.port, "Errors") == 303
    for name, status, words in (("gone.wav", 404, "is missing"), ("noise.wav", 422, "cannot be read")):
        row = rows_of(session, name)[0]
        for kind in ("audio.wav", "spectrogram.png"):
            got, head, body = request(server.port, "GET", f"/windows/{row}/{kind}")
            assert got == status and head["content-type"] == "application/json"
            error = json.loads(body)["error"]
            assert name in error and words in error and f"window {row}" in error
        # labelling such a window still works (the label is about the window, not its audio)
        assert request(server.port, "POST", "/api/label", {"target": "Errors", "row": row, "value": "unsure"})[0] == 200
    assert request(server.port, "GET", "/health")[0] == 200
    assert request(server.port, "GET", f"/windows/{rows_of(session, 'owl.wav')[0]}/audio.wav")[0] == 200
    status, _, page = request(server.port, "GET", "/review?target=Errors")
    assert status == 200 and b'class="card"' in page


def test_bad_label_requests_are_refused(server):
    assert add_target(server.port, "Bad requests") == 303
    for body, status in (
        ({"target": "Bad requests", "row": 0, "value": "maybe"}, 400),
        ({"target": "Bad requests", "row": "../0", "value": "positive"}, 400),
        ({"target": "Bad requests", "row": 10**9, "value": "positive"}, 404),
        ({"target": "No such target", "row": 0, "value": "positive"}, 404),
        ([1, 2], 400),
    ):
        got, _, answer = request(server.port, "POST", "/api/label", body)
        assert got == status and json.loads(answer)["error"], body
    assert request(server.port, "POST", "/api/label", b"{not json", {"Content-Type": "application/json"})[0] == 400


def test_exports_undo_and_the_next_batch(server, session):
    assert add_target(server.port, "Exports") == 303
    owl, loon = rows_of(session, "owl.wav"), rows_of(session, "loon.flac")
    for row, value in ((owl[0], "positive"), (owl[1], "positive"), (loon[0], "negative"), (loon[1], "unsure")):
        assert request(server.port, "POST", "/api/label", {"target": "Exports", "row": row, "value": value})[0] == 200
    status, _, body = request(server.port, "POST", "/api/undo", {"target": "Exports"})
    assert status == 200 and json.loads(body)["undone"] == {"row": loon[1], "value": "unsure", "now": None}

    status, head, body = request(server.port, "GET", "/export.csv?target=Exports")
    assert status == 200 and head["content-disposition"] == 'attachment; filename="exports-labels.csv"'
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    expected = {(owl[0], "positive"), (owl[1], "positive"), (loon[0], "negative")}
    assert {(int(r["row"]), r["value"]) for r in rows} == expected
    status, head, body = request(server.port, "GET", "/export.raven.txt?target=Exports")
    assert status == 200 and "exports.Table.1.selections.txt" in head["content-disposition"]
    selections = list(csv.DictReader(io.StringIO(body.decode()), delimiter="\t"))
    assert len(selections) == 2 and {Path(r["Begin File"]).name for r in selections} == {"owl.wav"}

    status, _, page = request(server.port, "GET", "/review?target=Exports")
    assert status == 200 and page.count(b'<article class="card"') == 16
    assert request(server.port, "POST", "/api/next", {"target": "Exports"})[0] == 200
    labelled = session.labels.labels("Exports")
    _, _, page = request(server.port, "GET", "/review?target=Exports")
    shown = {int(x) for x in re.findall(rb'<article class="card" tabindex="0" data-row="(\d+)"', page)}
    assert len(shown) == 16 and not shown & set(labelled)  # a new batch, none of it labelled


# ---- durability and concurrency ---------------------------------------------------------------------


def _start_review(index_dir: Path) -> tuple[subprocess.Popen, int]:
    """`biolingual review INDEX --port 0` in its own process; returns once it printed the address it serves."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "biolingual", "review", str(index_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()  # printed once the socket listens
    if "serving the review page" not in line:
        proc.kill()
        raise AssertionError(f"biolingual review did not start: {line}{proc.stderr.read()[-3000:]}")
    port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
    return proc, port


def test_labels_survive_kill_9_of_the_server_between_labels(index_dir):
    proc, port = _start_review(index_dir)
    try:
        # a target seeded by a window of the index: the child embeds nothing, so it never loads the model
        form = urlencode({"name": "Durable", "example_row": "3"}).encode()
        assert request(port, "POST", "/targets", form, {"Content-Type": "application/x-www-form-urlencoded"})[0] == 303
        status, _, body = request(port, "POST", "/api/label", {"target": "Durable", "row": 4, "value": "positive"})
        assert status == 200 and json.loads(body)["counts"]["positive"] == 1
    finally:
        proc.send_signal(signal.SIGKILL)  # right after the 200: no shutdown, no flush, no atexit
        proc.wait()
    # the server started again (here, in this process, over a session opened afresh from the index folder)
    with ReviewServer(create_app(AgileSession(index_dir)), "127.0.0.1", 0) as again:
        status, _, body = request(again.port, "GET", "/api/labels?target=Durable")
        assert status == 200 and json.loads(body)["labels"] == {"4": "positive"}
        status, _, page = request(again.port, "GET", "/review?target=Durable")
        assert status == 200 and b'data-row="4" data-label="positive"' in page  # the reloaded page shows it
        assert request(again.port, "POST", "/api/label", {"target": "Durable", "row": 5, "value": "negative"})[0] == 200
    assert LabelStore(index_dir).labels("Durable") == {4: "positive", 5: "negative"}


def test_two_clients_labelling_at_once_lose_nothing(server, session):
    assert add_target(server.port, "Concurrent") == 303
    n = len(session.index) // 2
    start = threading.Barrier(2)
    acknowledged: dict[str, list[int]] = {"positive": [], "negative": []}

    def client(value: str, rows: range):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)  # one tab: one connection
        start.wait()
        for row in rows:
            conn.request(
                "POST",
                "/api/label",
                json.dumps({"target": "Concurrent", "row": row, "value": value}),
                {"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status == 200
            acknowledged[value].append(json.loads(response.read())["id"])
        conn.close()

    threads = [
        threading.Thread(target=client, args=("positive", range(0, n))),
        threading.Thread(target=client, args=("negative", range(n, 2 * n))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acknowledged["positive"]) == len(acknowledged["negative"]) == n
    labels = session.labels.labels("Concurrent")
    assert labels == {**{r: "positive" for r in range(n)}, **{r: "negative" for r in range(n, 2 * n)}}
    assert sorted(label.id for label in session.labels.history("Concurrent")) == sorted(sum(acknowledged.values(), []))
    status, _, body = request(server.port, "GET", "/api/labels?target=Concurrent")
    assert json.loads(body)["counts"] == {"positive": n, "negative": n, "unsure": 0}


# ---- what the page shows (issue 28 item 6) ----------------------------------------------------------


def test_recording_names_are_relative_to_the_recordings_folder_in_full():
    from biolingual.agile.cards import display_names

    files = [
        "/data/field/SITE-A/SITE-A_20240512_050000.WAV",
        "/data/field/SITE-A/SITE-A_20240512_060000.WAV",
        "/data/field/SITE-B/SITE-B_20240512_050000.WAV",
    ]
    assert display_names(files) == [
        "SITE-A/SITE-A_20240512_050000.WAV",
        "SITE-A/SITE-A_20240512_060000.WAV",
        "SITE-B/SITE-B_20240512_050000.WAV",
    ]
    assert display_names(["/data/one.wav"]) == ["one.wav"]
    assert display_names(["a/x.wav", "b/y.wav"]) == ["a/x.wav", "b/y.wav"]  # already relative: as stored


def test_spectrogram_band_crops_mel_rows_and_the_axis_says_where(server, session):
    from biolingual.agile.images import band_rows, mel_centres_hz

    row = rows_of(session, "owl.wav")[1]
    config = session.model.front_end.config
    centres = mel_centres_hz(config)
    inside = int(((centres >= 1000) & (centres <= 4000)).sum())
    assert 2 <= inside < config.n_mels and band_rows(config, 1, 4) == (
        int(np.argmax(centres >= 1000)),
        int(np.argmax(centres >= 1000)) + inside - 1,
    )
    status, head, png = request(server.port, "GET", f"/windows/{row}/spectrogram.png?fmin=1&fmax=4")
    assert status == 200 and head["content-type"] == "image/png"
    image = pytest.importorskip("matplotlib.image").imread(io.BytesIO(png))
    assert image.shape[0] == 2 * inside  # only the band's mel rows, each two pixels tall

    status, _, body = request(server.port, "GET", "/api/frequency-axis?fmin=1&fmax=4")
    axis = json.loads(body)
    assert status == 200 and axis["rows"] == inside
    assert 0.9 <= axis["fmin_khz"] <= 1.0 and 4.0 <= axis["fmax_khz"] <= 4.3  # the edges of the kept rows
    ticks = axis["ticks"]
    assert len(ticks) >= 3 and {1.0, 2.0} <= {t["khz"] for t in ticks}
    assert all(0 <= t["at"] <= 1 for t in ticks) and [t["at"] for t in ticks] == sorted(t["at"] for t in ticks)
    full = json.loads(request(server.port, "GET", "/api/frequency-axis")[2])
    assert full["rows"] == config.n_mels and full["fmax_khz"] <= config.f_max / 1000 + 0.5

    for query, words in (
        ("fmin=4&fmax=1", "below"),
        ("fmin=abc", "number"),
        ("fmin=nan", "number"),
        ("fmin=30&fmax=40", "no mel band"),
        ("fmax=-1", "no mel band"),
    ):
        for path in (f"/windows/{row}/spectrogram.png?{query}", f"/api/frequency-axis?{query}"):
            status, head, body = request(server.port, "GET", path)
            assert status == 400 and head["content-type"] == "application/json", path
            assert words in json.loads(body)["error"], (path, body)


def test_api_answers_carry_the_labelled_list_ranking_scores_and_progress(server, session):
    assert add_target(server.port, "Progress") == 303
    owl, loon = rows_of(session, "owl.wav"), rows_of(session, "loon.flac")
    status, _, page = request(server.port, "GET", "/review?target=Progress")
    assert status == 200 and b'id="state"' in page
    # each card: its full name, its rank among every window and the cosine, no probability before a fit
    assert re.search(rb'class="rank"[^>]*>#\d+ of ' + f"{len(session.index):,}".encode(), page)
    assert b'class="cos"' in page and b'class="prob"' not in page

    answers = [
        json.loads(request(server.port, "POST", "/api/label", {"target": "Progress", "row": row, "value": value})[2])
        for row, value in ((owl[0], "positive"), (owl[1], "positive"), (loon[0], "negative"), (loon[1], "negative"))
    ]
    last = answers[-1]
    assert last["progress"] == {
        "reviewed": 4,
        "windows": len(session.index),
        "round": 0,
        "counts": {"positive": 2, "negative": 2, "unsure": 0},
    }
    assert [(item["row"], item["label"], item["recording"]) for item in last["labelled"]] == sorted(
        [
            (owl[0], "positive", "owl.wav"),
            (owl[1], "positive", "owl.wav"),
            (loon[0], "negative", "loon.flac"),
            (loon[1], "negative", "loon.flac"),
        ]
    )
    assert len(last["ranking"]) == 20 and all(
        {"rank", "cosine", "recording", "label"} <= set(r) for r in last["ranking"]
    )
    labelled_in_ranking = {r["row"]: r["label"] for r in last["ranking"] if r["label"]}
    assert all(session.labels.labels("Progress")[row] == value for row, value in labelled_in_ranking.items())

    undone = json.loads(request(server.port, "POST", "/api/undo", {"target": "Progress"})[2])
    assert undone["progress"]["reviewed"] == 3 and loon[1] not in {item["row"] for item in undone["labelled"]}
    request(server.port, "POST", "/api/label", {"target": "Progress", "row": loon[1], "value": "negative"})

    fitted = json.loads(request(server.port, "POST", "/api/fit", {"target": "Progress", "rows": [owl[2], loon[2]]})[2])
    assert fitted["progress"]["round"] == 1 and fitted["progress"]["reviewed"] == 4
    assert [r["rank"] for r in fitted["ranking"]] == list(range(1, 21))
    scores = fitted["scores"]
    assert set(scores) == {str(owl[2]), str(loon[2])}
    for s in scores.values():
        assert 1 <= s["rank"] <= len(session.index) and -1 <= s["cosine"] <= 1
    again = json.loads(request(server.port, "POST", "/api/fit", {"target": "Progress"})[2])
    assert again["progress"]["round"] == 2  # rounds are counted in the head file, so a restart keeps them
    got = json.loads(request(server.port, "GET", "/api/labels?target=Progress")[2])
    assert got["progress"]["round"] == 2 and len(got["labelled"]) == 4 and len(got["ranking"]) == 20
