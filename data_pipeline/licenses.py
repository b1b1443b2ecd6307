"""Licence strings of the archives -> one short code (cc0, cc-by, cc-by-nc-sa, ...), and the filter."""

from __future__ import annotations

import re

KNOWN = {"cc0", "pd", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa", "cc-by-nd", "cc-by-nc-nd"}


def normalize_license(value) -> str | None:
    """``//creativecommons.org/licenses/by-nc-sa/4.0/``, ``cc-by-nc``, ``CC_BY_NC_4_0``, ``CC0`` -> a code;
    None if unusable."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().lower()
    if "publicdomain/zero" in text or re.fullmatch(r"cc[-_ ]?0(\s*1\.0)?|cc[-_ ]?zero", text):
        return "cc0"
    if "publicdomain/mark" in text or text in {"pd", "public domain", "publicdomain"}:
        return "pd"
    m = re.search(r"licenses/([a-z-]+)/", text + "/")
    if m:
        parts = m.group(1).split("-")
    else:
        m = re.fullmatch(r"(?:cc[-_ ]?)((?:by|nc|sa|nd)(?:[-_ ](?:by|nc|sa|nd))*)(?:[-_ ]?\d.*)?", text)
        if not m:
            return None
        parts = re.split(r"[-_ ]", m.group(1))
    code = "cc-" + "-".join(parts)
    return code if code in KNOWN else None


def allowed(license_code: str | None, accepted: list[str]) -> bool:
    return license_code is not None and license_code in accepted
