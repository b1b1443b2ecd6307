"""Checks on an LLM caption: no refusal, no talk about the task, names the species, names no place.

The word lists follow AnimalSpeak's filters (sorry/apologize, 'description', 'information',
'caption'). AnimalSpeak caught places with an NER model; offline we have none, so a place is caught
in two ways, both on whole words, accent-folded ("Yasuni" = "Yasuní"), after the species' own names
are taken out of the caption (a Carolina Wren recorded in North Carolina is not a place mention):

- the record's own place names (Xeno-canto ``loc`` and ``cnt``, iNaturalist ``place_guess``, ...):
  each comma-separated part loses its generic words ("Parque Nacional", "County", "near", "lake",
  directions, ...), and what is left ("Yasuní", "Tompkins", "New York") is matched as a phrase that
  must be capitalised in the caption, as proper names are. A name with no word of 3+ letters ("Y",
  "A", "NY") is no evidence, and one word at the start of a sentence is not (capitals say nothing
  there: "Long trills ..." for "Long Point").
- proper-name shapes from a place-type word: "Lake Moultrie", "Mt. Kinabalu", "Yosemite National Park",
  "Cave Creek". A lower-case habitat word ("a lake", "the forest", "mountain stream") is what is heard
  around the animal and is kept.

Misses (measured in tests/test_caption_places.py, reported in docs/data_pipeline.md): places that are
neither in the record nor shaped like "<Name> <place word>" ("the Andes"), and demonyms ("a Spanish marsh").
"""

from __future__ import annotations

import re
import unicodedata

from ..record import Record

REFUSAL = re.compile(r"\b(sorry|apologi[sz]e|as an ai|i can(?:'|no)t|i am unable|i'm unable|siento)\b", re.I)
META = re.compile(r"\b(description|information|caption|the notes|the text|recordist|the recording notes)\b", re.I)
MAX_CHARS = 300

# Words of a place name that alone are no evidence of it (accent-folded, lower case): place types,
# habitats, directions and function words in the archives' languages. Digits and km marks are skipped too.
GENERIC = frozenset(
    """
    near nr of de del dela la las los el le les lo the and y e et do da dos das di du des in at on by to
    above below along outside between road rd trail track path route highway hwy km mi ca approx
    national nacional nationale natural park parque parc np reserve reserva preserve
    refuge sanctuary wildlife conservation area areas protected state estado province provincia
    department departamento district region municipality municipio county co city town village
    ecologica ecological biologica biological estacion station field centre center research campus
    garden gardens botanical farm ranch private property hq headquarters lodge camp
    lake lakes lago laguna lagoon lac river rivers rio riviere creek stream brook pond pool
    mount mt monte mountain mountains cerro volcan volcano hill hills valley canyon gorge ridge peak
    forest forests bosque woods wood woodland jungle selva plantation marsh marshes swamp bog fen
    wetland wetlands meadow grassland prairie desert beach playa coast shore bay bahia key cay
    island islands isla ilha point
    north south east west northern southern eastern western upper lower n s w ne nw se sw
""".split()
)
# Place-type words that make a capitalised neighbour a proper name. PREFIX: "Lake Moultrie";
# SUFFIX: "Hudson River". Words that also start species names ("River Warbler", "Cape May Warbler",
# "Island Thrush", "Mountain Chickadee") are left out of PREFIX.
PREFIX = frozenset("lake lago laguna lac mount mt monte cerro volcan rio parque reserva nacional isla ilha".split())
SUFFIX = frozenset(
    """lake lakes river creek park county province reserve preserve refuge sanctuary island islands
    mountains hills valley canyon bay falls national forest road trail highway city village""".split()
)
FUNCTION = frozenset(
    "a an the one two three four several many some this that these in at on near by from "
    "and with of to over across along beside".split()
)
_WORD = re.compile(r"[^\W_]+")
_BREAK = re.compile(r"[,;:()/|]|\s-\s")  # separates the parts of a place string


def fold(word: str) -> str:
    """'Yasuní' -> 'yasuni': no accents, case-folded (unicodedata is enough; no extra dependency)."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c)).casefold()


def _words(text: str) -> list[tuple[str, str]]:
    """(folded, original) whole words; a possessive "'s" is dropped and in-word apostrophes joined (Hawai'i)."""
    text = re.sub(r"['’ʻ`]s\b", "", text)
    text = re.sub(r"(?<=\w)['’ʻ`](?=\w)", "", text)
    return [(fold(w), w) for w in _WORD.findall(text)]


def _names(place: str) -> list[tuple[str, ...]]:
    """The distinctive names of one place string: 'Parque Nacional Yasuní, Orellana' -> [('yasuni',), ('orellana',)]."""
    names = []
    for part in _BREAK.split(place):
        run: list[str] = []
        for folded, _ in [*_words(part), ("", "")]:  # the sentinel closes the last run
            if folded and folded not in GENERIC and not any(ch.isdigit() for ch in folded):
                run.append(folded)
                continue
            if any(len(w) >= 3 for w in run):
                names.append(tuple(run))
            run = []
    return names


def _caption_words(text: str, record: Record) -> list[tuple[str, str, bool] | None]:
    """The caption as (folded, original, starts a sentence) words, with the species' names replaced by
    None (a break), so 'Carolina Wren(s)' never reads as a place and never neighbours one."""
    words: list[tuple[str, str, bool] | None] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        words += [(f, w, i == 0) for i, (f, w) in enumerate(_words(sentence))]
    for name in (record.species_common, record.species_scientific):
        species = [f for f, _ in _words(name)]
        n = len(species)
        for i in range(len(words) - n + 1):
            got = [w[0] if w else None for w in words[i : i + n]]
            if n and got[:-1] == species[:-1] and got[-1] in (species[-1], species[-1] + "s", species[-1] + "es"):
                words[i : i + n] = [None] * n
    return words


def _capital(word: tuple[str, str, bool] | None) -> bool:
    return word is not None and word[1][:1].isupper()


def place_named(caption: str, record: Record) -> str:
    """The place the caption names, as written in it ('Yasuni', 'Lake Moultrie'), or '' when it names none."""
    words = _caption_words(caption, record)
    for name in {n for place in record.places if place for n in _names(place)}:
        for i in range(len(words) - len(name) + 1):
            span = words[i : i + len(name)]
            if (
                all(w is not None and w[0] == f for w, f in zip(span, name))
                and _capital(span[0])
                and (len(name) > 1 or not span[0][2])
            ):
                return " ".join(w[1] for w in span)
    for i in range(len(words) - 1):
        first, second = words[i], words[i + 1]
        if not (_capital(first) and _capital(second)):
            continue
        if first[0] in PREFIX and second[0] not in FUNCTION | GENERIC:
            return f"{first[1]} {second[1]}"
        if second[0] in SUFFIX and first[0] not in FUNCTION | SUFFIX:
            return f"{first[1]} {second[1]}"
    return ""


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
    place = place_named(text, record)
    if place:
        return f"names a place ({place})"
    return ""
