"""Agile modelling over an index: text- or example-seeded active learning, labels that persist, and
classifier heads that ``biolingual detect --head`` applies. The review page (``biolingual review``) is
built on the same API (:class:`AgileSession`).

The names below are imported on first use, so that ``biolingual.agile.density`` or the label store (and
the ``agile label``/``undo``/``targets`` commands) do not bring in torch through the heads.
"""

import importlib

# numpy only; imported here because the function shares its module's name: a lazy name would be shadowed by
# the submodule once anything imported biolingual.agile.propose
from .propose import Proposal as Proposal
from .propose import propose as propose

_ATTRIBUTES = {
    "Head": "head",
    "fit_head": "head",
    "Label": "labels",
    "LabelStore": "labels",
    "Target": "labels",
    "import_raven": "raven",
    "AgileSession": "session",
    "FitResult": "session",
    "RankedWindow": "session",
}

__all__ = sorted([*_ATTRIBUTES, "Proposal", "propose"])


def __getattr__(name: str):
    if name not in _ATTRIBUTES:
        raise AttributeError(f"module 'biolingual.agile' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES))
