"""The key-free default captioner: 'The sound of a Barred Owl' (AnimalSpeak's fallback caption)."""

from __future__ import annotations

import re

from ..record import Record

_TYPES = {"song", "call", "alarm call", "flight call", "drumming", "advertisement call", "echolocation", "duet"}


def article(name: str) -> str:
    return "an" if name[:1].upper() in "AEIOU" else "a"


def second_caption(caption: str, record: Record) -> str:
    """The same sentence with the scientific name (AnimalSpeak's caption2)."""
    common, scientific = record.species_common, record.species_scientific
    if not (common and scientific and common in caption):
        return caption
    # keep the article right: "an Azure Whistler" -> "a Galpelka fenomeus"
    caption = re.sub(
        rf"\b([Aa])n? {re.escape(common)}", lambda m: f"{m.group(1)}{article(scientific)[1:]} {scientific}", caption
    )
    return caption.replace(common, scientific)


def given_captions(record: Record) -> list[str]:
    """Ready-made captions (AnimalSpeak CSV) as they are; a lone caption gets its scientific-name twin."""
    captions = [c for c in record.captions if c.strip()]
    return captions if len(captions) != 1 else [captions[0], second_caption(captions[0], record)]


class TemplateCaptioner:
    name = "template"

    def caption(self, record: Record) -> list[str]:
        if record.captions:
            return given_captions(record)
        return self.template(record)

    @staticmethod
    def template(record: Record) -> list[str]:
        name = record.species_common or record.species_scientific
        kind = record.sound_type.strip().lower()
        noun = kind if kind in _TYPES else "sound"
        caption = f"The {noun} of {article(name)} {name}"
        return [caption, second_caption(caption, record)]
