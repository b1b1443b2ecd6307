"""Optional dependencies: import one by name, or stop with the ``pip install`` line that brings it.

In: a module name (``"faiss"``), the extra that installs it (``"search"``) and what it is needed for.
Out: the imported module, or :class:`MissingExtraError` (an ``ImportError``) whose message names the extra.

``pip install biolingual`` gives only the core (load, embed, zero-shot, ``biolingual predict``/``embed``);
training, the data pipeline, large-index search and the evaluation plots need extras (setup.cfg lists
them). Every import of an extra's package goes through :func:`require`, so a missing one is reported the
same way everywhere, and the core never imports one at start-up (tests/test_core_install.py).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the distribution pip installs it from, where the names differ
_DISTRIBUTIONS = {"faiss": "faiss-cpu", "sklearn": "scikit-learn", "yaml": "pyyaml"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or MissingExtraError naming ``biolingual[extra]`` (and
    ``.[extra]``, the same install from a checkout, as the README's "Installing by hand" puts it)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed: that traceback is the useful one
        dist = _DISTRIBUTIONS.get(top, top)
        raise MissingExtraError(
            f"{purpose} needs {dist}, which is not installed: pip install 'biolingual[{extra}]' "
            f"(from a checkout: pip install '.[{extra}]')"  # eval/ and data_pipeline/ run only from one
        ) from e
