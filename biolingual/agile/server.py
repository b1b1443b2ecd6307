"""Serving the review page: the app on uvicorn (:class:`ReviewServer`) and ``biolingual review``'s :func:`serve`."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from urllib.parse import quote

from ..extras import require
from .app import MAX_UPLOAD_BYTES, PURPOSE, create_app
from .guard import TOKEN_HEADER
from .hosts import LOOPBACK_NAMES, refuse_open_bind
from .session import AgileSession


class ReviewServer:
    """An app served by uvicorn on ``host``:``port`` (0: a free port, read back from the bound socket).

    ``start()`` serves in a background thread and returns once the socket listens; ``run()`` serves in
    the foreground until Ctrl-C; ``stop()`` ends a started server."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8765):
        uvicorn = require("uvicorn", "agile", PURPOSE)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host.strip("[]"), port))
            self.socket.listen(2048)  # from here on connections queue until uvicorn accepts them
        except OSError as e:
            self.socket.close()
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self.host = host
        self.port = self.socket.getsockname()[1]
        # log_config=None: uvicorn's own dictConfig would close every logging handler of the process (the
        # caller's; absl's, which then closes the stream it was given, e.g. a notebook's or pytest's stderr)
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> ReviewServer:
        self._thread = threading.Thread(target=self.run, name="biolingual-review", daemon=True)
        self._thread.start()
        while not self.server.started:  # uvicorn sets it once the socket is served
            if not self._thread.is_alive():
                raise RuntimeError("the review server stopped while starting")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.socket.close()

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(
    index_dir,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    model=None,
    device=None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    check: bool = False,
) -> int:
    """Open ``index_dir`` in an :class:`~biolingual.agile.session.AgileSession` and serve its review page.

    A bind beyond this machine without a token raises UsageError (the CLI: exit 1) before
    anything is loaded. ``check``: start, answer one /health request, stop (a smoke test that exits).
    Prints the address to open (with ``?token=`` when there is one)."""
    refuse_open_bind(host, token)

    session = AgileSession(index_dir, model=model, device=device)
    app = create_app(
        session,
        token=token,
        allowed_hosts=None if token else LOOPBACK_NAMES + (host,),
        max_upload_bytes=max_upload_bytes,
    )
    server = ReviewServer(app, host, port)
    address = server.url + "/" + (f"?token={quote(token, safe='')}" if token else "")
    if check:
        with server:
            request = urllib.request.Request(server.url + "/health", headers={TOKEN_HEADER: token} if token else {})
            with urllib.request.urlopen(request, timeout=30) as response:
                health = json.load(response)
        print(f"review page answered at {server.url}: {health['windows']} windows", flush=True)
        return 0
    print(f"serving the review page of {index_dir} at {address} (Ctrl-C stops)", flush=True)
    server.run()
    return 0
