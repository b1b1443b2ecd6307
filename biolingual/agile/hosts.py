"""Where the review page may listen: loopback names, and the rule that a page reachable from other
machines needs a token. Standard library only, so the command line checks it before anything loads."""

from __future__ import annotations

import ipaddress

from ..errors import UsageError

TOKEN_ENV = "BIOLINGUAL_REVIEW_TOKEN"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the page on this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def refuse_open_bind(host: str, token: str | None) -> None:
    """UsageError when ``host`` reaches beyond this machine and there is no token to guard the page."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"--host {host} makes the page reachable from other machines: give --token T "
            f"(or set {TOKEN_ENV}); every request must then carry it. Leave --host at 127.0.0.1 "
            "to keep the page on this machine"
        )
