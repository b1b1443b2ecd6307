"""Stable-hash split assignment and work partitions (the same on every machine and every run)."""

from __future__ import annotations

import hashlib


def unit_hash(*parts) -> float:
    """A number in [0, 1) from the parts; stable across processes (Python's hash() is salted)."""
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def mix_order(key: str) -> float:
    """Where ``key`` (a record's uid or a sample key) comes in the build's processing and shard order: a stable
    hash, so sources and species are mixed in every shard and every run (and resume) uses the same order."""
    return unit_hash("mix", key)


def assign_split(uid: str, species: str, valid: float, test: float, unseen_species: float, seed: int = 0) -> str:
    """``unseen`` for every record of a held-out species; otherwise train/valid/test by the record's uid.

    Chunks of one recording share its uid, so they never straddle splits.
    """
    if species and unit_hash(seed, "species", species) < unseen_species:
        return "unseen"
    u = unit_hash(seed, "record", uid)
    if u < valid:
        return "valid"
    if u < valid + test:
        return "test"
    return "train"


def parse_partition(text: str | None) -> tuple[int, int]:
    """``"3/16"`` -> (3, 16): this machine does part 3 of 16 (1-based). None -> (1, 1)."""
    if not text:
        return 1, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--partition must look like I/N (e.g. 3/16), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--partition {text}: I must be between 1 and N (parts are numbered from 1)")
    return i, n


def in_partition(dedup_key: str, part: int, parts: int) -> bool:
    return int(unit_hash("partition", dedup_key) * parts) == part - 1
