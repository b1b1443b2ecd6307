"""Checks on an LLM caption: no refusal, no talk about the task, names the species, names no place.

The word lists follow AnimalSpeak's filters (sorry/apologize, 'description', 'information',
'caption'); place names come from the record itself plus common place words (no NER model offline).
"""
from __future__ import annotations

import re

from ..record import Record

REFUSAL = re.compile(r"\b(sorry|apologi[sz]e|as an ai|i can(?:'|no)t|i am unable|i'm unable|siento)\b", re.I)
META = re.compile(r"\b(description|information|caption|the notes|the text|recordist|the recording notes)\b", re.I)
PLACE_WORDS = re.compile(r"\b(national park|state park|park|reserve|county|province|river|lake|forest|mountains?|"
                         r"island|village|city|trail|road|route|highway)\b", re.I)
MAX_CHARS = 300


def problem(caption: str, record: Record) -> str:
    """Why the caption is unusable, or '' when it is fine."""
    text = (caption or "").strip()
    if not text:
        return "empty reply"
    if len(text) > MAX_CHARS:
        return f"too long ({len(text)} characters)"
    if REFUSAL.search(text):
        return "refuses"
    if META.search(text):
        return "talks about the task"
    names = [n for n in (record.species_common, record.species_scientific) if n]
    if names and not any(n.lower() in text.lower() for n in names):
        return "omits the species"
    for place in record.places:
        if place and place.lower() in text.lower():
            return f"names a place ({place})"
    match = PLACE_WORDS.search(text.replace(record.species_common, "") if record.species_common else text)
    if match:
        return f"names a place ({match.group(0)})"
    return ""
