"""setup.cfg (what `pip install biolingual` asks for) and requirements.txt (what `make` installs) name the
same packages with the same version ranges, and this environment satisfies them."""
from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


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


def _setup_cfg() -> tuple[dict[str, Requirement], dict[str, Requirement]]:
    """(install_requires, extras_require test)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return (_requirements(cfg["options"]["install_requires"].splitlines()),
            _requirements(cfg["options.extras_require"]["test"].splitlines()))


def _requirements_txt() -> dict[str, Requirement]:
    return _requirements((ROOT / "requirements.txt").read_text().splitlines())


def _same(a: Requirement, b: Requirement) -> bool:
    return (set(map(str, a.specifier)), a.extras, str(a.marker)) == (set(map(str, b.specifier)), b.extras, str(b.marker))


def test_setup_cfg_and_requirements_txt_agree_on_every_shared_package():
    install, test = _setup_cfg()
    listed = _requirements_txt()
    both = {**install, **test}
    shared = sorted(set(both) & set(listed))
    assert shared, "nothing in common: the parser is broken"
    differ = {name: (str(both[name]), str(listed[name])) for name in shared if not _same(both[name], listed[name])}
    assert not differ, f"setup.cfg vs requirements.txt: {differ}"


def test_they_list_the_same_packages_except_torch_and_the_test_runner():
    install, test = _setup_cfg()
    listed = _requirements_txt()
    assert set(install) - set(listed) == {"torch"}  # the Makefile installs a pinned CPU torch first
    assert set(listed) - set(install) == set(test) == {"pytest", "pytest-xdist"}


def test_known_minimum_versions():
    install, _ = _setup_cfg()
    assert str(install["transformers"].specifier) in (">=5.0,<6", "<6,>=5.0")
    assert install["torch"].specifier.contains("2.7.0") and not install["torch"].specifier.contains("2.6.0")
    assert install["accelerate"].specifier.contains("1.7.0") and not install["accelerate"].specifier.contains("1.6.0")


@pytest.mark.parametrize("name", sorted({**_setup_cfg()[0], **_setup_cfg()[1]}))
def test_this_environment_satisfies_setup_cfg(name):
    install, test = _setup_cfg()
    req = {**install, **test}[name]
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is required by setup.cfg but not installed")
    assert req.specifier.contains(version, prereleases=True), f"installed {req.name} {version} does not satisfy '{req}'"
