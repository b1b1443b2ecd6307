"""Free-text search and zero-shot detection over long recordings: index, query, detect, export."""
from .detect import detect
from .index import IndexCorruptError, IndexData, ModelMismatchError, SearchIndexError, build_index, load_index
from .query import Hit, search

__all__ = ["Hit", "IndexCorruptError", "IndexData", "ModelMismatchError", "SearchIndexError", "build_index", "detect", "load_index", "search"]
