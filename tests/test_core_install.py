"""`pip install biolingual` without extras: load, embed, zero-shot and `biolingual predict`/`embed` work with
none of the extras' packages importable, and code that needs an extra says which one to install.

A fresh virtualenv per test run would take minutes, so a child interpreter hides the extras' packages
instead: a meta-path finder answers "not found" for them, exactly as a missing package does (including to
transformers' own ``find_spec`` checks for accelerate).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from biolingual.extras import MissingExtraError, require

# top-level modules of every extra's packages (setup.cfg [options.extras_require])
EXTRAS_MODULES = [
    "accelerate",
    "braceexpand",
    "faiss",
    "fastapi",
    "matplotlib",
    "multipart",
    "openai",
    "pyarrow",
    "python_multipart",
    "requests",
    "sklearn",
    "tensorboard",
    "urllib3",
    "uvicorn",
    "webdataset",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HIDE = textwrap.dedent(f"""
    import importlib.machinery, sys
    HIDDEN = {EXTRAS_MODULES!r}

    class Hide(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[:] = [Hide if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
""")


def _run_without_extras(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )  # the checkout: data_pipeline and eval run from it


def test_the_hiding_works():
    result = _run_without_extras("import webdataset")
    assert result.returncode != 0 and "No module named 'webdataset'" in result.stderr


def test_load_embed_zero_shot_and_the_cli_need_no_extra(saved_model, clips, tmp_path):
    paths = [str(p) for p in clips.values()]
    result = _run_without_extras(f"""
        import biolingual
        from biolingual.cli import main

        model = biolingual.load({str(saved_model)!r}, device="cpu")
        assert model.embed_audio({paths[:2]!r}).shape[0] == 2
        assert model.zero_shot({paths[:2]!r}, ["Spring Peeper", "Barred Owl"]).shape == (2, 2)
        assert main(
            ["predict", *{paths!r}, "--model", {str(saved_model)!r}, "--labels", "Spring Peeper", "Barred Owl"]
        ) == 0
        assert main(["embed", *{paths!r}, "--model", {str(saved_model)!r}, "--out", {str(tmp_path / "e.npy")!r}]) == 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
        assert not loaded, loaded
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "e.npy").is_file()


@pytest.mark.parametrize(
    "module, extra",
    [
        ("biolingual.data", "train"),
        ("biolingual.training.loop", "train"),
    ],
)
def test_modules_that_need_an_extra_name_it(module, extra):
    result = _run_without_extras(f"import {module}")
    assert result.returncode != 0
    assert "MissingExtraError" in result.stderr and f"pip install 'biolingual[{extra}]'" in result.stderr


def test_faiss_search_names_the_search_extra():
    result = _run_without_extras("""
        import numpy as np
        from biolingual.search.query import FaissSearcher

        FaissSearcher.build(np.zeros((100, 8), np.float32))
    """)
    assert "pip install 'biolingual[search]'" in result.stderr


def test_classification_metrics_name_the_eval_extra():
    result = _run_without_extras("from biolingual.metrics import accuracy; accuracy([1], [1])")
    assert "pip install 'biolingual[eval]'" in result.stderr


def test_require_names_the_distribution_and_the_extra(monkeypatch):
    import biolingual.extras as extras

    def not_installed(name):
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    monkeypatch.setattr(extras.importlib, "import_module", not_installed)
    with pytest.raises(
        MissingExtraError,
        match=r"^search needs faiss-cpu, .*: pip install 'biolingual\[search\]' "
        r"\(from a checkout: pip install '\.\[search\]'\)$",
    ):
        require("faiss", "search", "search")


def test_a_broken_package_is_not_reported_as_missing(tmp_path, monkeypatch):
    """A package that is installed but fails on one of its own imports keeps its own error."""
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import no_such_dependency_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("brokenpkg", "x", "y")
    assert not isinstance(info.value, MissingExtraError)
    assert require("json", "core", "nothing").dumps([]) == "[]"


def test_the_command_line_prints_the_extra_to_install(monkeypatch, capsys):
    """`biolingual search` on an index big enough for faiss, without faiss: one error line, no traceback."""
    import biolingual.search.cli as search_cli
    from biolingual.cli import main

    def needs_faiss(args):
        raise MissingExtraError(
            "faiss search needs faiss-cpu, which is not installed: pip install 'biolingual[search]'"
        )

    monkeypatch.setattr(search_cli, "cmd_search", needs_faiss)
    assert main(["search", "some_index", "an owl"]) == 1
    assert capsys.readouterr().err == (
        "error: faiss search needs faiss-cpu, which is not installed: pip install 'biolingual[search]'\n"
    )


def test_the_data_pipeline_names_its_extra_without_a_traceback(tmp_path):
    """issue 15: without the pipeline extra, `python -m data_pipeline build` says which extra to install
    (it used to stop on a bare "No module named 'requests'"); the modules import with the core alone."""
    config = tmp_path / "c.yaml"
    config.write_text("sources: [{type: synthetic, species: 2, clips_per_species: 1, seconds: 1.0}]\n")
    result = _run_without_extras(f"""
        import data_pipeline.build, data_pipeline.http, data_pipeline.record, data_pipeline.shards
        from data_pipeline.__main__ import main

        sys.exit(main(["build", "--config", {str(config)!r}, "--out", {str(tmp_path / "out")!r}, "--no-progress"]))
    """)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: writing webdataset shards (data_pipeline.shards) needs webdataset, which is not installed: "
        "pip install 'biolingual[pipeline]' (from a checkout: pip install '.[pipeline]')"
    )
    assert not list((tmp_path / "out").glob("*.tar"))


def test_the_archives_client_names_the_pipeline_extra():
    result = _run_without_extras("""
        from data_pipeline.http import PoliteClient

        PoliteClient()
    """)
    assert "MissingExtraError: downloading from the archives (python -m data_pipeline) needs requests" in result.stderr
    assert "pip install 'biolingual[pipeline]'" in result.stderr


def test_train_py_names_the_train_extra_in_one_line(tmp_path):
    """issue 15: `python train.py` without the train extra stops with one error line naming it (the training
    loop imports accelerate on import, which used to end in a traceback)."""
    result = _run_without_extras(f"""
        import runpy
        sys.argv = ["train.py", "--config", "configs/demo.yaml", "--out", {str(tmp_path / "run")!r}]
        runpy.run_path("train.py", run_name="__main__")
    """)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: training needs accelerate, which is not installed: pip install 'biolingual[train]' "
        "(from a checkout: pip install '.[train]')"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "runner, args",
    [
        ("eval.retrieval", ["--shards", "shards/test-{000000..000001}.tar"]),
        ("eval.zero_shot", ["--shards", "shards/test-{000000..000001}.tar"]),
    ],
)
def test_eval_runners_reading_shards_name_the_eval_extra_in_one_line(tmp_path, runner, args):
    """issue 15: the shard readers' packages are the eval extra's here (they used to stop in a traceback
    naming [train], biolingual.data's extra); the runners import with the core alone (beans too)."""
    result = _run_without_extras(f"""
        import eval.beans
        from {runner} import main

        sys.exit(main({args!r} + ["--model", "nowhere", "--device", "cpu", "--out", {str(tmp_path / "out")!r}]))
    """)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: reading webdataset shards (python -m {runner}{' --shards' if runner == 'eval.zero_shot' else ''}) "
        "needs braceexpand, which is not installed: pip install 'biolingual[eval]' (from a checkout: pip install "
        "'.[eval]')"
    )


def test_an_aves_download_without_requests_names_the_eval_extra(tmp_path):
    """The probe's AVES download needs requests (the eval extra): an AvesError naming it and the manual way."""
    result = _run_without_extras(f"""
        import os
        os.environ["BIOLINGUAL_AVES_DIR"] = {str(tmp_path)!r}
        from eval.probe.aves import AvesError, fetch_aves

        try:
            fetch_aves("aves")
        except AvesError as e:
            print(e)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(
        "downloading the aves weights needs requests, which is not installed: pip install 'biolingual[eval]'"
    ), result.stdout
    assert f"into {tmp_path}" in result.stdout


def test_beans_zero_without_pyarrow_is_one_error_line_naming_the_eval_extra(tmp_path):
    """run_main reports a missing extra like any user mistake (it used to end in a traceback)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.parquet").write_bytes(b"")  # pyarrow is needed before the file is read
    result = _run_without_extras(f"""
        from eval.beans_zero.runner import main

        sys.exit(main(["--data", {str(tmp_path / "data")!r}, "--out", {str(tmp_path / "out")!r}, "--model", "nowhere",
                       "--device", "cpu"]))
    """)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: reading BEANS-Zero's Arrow and parquet files needs pyarrow, which is not installed: "
        "pip install 'biolingual[eval]' (from a checkout: pip install '.[eval]')"
    )


def test_the_probe_without_matplotlib_names_the_eval_extra_before_any_work(tmp_path):
    """eval.probe plots at the end of a run: a missing matplotlib is one error line at the start, not a
    traceback after the extraction (--no-plots needs no matplotlib)."""
    csv = tmp_path / "calls.csv"
    csv.write_text("path,label\na.wav,x\nb.wav,y\n")
    result = _run_without_extras(f"""
        from eval.probe.__main__ import main

        sys.exit(main(["--models", "biolingual", "--data", {str(csv)!r}, "--out", {str(tmp_path / "out")!r},
                       "--device", "cpu"]))
    """)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: plotting results needs matplotlib, which is not installed: pip install 'biolingual[eval]' "
        "(from a checkout: pip install '.[eval]')"
    )
    assert not (tmp_path / "out" / "results.md").exists()
