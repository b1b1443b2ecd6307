"""The data pipeline's config: every value checked (type, range, allowed values) with a message naming
the file, line and key; YAML mistakes through ``python -m data_pipeline build`` are ``error: ...``
lines with a nonzero exit and no traceback; every source and captioner option has a kind."""

from __future__ import annotations

import json

import pytest

from data_pipeline.__main__ import main
from data_pipeline.config import CaptionerConfig, ConfigError, PipelineConfig, SourceConfig, load_config, resolve_config

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


@pytest.mark.parametrize(
    "text, expected",
    [
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
        (
            BASE + "captioner: {type: openai, temperature: 9}\n",
            ["captioner 'openai'", "'temperature'", "between 0 and 2"],
        ),
        (BASE + "captioner: {type: openai, prompt: no_such_prompt}\n", ["'captioner.prompt'", "not found"]),
        (
            "sources:\n  - {type: synthetic}\n  - {type: gbif, rate: fast, deadline: 0}\n",
            ["2 problems", "line 3", "source #2 (gbif): 'rate'", "source #2 (gbif): 'deadline' must be greater than 0"],
        ),
        (
            "sources: [{type: xeno-canto, max_records: 0}]\n",
            ["'query' is required", "'max_records' must be at least 1"],
        ),
        (
            "sources: [{type: inaturalist, params: taxon_id=3}]\n",
            ["source #1 (inaturalist): 'params' must be a mapping"],
        ),
        ("sources: []\n", ["'sources' must list at least one source"]),
        ("audio: {sample_rate: 48000}\n", ["'sources' is missing"]),
        # the YAML cases: syntax, wrong type, unknown key, not a mapping
        (BASE + "audio: {sample_rate: 48000\n", ["line 3", "could not parse YAML"]),
        (BASE + "audio: 5\n", ["line 2", "'audio' must be a mapping", "the number 5"]),
        (BASE + "audio: {sample_rte: 44100}\n", ["line 2", "unknown key 'audio.sample_rte'", "sample_rate"]),
        (BASE + "spilts: {valid: 0.1}\n", ["line 2", "unknown key 'spilts'", "splits"]),
        (BASE + "audio: {sample_rate: 1}\naudio: {sample_rate: 2}\n", ["line 3", "'audio' is given twice"]),
        ("- {type: synthetic}\n", ["the top level must be a mapping", "got a list"]),
    ],
)
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
    config = resolve_config(
        {
            "sources": [{"type": "gbif", "rate": "0.5", "max_bytes": "2MB", "timeout": 30}],
            "licenses": ["CC-BY-4.0", "cc0"],
            "audio": {"clip_seconds": "1e1", "sample_rate": 32000.0},
            "shards": {"max_bytes": "1GiB"},
            "splits": None,
        }
    )
    assert config.sources == [SourceConfig("gbif", {"rate": 0.5, "max_bytes": 2_000_000, "timeout": 30})]
    # the mapping a source's listing name hashes, as before the dataclasses (a resumed build does not list again)
    assert config.sources[0].as_dict() == {"type": "gbif", "rate": 0.5, "max_bytes": 2_000_000, "timeout": 30}
    assert config.licenses == ["cc-by", "cc0"] and config.shards.max_bytes == 2**30
    assert config.audio.clip_seconds == 10.0 and config.audio.sample_rate == 32000
    assert isinstance(config.audio.sample_rate, int)
    assert config.splits.valid == 0.02  # an empty section keeps the defaults
    assert config.download.max_bytes == 300_000_000 and config.captioner == CaptionerConfig("template", {})
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


# ---- --section.key value overrides on `python -m data_pipeline build` (issue 15) ----------------------

SMALL = "sources: [{type: synthetic, species: 3, clips_per_species: 2, seconds: 1.0}]\n"


def test_overrides_set_keys_on_top_of_the_file_through_the_real_command(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        SMALL + "shards: {max_samples: 100}\nsplits: {valid: 0, test: 0, unseen_species: 0}\naudio: {sample_rate: 1}\n"
    )  # out of range in the file, replaced on the command line
    out = tmp_path / "out"
    code = main(
        [
            "build",
            "--config",
            str(config),
            "--out",
            str(out),
            "--no-progress",
            "--shards.max_samples",
            "2",
            "--audio.sample_rate",
            "16000",
            "--audio.clip_seconds=0.5",
            "--audio.max_chunks",
            "1",
            "--splits.seed",
            "-3",
        ]
    )
    assert code == 0, capsys.readouterr().err
    sizes = json.loads((out / "sizes.json").read_text())
    assert len(sizes) == 3 and sorted(sizes.values()) == [2, 2, 2]  # 6 one-second clips cut to one 0.5 s clip each
    with wds_tar(out / "train-000000.tar") as rates:
        assert rates == {16000}


def wds_tar(path):
    """The sample rates of a shard's FLAC members (a context manager, so the tar is closed)."""
    import contextlib
    import io
    import tarfile

    import soundfile as sf

    @contextlib.contextmanager
    def rates():
        with tarfile.open(path) as tar:
            yield {sf.info(io.BytesIO(tar.extractfile(m).read())).samplerate for m in tar if m.name.endswith(".flac")}

    return rates()


def test_override_values_are_typed_like_the_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SMALL + "licenses: [cc0]\ndownload: {max_bytes: 1MB}\n")
    c = load_config(
        config,
        [
            "--licenses",
            "cc-by, CC-BY-NC-4.0",
            "--download.max_bytes",
            "2GiB",
            "--download.concurrency",
            "8",
            "--audio.clip_seconds",
            "1e1",
            "--splits.valid",
            "0.25",
        ],
    )
    assert isinstance(c, PipelineConfig)
    assert c.licenses == ["cc-by", "cc-by-nc"] and c.download.max_bytes == 2**31 and c.download.concurrency == 8
    assert c.audio.clip_seconds == 10.0 and c.splits.valid == 0.25
    assert load_config(config, ["--licenses", "[cc-by-nc, cc0]"]).licenses == ["cc-by-nc", "cc0"]
    assert load_config(config).licenses == ["cc0"] and load_config(config).download.max_bytes == 1_000_000


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--audio.sample_rate", "0"], "command line: 'audio.sample_rate' must be at least 8000 (Hz), got 0"),
        (["--splits.valid", "abc"], "command line: 'splits.valid': expected a number; got 'abc'"),
        (["--shards.max_bytes", "5XB"], "command line: 'shards.max_bytes': cannot read size '5XB'"),
        (["--licenses", "cc0,copyleft"], "command line: 'licenses' #2: unknown licence 'copyleft'"),
        (["--licenses", ""], "command line: 'licenses' must list the accepted licences"),
        (
            ["--splits.valid", "0.5", "--splits.test", "0.5"],
            "command line: 'splits' valid + test + unseen_species must be below 1",
        ),
        # the names: train.py's messages, from the one reading in biolingual/config_io.py
        (["--audio.sample_rte", "1"], "command line: unknown config key 'audio.sample_rte' (known here: sample_rate,"),
        (
            ["--spilts.valid", "1"],
            "command line: unknown config section 'spilts' in 'spilts.valid' (sections: captioner, audio,",
        ),
        (["--audio", "1"], "command line: 'audio' is a section, not a key"),
        (["--licenses.cc0", "1"], "command line: 'licenses' is a key, not a section"),
        (["--audio.clip_seconds"], "command line: --audio.clip_seconds needs a value"),
        (
            ["clip_seconds=3"],
            "command line: unexpected argument 'clip_seconds=3'; overrides look like --audio.clip_seconds 5",
        ),
        (
            ["--sources.#1.max_records", "3"],
            "command line: 'sources.#1.max_records': 'sources' is set in the config file only",
        ),
        (["--captioner.type", "openai"], "command line: 'captioner.type': 'captioner' is set in the config file only"),
    ],
)
def test_override_mistakes_are_errors_naming_the_command_line_and_key(tmp_path, capsys, argv, expected):
    config = tmp_path / "c.yaml"
    config.write_text(SMALL)
    code = main(["build", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {expected}"), err
    assert "Traceback" not in err and not list((tmp_path / "out").glob("*.tar"))


def test_file_and_command_line_mistakes_are_reported_together_each_with_its_place(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SMALL + "audio: {max_chunks: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, ["--download.concurrency", "0"])
    assert str(info.value).splitlines() == [
        "2 problems in the config:",
        f"  {config}, line 2: 'audio.max_chunks' must be at least 1, got 0",
        "  command line: 'download.concurrency' must be between 1 and 256, got 0",
    ]


def test_unknown_command_line_keys_are_reported_with_the_file_mistakes_all_at_once(tmp_path, capsys):
    """An unknown key or section on the command line stopped at once, hiding the file's mistakes (the docs promise
    all at once); a config mistake exits 2 and leaves no --out folder."""
    config = tmp_path / "c.yaml"
    config.write_text(SMALL + "audio: {clip_seconds: abc, sample_rte: 44100}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, ["--audio.foo", "1", "--nosuch.x", "3", "--shards.max_samples", "0"])
    lines = str(info.value).splitlines()
    assert lines[0] == "5 problems in the config:", lines
    for expected in (
        f"{config}, line 2: 'audio.clip_seconds'",
        f"{config}, line 2: unknown key 'audio.sample_rte'",
        "command line: unknown config key 'audio.foo'",
        "command line: unknown config section 'nosuch' in 'nosuch.x'",
        "command line: 'shards.max_samples' must be at least 1",
    ):
        assert sum(line.startswith(f"  {expected}") for line in lines) == 1, (expected, lines)
    assert main(["build", "--config", str(config), "--out", str(tmp_path / "out"), "--nosuch.x", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: 3 problems in the config:") and not (tmp_path / "out").exists()


def test_the_training_config_reads_overrides_the_same_way():
    """One reading of the command line for both tools: the same mistakes, the same words."""
    from biolingual.config_io import ConfigError as BaseError
    from biolingual.training.config import load_config as training_config

    for argv in (["steps=3"], ["--x.y"]):
        with pytest.raises(BaseError) as train_error:
            training_config(argv)
        with pytest.raises(BaseError) as pipeline_error:
            resolve_config({"sources": [{"type": "synthetic"}]}, overrides=argv)
        assert str(train_error.value).split(";")[0] == str(pipeline_error.value).split(";")[0]


def test_typed_reads_lists_as_lists():
    from biolingual.config_io import typed

    assert typed(["a", 2], list[str]) == ["a", "2"] and typed([1, "2.5"], list[float]) == [1.0, 2.5]
    with pytest.raises(ValueError, match="expected a list, got the text 'a,b'"):
        typed("a,b", list[str])
    with pytest.raises(ValueError, match="item #2: expected a number"):
        typed([1, "x"], list[float])
