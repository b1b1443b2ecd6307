"""Free-text search and zero-shot detection over long recordings: index, query, detect, export.

The names below are imported on first use, so that ``from biolingual.search.query import search`` (a search by
an embedding or an index row) does not bring in torch through detection.
"""

import importlib

_ATTRIBUTES = {
    "detect": "detect",
    "IndexCorruptError": "index",
    "IndexData": "index",
    "ModelMismatchError": "index",
    "SearchIndexError": "index",
    "build_index": "index",
    "load_index": "index",
    "Hit": "query",
    "search": "query",
}

__all__ = [
    "Hit",
    "IndexCorruptError",
    "IndexData",
    "ModelMismatchError",
    "SearchIndexError",
    "build_index",
    "detect",
    "load_index",
    "search",
]


def __getattr__(name: str):
    if name not in _ATTRIBUTES:
        raise AttributeError(f"module 'biolingual.search' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES))
