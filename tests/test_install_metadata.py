"""setup.cfg (what `pip install biolingual[...]` asks for) and requirements.txt (the flat list of everything)
agree; the core leaves out every heavy extra; the wheel installs only `biolingual`; this environment
satisfies it all."""

from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("train", "pipeline", "search", "eval", "agile")


def _requirements(lines) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name not in found, f"{req.name} is listed twice"
            found[name] = req
    return found


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _core() -> dict[str, Requirement]:
    return _requirements(_setup_cfg()["options"]["install_requires"].splitlines())


def _extras() -> dict[str, dict[str, Requirement]]:
    section = _setup_cfg()["options.extras_require"]
    return {name: _requirements(section[name].splitlines()) for name in section}


def _requirements_txt() -> dict[str, Requirement]:
    return _requirements((ROOT / "requirements.txt").read_text().splitlines())


def _every_list() -> list[tuple[str, dict[str, Requirement]]]:
    return [("install_requires", _core()), *_extras().items(), ("requirements.txt", _requirements_txt())]


def _key(req: Requirement):
    return set(map(str, req.specifier)), req.extras, str(req.marker)


def test_a_package_has_the_same_range_in_every_list():
    seen: dict[str, tuple[str, Requirement]] = {}
    differ = []
    for where, reqs in _every_list():
        for name, req in reqs.items():
            if name in seen and _key(seen[name][1]) != _key(req):
                differ.append(f"{name}: '{seen[name][1]}' in {seen[name][0]}, '{req}' in {where}")
            seen.setdefault(name, (where, req))
    assert not differ, differ


def test_the_extras_are_train_pipeline_search_eval_agile_all_and_test():
    assert set(_extras()) == {*EXTRAS, "all", "test"}


def test_all_is_every_extra_together():
    extras = _extras()
    assert set(extras["all"]) == set().union(*(extras[name] for name in EXTRAS))


def test_the_core_leaves_out_the_heavy_extras():
    core = _core()
    assert {"torch", "transformers", "tokenizers", "numpy", "soundfile", "soxr"} <= set(core)
    heavy = {"openai", "faiss-cpu", "matplotlib", "accelerate", "webdataset", "scikit-learn", "tensorboard"}
    assert not heavy & set(core)
    assert not set(core) & set(_extras()["all"])  # an extra adds packages, it never repeats the core's


def test_requirements_txt_is_the_core_and_every_extra_except_torch():
    extras = _extras()
    assert set(_requirements_txt()) == (set(_core()) - {"torch"}) | set(extras["all"]) | set(extras["test"])


def test_the_wheel_installs_biolingual_and_the_runners_as_biolingual_eval():
    """Top-level `eval` and `data_pipeline` in site-packages would shadow other projects' modules: the eval runners
    are installed as `biolingual_eval` (the same files, mapped from eval/) with the `biolingual-eval` command, so an
    installed package runs the benchmarks from any folder; data_pipeline runs from a checkout. Every package folder
    is listed (an explicit list, since find: cannot rename a package)."""
    cfg = _setup_cfg()
    listed = set(cfg["options"]["packages"].split())
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("biolingual", "eval")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == {
        name.replace("eval", "biolingual_eval", 1) if name.split(".")[0] == "eval" else name for name in folders
    }
    assert cfg["options"]["package_dir"].split() == ["biolingual_eval", "=", "eval"]
    assert "biolingual-eval = biolingual_eval.__main__:main" in cfg["options.entry_points"]["console_scripts"]


def test_known_minimum_versions():
    core, extras = _core(), _extras()
    assert str(core["transformers"].specifier) in (">=5.0,<6", "<6,>=5.0")
    assert core["torch"].specifier.contains("2.7.0") and not core["torch"].specifier.contains("2.6.0")
    accelerate = extras["train"]["accelerate"].specifier
    assert accelerate.contains("1.7.0") and not accelerate.contains("1.6.0")


@pytest.mark.parametrize("name", sorted({**_core(), **_extras()["all"], **_extras()["test"]}))
def test_this_environment_satisfies_setup_cfg(name):
    req = {**_core(), **_extras()["all"], **_extras()["test"]}[name]
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is required by setup.cfg but not installed")
    assert req.specifier.contains(version, prereleases=True), f"installed {req.name} {version} does not satisfy '{req}'"
