"""``biolingual review INDEX``: the review page (:mod:`biolingual.agile.app`) on a local web server (:mod:`.server`).

In: an index folder written by ``biolingual index``, where to listen, an optional token, the model and
device. Out: a server that runs until Ctrl-C (or, with ``--check``, answers one health request and
exits 0). A bind beyond this machine without ``--token`` exits 1 before anything is loaded; a missing
fastapi/uvicorn/python-multipart names the ``agile`` extra.
"""

from __future__ import annotations

import argparse
import os

from ..cli_options import add_device_arg, add_model_arg
from ..errors import UsageError
from ..extras import MissingExtraError, require
from .hosts import TOKEN_ENV, refuse_open_bind


def cmd_review(args) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    refuse_open_bind(args.host, token)  # before anything is loaded
    if not os.path.isfile(os.path.join(args.index, "index.json")):
        raise UsageError(f"'{args.index}' is not an index folder (no index.json): build one with biolingual index")
    for module in ("fastapi", "uvicorn"):  # the app and its server
        require(module, "agile", "biolingual review")
    try:  # the form that uploads example clips (python-multipart; 'multipart' is its name before 0.0.13)
        require("python_multipart", "agile", "biolingual review")
    except MissingExtraError:
        require("multipart", "agile", "biolingual review")
    from .server import serve  # the agile extra, checked above

    try:
        return serve(
            args.index,
            host=args.host,
            port=args.port,
            token=token,
            model=args.model,
            device=args.device,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            check=args.check,
        )
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise UsageError(str(e)) from e
    except KeyboardInterrupt:
        return 0


def add_review_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("review", help="label windows of an index in the browser (agile modelling)")
    p.add_argument("index", help="an index folder written by `biolingual index`")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; any other needs --token)",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--token",
        default=None,
        help=f"a secret every request must carry (default: ${TOKEN_ENV}); required beyond 127.0.0.1",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest example clip to accept (default 20 MB)")
    p.add_argument("--check", action="store_true", help="start, answer one health request, and exit (a smoke test)")
    add_model_arg(p, "the model to embed prompts and examples with (default: the index's own model)")
    add_device_arg(p)
    p.set_defaults(func=cmd_review)
