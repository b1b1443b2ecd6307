"""The data pipeline's config: every value checked (type, range, allowed values) with a message naming
the file, line and key; YAML mistakes through ``python -m data_pipeline build`` are ``error: ...``
lines with a nonzero exit and no traceback; every source and captioner option has a kind."""
from __future__ import annotations

import pytest

from data_pipeline.__main__ import main
from data_pipeline.config import ConfigError, resolve_config

BASE = "sources: [{type: synthetic, species: 2, clips_per_species: 1, seconds: 1.0}]\n"


def build_error(tmp_path, capsys, text: str | None, name: str = "c.yaml") -> str:
    """Run the real build command on a config with ``text`` (None: no file); its stderr, after
    checking it failed with an 'error:' line and no traceback."""
    config = tmp_path / name
    if text is not None:
        config.write_text(text)
    code = main(["build", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert not list((tmp_path / "out").glob("*.tar")), "nothing is built from a bad config"
    return err


@pytest.mark.parametrize("text, expected", [
    # issue 14 item 7: each of these was accepted (or a traceback)
    (BASE + "audio: {sample_rate: 0}\n", ["line 2", "'audio.sample_rate'", "at least 8000", "got 0"]),
    (BASE + "shards: {max_samples: 0}\n", ["line 2", "'shards.max_samples'", "at least 1"]),
    (BASE + "splits: {valid: abc}\n", ["line 2", "'splits.valid'", "expected a number", "'abc'"]),
    # the rest of the keys: types, ranges, allowed values
    (BASE + "audio:\n  clip_seconds: -1\n", ["line 3", "'audio.clip_seconds'", "greater than 0"]),
    (BASE + "audio: {max_chunks: yes}\n", ["'audio.max_chunks'", "boolean"]),
    (BASE + "audio: {silence_dbfs: 6}\n", ["'audio.silence_dbfs'", "at most 0"]),
    (BASE + "shards: {max_bytes: 5XB}\n", ["'shards.max_bytes'", "cannot read size '5XB'"]),
    (BASE + "splits: {valid: 0.5, test: 0.5}\n", ["'splits'", "below 1"]),
    (BASE + "splits: {seed: 1.5}\n", ["'splits.seed'", "whole number"]),
    (BASE + "download: {concurrency: 0}\n", ["'download.concurrency'", "between 1 and 256"]),
    (BASE + "licenses: [cc-by, copyleft]\n", ["line 2", "unknown licence 'copyleft'"]),
    (BASE + "licenses: []\n", ["'licenses' must list"]),
    (BASE + "captioner: {type: gpt}\n", ["'captioner'", "template or openai", "'gpt'"]),
    (BASE + "captioner: {type: openai, temperature: 9}\n", ["captioner 'openai'", "'temperature'", "between 0 and 2"]),
    (BASE + "captioner: {type: openai, prompt: no_such_prompt}\n", ["'captioner.prompt'", "not found"]),
    ("sources:\n  - {type: synthetic}\n  - {type: gbif, rate: fast, deadline: 0}\n",
     ["2 problems", "line 3", "source #2 (gbif): 'rate'", "source #2 (gbif): 'deadline' must be greater than 0"]),
    ("sources: [{type: xeno-canto, max_records: 0}]\n", ["'query' is required", "'max_records' must be at least 1"]),
    ("sources: [{type: inaturalist, params: taxon_id=3}]\n", ["source #1 (inaturalist): 'params' must be a mapping"]),
    ("sources: []\n", ["'sources' must list at least one source"]),
    ("audio: {sample_rate: 48000}\n", ["'sources' is missing"]),
    # the YAML cases: syntax, wrong type, unknown key, not a mapping
    (BASE + "audio: {sample_rate: 48000\n", ["line 3", "could not parse YAML"]),
    (BASE + "audio: 5\n", ["line 2", "'audio' must be a mapping", "the number 5"]),
    (BASE + "audio: {sample_rte: 44100}\n", ["line 2", "unknown key 'audio.sample_rte'", "sample_rate"]),
    (BASE + "spilts: {valid: 0.1}\n", ["line 2", "unknown key 'spilts'", "splits"]),
    (BASE + "audio: {sample_rate: 1}\naudio: {sample_rate: 2}\n", ["line 3", "'audio' is given twice"]),
    ("- {type: synthetic}\n", ["the top level must be a mapping", "got a list"]),
])
def test_bad_values_are_errors_naming_the_file_line_and_key(tmp_path, capsys, text, expected):
    err = build_error(tmp_path, capsys, text)
    assert str(tmp_path / "c.yaml") in err
    for part in expected:
        assert part in err, (part, err)


def test_missing_or_unreadable_config_files(tmp_path, capsys):
    assert "config file not found" in build_error(tmp_path, capsys, None, "absent.yaml")
    (tmp_path / "folder.yaml").mkdir()
    assert "is not a file" in build_error(tmp_path, capsys, None, "folder.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"sources: [{type: synthetic, license: \xe9}]\n")
    assert "not a UTF-8 text file" in build_error(tmp_path, capsys, None, "latin1.yaml")


def test_good_values_are_converted():
    config = resolve_config({
        "sources": [{"type": "gbif", "rate": "0.5", "max_bytes": "2MB", "timeout": 30}],
        "licenses": ["CC-BY-4.0", "cc0"], "audio": {"clip_seconds": "1e1", "sample_rate": 32000.0},
        "shards": {"max_bytes": "1GiB"}, "splits": None})
    assert config["sources"] == [{"type": "gbif", "rate": 0.5, "max_bytes": 2_000_000, "timeout": 30}]
    assert config["licenses"] == ["cc-by", "cc0"] and config["shards"]["max_bytes"] == 2**30
    assert config["audio"]["clip_seconds"] == 10.0 and config["audio"]["sample_rate"] == 32000
    assert config["splits"]["valid"] == 0.02  # an empty section keeps the defaults
    with pytest.raises(ConfigError, match="'shards.max_bytes'"):
        resolve_config({"sources": [{"type": "synthetic"}], "shards": {"max_bytes": "1.2.3MB"}})


def test_every_option_has_a_kind():
    """A new source or captioner option without an entry in OPTIONS would escape the checks."""
    from data_pipeline.captioning.llm import OpenAICaptioner
    from data_pipeline.config import OPTIONS, option_names, source_class
    from data_pipeline.sources import MODULES
    for kind in MODULES:
        assert set(option_names(source_class(kind))) <= set(OPTIONS), kind
    assert set(option_names(OpenAICaptioner)) <= set(OPTIONS)
