"""Every ```bash and ```python block in the workflow pages runs as written.

Blocks run in page order from a scratch copy of the repository root where `make demo`'s model
(demo_out/run/best) exists; ```text blocks are illustrations and are not run. Their `python` and
`biolingual` commands run in children of a warm interpreter (tests/warm_python.py) that imported torch and
transformers once: each command's code, arguments, files and streams are its own.
"""

import re
import subprocess
from pathlib import Path

import pytest

from tests import warm_python

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "inference.md",
    "models.md",
    "audio.md",
    "training.md",
    "data_pipeline.md",
    "search.md",
    "agile.md",
    "evaluation.md",
    "probing.md",
]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, saved_model):
    d = tmp_path_factory.mktemp("docs")
    for name in ("demo", "configs", "train.py", "eval", "data_pipeline"):  # not installed: run from a checkout
        (d / name).symlink_to(ROOT / name)
    (d / "demo_out" / "run").mkdir(parents=True)
    (d / "demo_out" / "run" / "best").symlink_to(saved_model)
    return d


@pytest.fixture(scope="module")
def warm_env(tmp_path_factory):
    with warm_python.started(tmp_path_factory.mktemp("warm"), {"HF_HUB_OFFLINE": "1"}) as env:
        yield env


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page, workdir, warm_env):
    blocks = BLOCK.findall((ROOT / "docs" / page).read_text())
    assert blocks, f"{page} has no runnable block"
    for language, code in blocks:
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else ["python", "-c", code]
        result = subprocess.run(command, cwd=workdir, env=warm_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{page}:\n{code}\n{result.stderr[-3000:]}"
