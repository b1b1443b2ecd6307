"""Captioners: record -> [caption, caption with the scientific name]. ``template`` (default) or ``openai``."""

from __future__ import annotations

from pathlib import Path

from .template import TemplateCaptioner


def make_captioner(config: dict, cache_path: Path):
    config = dict(config)
    kind = config.pop("type")
    if kind == "template":
        if config:
            raise ValueError(f"captioner 'template' takes no options, got {sorted(config)}")
        return TemplateCaptioner()
    if kind == "openai":
        from .llm import OpenAICaptioner  # imported lazily: the openai package is only needed here

        return OpenAICaptioner(cache_path=cache_path, **config)
    raise ValueError(f"unknown captioner type '{kind}' (use template or openai)")
