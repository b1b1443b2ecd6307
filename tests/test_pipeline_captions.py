"""The LLM captioner: a real ``openai`` client against a local OpenAI-compatible server on 127.0.0.1
that sometimes refuses, talks about the task, names a place, rate-limits or fails; caching, the
template fallback, the scientific-name twin, and the API key never logged or written."""
from __future__ import annotations

import json
import re
import logging
import threading
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
            if llm.echo_key:
                return self._send(401, {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization')}",
                                                  "type": "invalid_request_error", "code": "invalid_api_key"}})
            if fail:
                return self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            status, text = reply_for(llm, species, n)
            if status == 429:
                return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, [("Retry-After", "1")])
            self._send(200, {"id": f"chatcmpl-{llm.calls}", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})

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
    config = resolve_config({
        "sources": [{"type": "synthetic", "species": 5, "clips_per_species": 2, "seconds": 1.0}],
        "captioner": {"type": "openai", "model": "tiny-llm", "base_url": base_url, "api_key_env": "MY_LLM_KEY",
                      "rate": 50, "max_retries": 3},
        "splits": {"valid": 0, "test": 0, "unseen_species": 0}, "download": {"concurrency": 2}})
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

    expected = {good: f"A {good} calling in fast pulses", refuser: f"Several {refuser}s calling together",
                meta_talker: f"The sound of {'an' if meta_talker[0] in 'AEIOU' else 'a'} {meta_talker}",
                placer: f"The sound of {'an' if placer[0] in 'AEIOU' else 'a'} {placer}",
                limited: f"A {limited} singing a long phrase"}
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
    config.write_text(json.dumps({
        "sources": [{"type": "synthetic", "species": 2, "clips_per_species": 1, "seconds": 1.0}],
        "captioner": {"type": "openai", "base_url": base_url, "api_key_env": "MY_LLM_KEY", "max_retries": 0},
        "splits": {"valid": 0, "test": 0, "unseen_species": 0}}))
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
    config = resolve_config({"sources": [{"type": "synthetic", "species": 2, "clips_per_species": 1}],
                             "captioner": {"type": "openai"}})
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
