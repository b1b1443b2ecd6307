"""Training configuration: every mistake in a config file or on the command line is a ConfigError naming
the file (and line) or the command line and the key, raised before a run starts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from biolingual.metrics import retrieval_metrics
from biolingual.training.config import Config, ConfigError, load_config, metric_names

ROOT = Path(__file__).resolve().parents[1]


def _file(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv)
    return str(info.value)


# ---- good configs -------------------------------------------------------------------------------


def test_config_file_and_overrides(tmp_path):
    path = _file(tmp_path, "train:\n  steps: 7\n  lr: 0.5\nmodel:\n  gradient_checkpointing: true\n")
    c = load_config(["--config", str(path), "--train.lr", "3e-4", "--data.workers=0", "--out", "o"])
    assert (c.train.steps, c.train.lr, c.data.workers, c.model.gradient_checkpointing, c.out) == (7, 3e-4, 0, True, "o")
    assert "unknown config key 'train.lrr'" in _error(["--train.lrr", "1"])
    assert "bad value 'many' for 'train.steps'" in _error(["--train.steps", "many"])
    assert math.isfinite(load_config([]).train.lr)


@pytest.mark.parametrize("name", ["demo.yaml", "base.yaml"])
def test_shipped_configs_load(name):
    c = load_config(["--config", str(ROOT / "configs" / name)])
    assert c.valid.metric in metric_names()


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_defaults_are_valid_and_include_max_bad_in_row():
    c = Config()
    c.validate()
    assert c.data.max_bad_in_row == 200
    assert load_config(["--data.max_bad_in_row", "5"]).data.max_bad_in_row == 5


def test_yaml_spellings_that_mean_the_right_thing(tmp_path):
    path = _file(
        tmp_path,
        (
            "train:\n"
            "  lr: 1e-3\n"  # PyYAML reads this as a string: it is a number
            "  min_lr: 0\n"  # an int for a float key
            "  steps: 3.0\n"  # a whole float for an int key
            "  warmup: '10'\n"  # a quoted number
            "  precision: float32\n"
            "  betas: [0.9, '0.98']\n"  # a list; a quoted number in it is a number
            "data:\n"
            "  valid: 3\n"  # a number for a text key
            "  weights: [3, 1.5]\n"
            "  train:\n"
            "    - a-{000..009}.tar\n"
            "    - b-{x,y}.tar\n"  # a brace pattern holding a comma stays one item
            "  clip_seconds: 5\n"
            "model:\n"
            "  audio_tower:\n"  # empty: unset
            "log:\n"
            "  tensorboard: off\n"
            "valid:\n"  # an empty section
            "train.seed: 5\n"  # a dotted key at the top level
        ),
    )
    c = load_config(["--config", str(path)])
    assert (c.train.lr, c.train.min_lr, c.train.steps, c.train.warmup, c.train.precision) == (
        1e-3,
        0.0,
        3,
        10,
        "float32",
    )
    assert isinstance(c.train.steps, int) and isinstance(c.train.min_lr, float)
    assert (c.train.betas, c.data.weights, c.data.clip_seconds, c.model.audio_tower) == (
        [0.9, 0.98],
        [3.0, 1.5],
        5.0,
        "",
    )
    assert c.data.train == ["a-{000..009}.tar", "b-{x,y}.tar"] and c.data.valid == "3"
    assert c.log.tensorboard is False and c.train.seed == 5


def test_command_line_overrides_the_file_and_accepts_negative_looking_values(tmp_path):
    path = _file(tmp_path, "train:\n  lr: 0.5\n  seed: 1\n")
    c = load_config(["--config", str(path), "--train.lr", "1e-2", "--train.seed", "-3", "--log.tensorboard", "false"])
    assert (c.train.lr, c.train.seed, c.log.tensorboard) == (1e-2, -3, False)


# ---- lists ---------------------------------------------------------------------------------------


def test_list_keys_on_the_command_line():
    """Commas or a bracketed list, as python -m data_pipeline reads its lists; data.train joins its
    patterns with '::' since a brace pattern may hold commas."""
    c = load_config(["--train.betas", "0.8,0.9", "--data.weights=[3, 1]", "--data.train", "a-{x,y}.tar::b-{0..3}.tar"])
    assert (c.train.betas, c.data.weights, c.data.train) == ([0.8, 0.9], [3.0, 1.0], ["a-{x,y}.tar", "b-{0..3}.tar"])
    assert load_config(["--data.train", "one-{000..009}.tar"]).data.train == ["one-{000..009}.tar"]
    assert _error(["--train.betas", "0.9,fast"]).startswith(
        "command line: bad value ['0.9', 'fast'] for 'train.betas' (list[float]): item #2: expected a number"
    )


def test_weights_need_one_value_per_training_pattern(tmp_path):
    path = _file(tmp_path, "data:\n  train: [a.tar, b.tar, c.tar]\n  weights: [3, 1]\n")
    assert _error(["--config", str(path)]) == (
        f"{path}, line 3: 'data.weights' has 2 values for the 3 sources of data.train (one weight per pattern); "
        "got [3.0, 1.0]"
    )
    assert load_config(["--config", str(path), "--data.weights", "3,1,1"]).data.weights == [3.0, 1.0, 1.0]


def test_a_run_folder_config_written_before_lists_still_loads_with_a_warning(tmp_path):
    """The config.yaml a run folder got from the code before these keys were lists (its text, as that
    code's Config.save wrote it), given back with --config to resume the run: the text is split as
    that code split it, and a FutureWarning names each key's file and line and the list to write."""
    shards = tmp_path / "demo_data"
    old = _file(
        tmp_path,
        (
            "data:\n"
            f"  train: {shards}/a-{{000000..000003}}.tar::{shards}/b-{{0,1}}.tar\n"
            "  weights: 3,1\n"
            "  valid: ''\n"
            "train:\n"
            "  steps: 400\n"
            "  betas: 0.9,0.98\n"
            "  precision: 'no'\n"
            "out: demo_out/run\n"
            "resume: ''\n"
        ),
        "config.yaml",
    )
    with pytest.warns(FutureWarning) as caught:
        c = load_config(["--config", str(old), "--resume", "latest"])
    assert c.data.train == [f"{shards}/a-{{000000..000003}}.tar", f"{shards}/b-{{0,1}}.tar"]
    assert (c.data.weights, c.train.betas, c.train.steps, c.resume) == ([3.0, 1.0], [0.9, 0.98], 400, "latest")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4  # the lists, and accelerate's 'no' for the precision (read as float32)
    assert (
        c.train.precision == "float32"
        and "'train.precision' 'no' is accelerate's spelling; write 'float32'" in messages[3]
    )
    assert messages[0].startswith(f"{old}, line 2: 'data.train' is a list now; ")
    assert f'write `train: ["{shards}/a-{{000000..000003}}.tar", "{shards}/b-{{0,1}}.tar"]`' in messages[0]
    assert (
        messages[1].startswith(f"{old}, line 3: 'data.weights' is a list now; ")
        and "write `weights: [3, 1]`" in messages[1]
    )
    assert (
        messages[2].startswith(f"{old}, line 7: 'train.betas' is a list now; ")
        and "`betas: [0.9, 0.98]`" in messages[2]
    )
    # the old default, weights: '' (equal), is no weights; and what this code saves reads back without a warning
    with pytest.warns(FutureWarning, match="'data.weights' is a list now"):
        assert load_config(["--config", str(_file(tmp_path, "data:\n  weights: ''\n"))]).data.weights == []
    c.save(tmp_path / "new.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(["--config", str(tmp_path / "new.yaml")]) == c


# ---- YAML syntax and structure ----------------------------------------------------------------------


def test_bad_yaml_names_the_file_line_and_column(tmp_path):
    path = _file(tmp_path, "data:\n  workers: 2\ntrain:\n  steps: 10\n   lr: 0.1\n", "broken.yaml")
    message = _error(["--config", str(path)])
    assert message.startswith(f"{path}, line 5, column 6: could not parse YAML: ")
    assert "mapping values are not allowed here" in message


def test_unclosed_bracket_names_the_line(tmp_path):
    path = _file(tmp_path, "train:\n  betas: [0.9, 0.999\n  lr: 1\n")
    message = _error(["--config", str(path)])
    assert str(path) in message and ", line " in message and "could not parse YAML" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- data\n- train\n", "the top level must be a mapping of sections"),
        ("just words\n", "the top level must be a mapping of sections"),
        ("train: 5\n", "line 1: section 'train' must be a mapping of keys to values, got the number 5"),
        ("train:\n  - steps\n", "line 1: section 'train' must be a mapping of keys to values, got a list"),
        ("train:\n  steps:\n    every: 3\n", "line 2: 'train.steps' takes a value, not a mapping"),
        ("trian:\n  steps: 3\n", "line 1: unknown config section 'trian'"),
        ("train:\n  stepz: 3\n", "line 2: unknown config key 'train.stepz'"),
        ("train:\n  steps: 3\ntrain:\n  lr: 0.1\n", "line 3, column 1: could not parse YAML: 'train' is given twice"),
    ],
)
def test_structure_mistakes_name_the_file_and_key(tmp_path, text, expected):
    path = _file(tmp_path, text)
    message = _error(["--config", str(path)])
    assert message.startswith(str(path)) and expected in message, message


def test_missing_config_file():
    assert _error(["--config", "no/such/file.yaml"]) == "config file not found: 'no/such/file.yaml'"


def test_empty_config_file_means_defaults(tmp_path):
    assert load_config(["--config", str(_file(tmp_path, "# nothing yet\n"))]) == Config()


# ---- value types in YAML -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key, kind",
    [
        ("train:\n  steps: 1.7\n", "train.steps", "int"),
        ("train:\n  steps: true\n", "train.steps", "int"),
        ("train:\n  steps: many\n", "train.steps", "int"),
        ("train:\n  lr: [1, 2]\n", "train.lr", "float"),
        ("train:\n  lr: yes\n", "train.lr", "float"),
        ("train:\n  lr: fast\n", "train.lr", "float"),
        ('data:\n  workers: "abc"\n', "data.workers", "int"),
        ("data:\n  workers:\n", "data.workers", "int"),
        ("data:\n  valid: [a.tar, b.tar]\n", "data.valid", "str"),
        ("train:\n  betas: [0.9, fast]\n", "train.betas", "list[float]"),
        ("data:\n  weights: [3, true]\n", "data.weights", "list[float]"),
        ("train:\n  precision: no\n", "train.precision", "str"),
        ("log:\n  tensorboard: 3\n", "log.tensorboard", "bool"),
        ("log:\n  tensorboard: maybe\n", "log.tensorboard", "bool"),
    ],
)
def test_wrong_types_in_yaml_name_the_file_line_and_key(tmp_path, text, key, kind):
    path = _file(tmp_path, text)
    message = _error(["--config", str(path)])
    assert message.startswith(f"{path}, line 2: bad value "), message
    assert f"for '{key}' ({kind})" in message


def test_an_unquoted_no_for_a_text_key_says_to_quote_it(tmp_path):
    message = _error(["--config", str(_file(tmp_path, "train:\n  precision: no\n"))])
    assert "got a boolean" in message and "quote the value" in message


# ---- ranges ----------------------------------------------------------------------------------------

BAD_VALUES = [
    ("train.steps", "0"),
    ("train.batch_size", "0"),
    ("train.accum_steps", "0"),
    ("train.lr", "0"),
    ("train.lr", "nan"),
    ("train.lr", "inf"),
    ("train.min_lr", "-1e-5"),
    ("train.warmup", "-1"),
    ("train.grad_clip", "-1"),
    ("train.max_bad_steps", "0"),
    ("train.precision", "fp8"),
    ("train.optimizer", "sgd"),
    ("train.betas", "0.9"),
    ("train.betas", "0.9,1.0"),
    ("train.betas", "[0.9, 0.9, 0.9]"),
    ("train.eps", "0"),
    ("train.weight_decay", "-0.1"),
    ("data.workers", "-1"),
    ("data.samples_per_epoch", "0"),
    ("data.shuffle_buffer", "0"),
    ("data.clip_seconds", "0"),
    ("data.weights", "3,0"),
    ("data.weights", "[-1]"),
    ("data.max_bad_in_row", "0"),
    ("checkpoint.every", "-1"),
    ("checkpoint.keep_last", "-1"),
    ("checkpoint.keep_best", "0"),
    ("valid.every", "-1"),
    ("valid.batch_size", "0"),
    ("valid.max_samples", "-1"),
    ("valid.metric", "accuracy"),
    ("log.every", "0"),
    ("model.init", ""),
    ("model.init", "preset:huge"),
    ("model.tokenizer_samples", "0"),
    ("model.vocab_size", "-1"),
    ("out", ""),
    ("train.loss", "contrastive"),
    ("train.ema_decay", "1"),
    ("train.ema_decay", "-0.1"),
    ("valid.benchmarks", "imagenet:somewhere"),
    ("valid.benchmarks", "birdset:/nonexistent/copy:HSN"),
    ("distill.feature_weight", "-1"),
    ("distill.affinity_weight", "-0.5"),
    ("distill.contrastive_weight", "-1"),
]


def test_a_teacher_with_nothing_to_teach_is_refused():
    message = _error(["--distill.teacher", "t", "--distill.feature_weight", "0", "--distill.affinity_weight", "0"])
    assert message.startswith("command line: 'distill.teacher' is set but") and "learn nothing" in message
    assert _error(["--distill.teacher_text", "true"]).startswith(
        "command line: 'distill.teacher_text' gives the student the teacher's text tower: set distill.teacher too"
    )
    assert "both give the student a text tower" in _error(
        ["--distill.teacher", "t", "--distill.teacher_text", "true", "--model.text_tower", "roberta-base"]
    )
    assert _error(["--distill.audio_only", "true"]).startswith(
        "command line: 'distill.audio_only' distils the audio tower from a teacher: set distill.teacher too"
    )


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_out_of_range_on_the_command_line_names_the_key(key, value):
    message = _error([f"--{key}", value] if value else [f"--{key}="])
    assert message.startswith(f"command line: '{key}'"), message


@pytest.mark.parametrize(
    "key, value",
    [
        ("checkpoint.every", -1),
        ("data.workers", -1),
        ("valid.metric", "accuracy"),
        ("train.lr", -0.1),
        ("train.precision", "fp32"),
    ],
)
def test_out_of_range_in_a_file_names_the_file_line_and_key(tmp_path, key, value):
    section, name = key.split(".")
    path = _file(tmp_path, f"log:\n  every: 5\n{section}:\n  {name}: {value}\n")
    message = _error(["--config", str(path)])
    assert message.startswith(f"{path}, line 4: '{key}'"), message


def test_the_documented_examples(tmp_path):
    assert _error(["--checkpoint.every", "-1"]) == "command line: 'checkpoint.every' must be at least 0, got -1"
    assert _error(["--data.workers", "-1"]) == "command line: 'data.workers' must be at least 0, got -1"
    message = _error(["--valid.metric", "text_to_audio/mAP@5"])
    assert message.startswith("command line: 'valid.metric' must be one of the validation scores ")
    assert "text_to_audio/mAP@10" in message and message.endswith("got 'text_to_audio/mAP@5'")


def test_every_problem_is_reported_at_once_in_file_order(tmp_path):
    path = _file(tmp_path, "data:\n  workers: -1\ncheckpoint:\n  every: -1\n")
    message = _error(["--config", str(path), "--train.steps", "0"])
    assert message.splitlines() == [
        "3 problems in the training config:",
        f"  {path}, line 2: 'data.workers' must be at least 0, got -1",
        f"  {path}, line 4: 'checkpoint.every' must be at least 0, got -1",
        "  command line: 'train.steps' must be at least 1, got 0",
    ]


def test_type_and_name_mistakes_are_reported_with_the_ranges_all_at_once(tmp_path, capsys):
    """Wrong types, unknown sections and keys in the file and on the command line stopped at the first one, though
    the ranges were all reported at once; now every mistake is, and train.py exits 2 for any of them, as
    python -m data_pipeline does for its config."""
    from biolingual.training.loop import main

    path = _file(tmp_path, "train:\n  lr: abc\n  steps: 1.5\nnosuch:\n  x: 1\ndata:\n  workers: -1\n  wrokers: 2\n")
    argv = ["--config", str(path), "--train.foo", "1", "--bar.x", "2", "--log.every", "0"]
    lines = _error(argv).splitlines()
    assert lines[0] == "8 problems in the training config:", lines
    for expected in (
        f"{path}, line 2: bad value 'abc' for 'train.lr' (float)",
        f"{path}, line 3: bad value 1.5 for 'train.steps'",
        f"{path}, line 4: unknown config section 'nosuch'",
        f"{path}, line 7: 'data.workers' must be at least 0",
        f"{path}, line 8: unknown config key 'data.wrokers'",
        "command line: unknown config key 'train.foo'",
        "command line: unknown config section 'bar' in 'bar.x'",
        "command line: 'log.every' must be at least 1",
    ):
        assert sum(line.startswith(f"  {expected}") for line in lines) == 1, (expected, lines)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and str(exit_.value).startswith("error: 8 problems in the training config:")
    assert capsys.readouterr().err.startswith("error: 8 problems in the training config:\n")


def test_zero_means_off_or_all_where_documented():
    c = load_config(
        [
            "--checkpoint.every",
            "0",
            "--checkpoint.keep_last",
            "0",
            "--valid.every",
            "0",
            "--valid.max_samples",
            "0",
            "--data.workers",
            "0",
            "--train.grad_clip",
            "0",
            "--train.warmup",
            "0",
        ]
    )
    assert (c.checkpoint.every, c.checkpoint.keep_last, c.valid.every, c.data.workers) == (0, 0, 0, 0)


def test_min_lr_above_lr_is_refused():
    assert "'train.min_lr' must not be above train.lr" in _error(["--train.lr", "1e-4", "--train.min_lr", "1e-3"])


def test_validate_names_keys_without_origins():
    c = Config()
    c.train.steps = 0
    with pytest.raises(ConfigError, match=r"^'train.steps' must be at least 1, got 0$"):
        c.validate()


# ---- valid.metric follows the metrics module ---------------------------------------------------------


def test_metric_names_are_what_validation_reports():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    scores = retrieval_metrics(x, x, captions=list("abcde"))
    assert set(metric_names()) == set(scores) - {"n_items"}
    for name in metric_names():
        assert load_config(["--valid.metric", name]).valid.metric == name


# ---- resume ------------------------------------------------------------------------------------------


def test_resume_must_be_latest_or_an_existing_file(tmp_path):
    missing = tmp_path / "runs" / "step_10.pt"
    assert (
        _error(["--resume", str(missing)])
        == f"command line: 'resume': checkpoint to resume from not found: '{missing}'"
    )
    assert "is a folder" in _error(["--resume", str(tmp_path)])
    path = _file(tmp_path, f"resume: {missing}\n")
    assert _error(["--config", str(path)]).startswith(f"{path}, line 1: 'resume': checkpoint to resume from not found")
    missing.parent.mkdir()
    missing.write_bytes(b"")
    assert load_config(["--resume", str(missing)]).resume == str(missing)
    assert load_config(["--resume", "latest"]).resume == "latest"


# ---- the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--train.lr"], "command line: --train.lr needs a value"),
        (["--train.lr", "--train.steps", "3"], "command line: --train.lr needs a value"),
        (["steps=3"], "command line: unexpected argument 'steps=3'"),
        (["--train", "3"], "command line: 'train' is a section, not a key"),
        (["--train.lr.x", "3"], "command line: 'train.lr' is a key, not a section"),
        (["--trian.lr", "3"], "command line: unknown config section 'trian'"),
        (["--config"], "command line: argument --config: expected one argument"),
        (["--train.steps", "1.5"], "command line: bad value '1.5' for 'train.steps' (int)"),
    ],
)
def test_command_line_mistakes(argv, expected):
    assert _error(argv).startswith(expected)


def _train_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_train_py_help(capsys):
    """The library hands the usage back (HelpRequested); only train.py's main prints it and exits 0."""
    from biolingual.training.config import HelpRequested
    from biolingual.training.loop import main

    for flag in ("--help", "-h"):
        with pytest.raises(HelpRequested) as info:
            load_config(["--train.lr", "3e-4", flag])
        assert str(info.value).startswith("usage: train.py") and "--section.key value" in str(info.value)
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--section.key value" in out


def test_train_py_reports_a_bad_config_without_a_traceback(tmp_path):
    """Through the real door: `python train.py --config BAD.yaml` stops before training with one line."""
    path = _file(tmp_path, "train:\n  steps: 10\n   lr: 0.1\n", "BAD.yaml")
    result = _train_py("--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: {path}, line 3, column 6: could not parse YAML" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_train_py_reports_a_missing_resume_checkpoint(tmp_path, monkeypatch):
    """In this process (the subprocess test above shows that train.py turns these errors into one line)."""
    from biolingual.training.loop import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SystemExit, match="^error: command line: 'resume': checkpoint to resume from not found: 'nowhere/step_5.pt'"
    ):
        main(["--resume", "nowhere/step_5.pt", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
