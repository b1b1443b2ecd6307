"""A real HTTP server on 127.0.0.1 for the tests that talk to remote archives, an LLM or a weights host.

In: a ``BaseHTTPRequestHandler`` class (or a factory such as ``functools.partial(Handler, directory=...)``).
Out: a running server on a free port, its ``url`` (``http://127.0.0.1:PORT``), and ``close()``, which stops
it and frees the port, so the next request to ``url`` is refused at once.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request still hanging (a timeout test) does not keep the test run alive

    def __init__(self, handler, quiet: bool):
        super().__init__(("127.0.0.1", 0), handler)
        self.quiet = quiet

    def handle_error(self, request, client_address):
        if not self.quiet:  # quiet: clients dropping timed-out connections are expected, not a traceback
            super().handle_error(request, client_address)


class LocalServer:
    """``handler`` served on 127.0.0.1 in a background thread until :meth:`close` (also a context manager)."""

    def __init__(self, handler, quiet: bool = False):
        self._httpd = _Server(handler, quiet)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
