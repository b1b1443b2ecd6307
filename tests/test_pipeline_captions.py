"""The LLM captioner: a real ``openai`` client against a local OpenAI-compatible server on 127.0.0.1
that sometimes refuses, talks about the task, names a place, rate-limits or fails; caching, the
template fallback, the scientific-name twin, and the API key never logged or written."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import webdataset as wds

from biolingual.synthetic import invented_species
from data_pipeline.build import build
from data_pipeline.captioning.llm import load_prompt
from data_pipeline.captioning.validate import problem
from data_pipeline.config import resolve_config
from data_pipeline.record import Record

SECRET = "sk-test-never-write-me-31337"
SPECIES = list(invented_species(5, seed=0))  # the synthetic source's first 5 species (seed 0)


class Llm:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.by_species: dict[str, int] = {}
        self.auth: set[str] = set()
        self.failed_once = False
        self.echo_key = False  # answer 401 with the Authorization header in the body, as some servers do
        # species -> how the server answers it instead: "key-in-reply" (200, a caption that quotes the
        # Authorization header), "hang" (no answer until the client leaves), "trickle" (a 200 reply, one byte
        # every 0.2 s), "fail-once" (500 with Retry-After: 0, then a good caption)
        self.modes: dict[str, str] = {}


def _with_content(completion: dict, content) -> dict:
    completion["choices"][0]["message"]["content"] = content
    return completion


# mode -> the body of a 200 answer that is no usable chat completion (the request body, a well-formed completion)
WRONG_REPLIES = {
    "not-json": lambda body, completion: b"<html><body>502 Bad Gateway</body></html>",
    "no-choices": lambda body, completion: json.dumps({"result": "A frog calling"}).encode(),
    "choices-text": lambda body, completion: json.dumps({**completion, "choices": "A frog calling"}).encode(),
    "content-list": lambda body, completion: json.dumps(_with_content(completion, ["A", "frog"])).encode(),
    "huge": lambda body, completion: json.dumps(_with_content(completion, "A frog calling. " * 400_000)).encode(),
}


def reply_for(llm: Llm, species: str, n: int) -> tuple[int, str]:
    """(HTTP status, caption) by species: good, refuses then good, always meta-talk, always a place, 429 then good."""
    good, refuser, meta, place, limited = SPECIES
    if species == good:
        return 200, f"A {species} calling in fast pulses"
    if species == refuser:
        return 200, ("I'm sorry, I cannot help with that." if n == 1 else f"Several {species}s calling together")
    if species == meta:
        return 200, "The description contains no audible information."
    if species == place:
        return 200, f"A {species} calling at Lake Placid National Park"
    if species == limited and n == 1:
        return 429, ""
    return 200, f"A {species} singing a long phrase"


def make_handler(llm: Llm):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions", self.path
            species = body["messages"][-1]["content"].split("\n")[0].removeprefix("Species: ")
            with llm.lock:
                llm.calls += 1
                n = llm.by_species[species] = llm.by_species.get(species, 0) + 1
                llm.auth.add(self.headers.get("Authorization", ""))
                fail = not llm.failed_once and species == SPECIES[0]
                llm.failed_once = True
            mode = llm.modes.get(species)
            if mode == "key-in-reply":
                return self._reply(
                    body, f"A {species} calling; request authorised with {self.headers.get('Authorization')}"
                )
            if mode == "hang":
                self.connection.settimeout(300)  # a bound for a broken client only; the test waits for nothing
                self.rfile.read(1)  # blocks until the client gives up and closes the connection
                self.close_connection = True
                return
            if mode == "trickle":
                return self._trickle(body, f"A {species} calling in fast pulses")
            if mode in WRONG_REPLIES:
                return self._raw(WRONG_REPLIES[mode](body, self._completion(body, "")))
            if mode == "fail-once" and n == 1:
                return self._send(500, {"error": {"message": "busy", "type": "server_error"}}, [("Retry-After", "0")])
            if llm.echo_key:
                return self._send(
                    401,
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {self.headers.get('Authorization')}",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                )
            if fail:
                return self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            status, text = reply_for(llm, species, n)
            if status == 429:
                return self._send(
                    429, {"error": {"message": "rate limited", "type": "rate_limit"}}, [("Retry-After", "1")]
                )
            self._reply(body, text)

        def _completion(self, body, text) -> dict:
            return {
                "id": f"chatcmpl-{llm.calls}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }

        def _reply(self, body, text):
            self._send(200, self._completion(body, text))

        def _trickle(self, body, text):
            """The headers at once, then the JSON body one byte every 0.2 s: every read of the client comes well
            within any per-read timeout, and the whole reply would take minutes."""
            data = json.dumps(self._completion(body, text)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)  # the server's pace (the test waits for nothing)
            except OSError:  # the client gave up and closed the connection
                pass
            self.close_connection = True

        def _raw(self, data: bytes):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send(self, status, obj, headers=()):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture()
def llm_server(http_server):
    llm = Llm()
    return f"{http_server(make_handler(llm)).url}/v1", llm


def test_llm_captions_validated_cached_and_key_kept_secret(llm_server, tmp_path, monkeypatch, caplog):
    base_url, llm = llm_server
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    config = resolve_config(
        {
            "sources": [{"type": "synthetic", "species": 5, "clips_per_species": 2, "seconds": 1.0}],
            "captioner": {
                "type": "openai",
                "model": "tiny-llm",
                "base_url": base_url,
                "api_key_env": "MY_LLM_KEY",
                "rate": 50,
                "max_retries": 3,
            },
            "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            "download": {"concurrency": 2},
        }
    )
    out = tmp_path / "out"
    build(config, out, progress=False)
    texts = {}
    for s in wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False):
        meta = json.loads(s["json"])
        texts.setdefault(meta["species_common"], set()).add(tuple(meta["text"]))
    good, refuser, meta_talker, placer, limited = SPECIES
    scientific = {n: p.scientific for n, p in invented_species(5, seed=0).items()}

    def twin(caption, name):  # the scientific-name sentence, article fixed ("an Azure X" -> "a Galpelka y")
        sci = scientific[name]
        art = "an" if sci[0] in "AEIOU" else "a"
        return re.sub(rf"\b([Aa])n? {name}", lambda m: f"{m.group(1)}{art[1:]} {sci}", caption).replace(name, sci)

    expected = {
        good: f"A {good} calling in fast pulses",
        refuser: f"Several {refuser}s calling together",
        meta_talker: f"The sound of {'an' if meta_talker[0] in 'AEIOU' else 'a'} {meta_talker}",
        placer: f"The sound of {'an' if placer[0] in 'AEIOU' else 'a'} {placer}",
        limited: f"A {limited} singing a long phrase",
    }
    for name, caption in expected.items():
        assert texts[name] == {(caption, twin(caption, name))}, (name, texts[name])
    assert llm.auth == {f"Bearer {SECRET}"}
    first_calls = llm.calls
    # the template-fallback species were asked exactly twice per distinct prompt (one retry)
    assert llm.by_species[meta_talker] == 2 and llm.by_species[placer] == 2
    # a rerun from scratch with the same cache makes no API call
    for tar in out.glob("*.tar"):
        tar.unlink()
    (out / "manifest.sqlite").unlink()
    build(config, out, progress=False)
    assert llm.calls == first_calls
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text


def test_a_server_echoing_the_key_does_not_put_it_anywhere(llm_server, tmp_path, monkeypatch, capsys):
    """The real build through its command line, captioning with the real openai client against a
    server that refuses the key and echoes it back: no output, log, manifest or file holds it."""
    base_url, llm = llm_server
    llm.echo_key = True
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "sources": [{"type": "synthetic", "species": 2, "clips_per_species": 1, "seconds": 1.0}],
                "captioner": {"type": "openai", "base_url": base_url, "api_key_env": "MY_LLM_KEY", "max_retries": 0},
                "splits": {"valid": 0, "test": 0, "unseen_species": 0},
            }
        )
    )
    out = tmp_path / "out"
    from data_pipeline.__main__ import main

    main(["build", "--config", str(config), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert llm.auth == {f"Bearer {SECRET}"}  # the server did see (and echo) the key
    assert SECRET not in captured.out + captured.err
    files = [p for p in out.rglob("*") if p.is_file()]  # build.log, manifest.sqlite (and -wal), shards...
    assert {"build.log", "manifest.sqlite"} <= {p.name for p in files}
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    log_text = (out / "build.log").read_text()
    assert "AuthenticationError" in log_text and "Bearer ***" in log_text  # the error is still reported


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = resolve_config(
        {"sources": [{"type": "synthetic", "species": 2, "clips_per_species": 1}], "captioner": {"type": "openai"}}
    )
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        build(config, tmp_path / "out", progress=False)


def test_validation_rules_and_prompt_files():
    rec = Record("xeno-canto", "1", "Barred Owl", "Strix varia", places=["Lake Moultrie", "United States"])
    assert problem("Two Barred Owls hooting in a duet", rec) == ""
    assert problem("I'm sorry, I can't do that", rec) == "refuses"
    assert problem("This caption describes a Barred Owl", rec) == "talks about the task"
    assert problem("An owl hooting", rec) == "omits the species"
    assert problem("A Barred Owl hooting at Lake Moultrie", rec).startswith("names a place")
    assert problem("A Barred Owl hooting in Yosemite National Park", rec).startswith("names a place")
    assert problem("", rec) == "empty reply"
    messages = load_prompt("describe_v1")
    assert messages[0]["role"] == "system" and [m["role"] for m in messages[1:3]] == ["user", "assistant"]
    with pytest.raises(ValueError, match="not found"):
        load_prompt("no_such_prompt")


def _build_cli(base_url, tmp_path, species: int, **captioner) -> tuple[int, str, str, object]:
    """The real build through its command line, captioning ``species`` synthetic species (one clip each) with the
    real openai client; (exit status, stdout, stderr, output folder)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "sources": [{"type": "synthetic", "species": species, "clips_per_species": 1, "seconds": 1.0}],
                "captioner": {
                    "type": "openai",
                    "base_url": base_url,
                    "api_key_env": "MY_LLM_KEY",
                    "rate": 0,
                    **captioner,
                },
                "splits": {"valid": 0, "test": 0, "unseen_species": 0},
                "download": {"concurrency": 4},
            }
        )
    )
    out = tmp_path / "out"
    from data_pipeline.__main__ import main

    return main(["build", "--config", str(config), "--out", str(out), "--no-progress"]), out


def test_a_reply_that_holds_the_key_is_a_failed_caption_and_stored_nowhere(llm_server, tmp_path, monkeypatch, capsys):
    """A server that answers 200 with a caption quoting the bearer key: that record's caption fails with a reason
    that does not repeat the key, and no shard, cache, manifest, log or output holds it; the other record is
    captioned as usual."""
    base_url, llm = llm_server
    good, leaky = SPECIES[1], SPECIES[0]
    llm.modes[leaky] = "key-in-reply"
    llm.failed_once = True  # no 500 on the first request: the leak is the only fault
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    _, out = _build_cli(base_url, tmp_path, 2, max_retries=0)
    captured = capsys.readouterr()
    assert llm.auth == {f"Bearer {SECRET}"} and llm.by_species[leaky] >= 1  # the server did quote the key
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"build.log", "manifest.sqlite", "captions.sqlite", "train-000000.tar"} <= {p.name for p in files}
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in captured.out + captured.err
    log_text = (out / "build.log").read_text()
    failed = [line for line in log_text.splitlines() if line.split(" ", 3)[2:3] == ["failed"] or " failed " in line]
    assert any("contains the API key" in line for line in failed), log_text
    captions = [
        json.loads(s["json"])["text"] for s in wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False)
    ]
    assert [c[0] for c in captions] == [
        f"Several {good}s calling together"
    ]  # the other record (asked twice), captioned


def test_a_garbage_or_wrongly_shaped_reply_says_what_was_wrong_and_a_huge_one_is_not_kept_whole(
    llm_server, tmp_path, monkeypatch, capsys
):
    """A 200 answer that is not JSON, has no choices, choices that are not a list, or content that is not text failed
    its record with an AttributeError/TypeError from the client's objects: the reason now says what the reply lacked.
    A 6 MB reply was stored whole in captions.sqlite (48 MB for 4 records): at most 1,000 characters of a reply are
    kept (a caption has at most 300), and the record gets its template caption."""
    base_url, llm = llm_server
    modes = ["not-json", "no-choices", "choices-text", "content-list", "huge"]
    llm.modes.update(zip(SPECIES, modes))
    llm.failed_once = True
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    _, out = _build_cli(base_url, tmp_path, 5, max_retries=0)
    capsys.readouterr()
    log_text = (out / "build.log").read_text()
    assert "AttributeError" not in log_text and "TypeError" not in log_text, log_text
    for i, said in enumerate(
        (
            "the reply is not JSON (it starts with '<html>",
            "the reply has no 'choices' list (it has",
            "the reply's 'choices' is a str, not a list",
            "the reply's message content is not text",
        )
    ):
        line = next(line for line in log_text.splitlines() if f"failed synthetic:0-00{i}-0000: " in line)  # species i
        assert "not a usable chat completion from the LLM server" in line and said in line, line
    assert (out / "captions.sqlite").stat().st_size < 200_000
    db = sqlite3.connect(out / "captions.sqlite")
    assert max(len(reply) for (reply,) in db.execute("SELECT reply FROM replies")) == 1000
    db.close()
    huge = [json.loads(s["json"]) for s in wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False)]
    assert [h["species_common"] for h in huge] == [SPECIES[4]] and SPECIES[4] in huge[0]["text"][0]


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_a_caption_request_stops_at_its_deadline(llm_server, tmp_path, monkeypatch, mode):
    """A server that never answers, or trickles its reply a byte every 0.2 s (never tripping the 30 s per-read
    timeout): each caption request stops at the 2 s deadline, its openai retries included, and the build ends
    with those records failed, saying why; a record whose first answer is a 500 is retried with a log line and
    captioned. The bound on the build's time is loose (a loaded machine): without the deadline a hanging
    record alone would take (3 + 1) x 30 s, and a trickled reply minutes."""
    base_url, llm = llm_server
    slow, flaky = SPECIES[0], SPECIES[1]
    llm.modes |= {slow: mode, flaky: "fail-once"}
    llm.failed_once = True
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    start = time.monotonic()
    _, out = _build_cli(base_url, tmp_path, 2, timeout=30, max_retries=3, deadline=2)
    elapsed = time.monotonic() - start
    assert elapsed < 60, elapsed
    log_text = (out / "build.log").read_text()
    assert llm.by_species[slow] == 1  # not retried past the deadline
    assert re.search(r"failed \S+: .*deadline of 2 s", log_text), log_text
    assert re.search(rf"caption request for \S+ \({flaky}\).*HTTP 500.*retrying in 0\.0 s \(retry 1 of 3", log_text), (
        log_text
    )
    texts = [
        json.loads(s["json"])["text"][0] for s in wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False)
    ]
    assert texts == [f"Several {flaky}s calling together"]  # its second answer (reply_for)


def test_the_build_exits_1_when_records_failed(llm_server, tmp_path, monkeypatch, capsys):
    """A hanging LLM server fails every record: the build says so and exits 1 (rerun to retry them), as a
    command that skipped inputs exits non-zero; the same build with a server that answers exits 0."""
    base_url, llm = llm_server
    llm.modes[SPECIES[0]] = "hang"
    llm.failed_once = True
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    code, out = _build_cli(base_url, tmp_path, 1, max_retries=0, deadline=1)
    err = capsys.readouterr().err
    assert code == 1 and "error: 1 record failed" in err and "rerun" in err, err
    del llm.modes[SPECIES[0]]
    assert _build_cli(base_url, tmp_path, 1, max_retries=0, deadline=1)[0] == 0
