"""A warm interpreter for tests that run many documented commands (``python -m ...``, ``biolingual ...``).

Each command of a docs page is a new interpreter, and importing torch and transformers costs ~5.5 CPU-s of
the ~8 a short command takes; the docs pages were half the suite's time. ``serve`` imports them once, then
forks a child per command, which takes the command's stdin, stdout and stderr (passed over a Unix socket),
its working directory, environment and arguments, and runs it as ``python`` would: ``-c CODE``, ``-m MODULE``,
a script, or one of our console scripts (its entry point). ``shims`` writes ``python``, ``python3``,
``biolingual`` and ``biolingual-eval`` executables that send their command to the server and exit with the
child's status; anything else (other interpreter options, a script on stdin, no server) runs the real
interpreter. The command's own code, arguments and files are the user's; only the imports are shared.

Stdlib only at module level: a shim imports this file with ``python -IS`` in ~20 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
from pathlib import Path

SOCKET_ENV = "BIOLINGUAL_WARM_PYTHON_SOCKET"
# imported once by the server: what every command would import first (torch, transformers' CLAP, our CLI)
PRELOAD = ("numpy", "torch", "transformers", "biolingual.cli", "biolingual.model", "biolingual.loading")
CONSOLE_SCRIPTS = ("biolingual", "biolingual-eval")


def _send_msg(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    header = struct.pack("!I", len(payload))
    if fds:
        socket.send_fds(sock, [header], fds)
        sock.sendall(payload)
    else:
        sock.sendall(header + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


# --- the shim's side -------------------------------------------------------------------------------------------


def _plan(name: str, args: list[str]) -> dict | None:
    """What the command asks for, or None where only the real interpreter will do."""
    if name in CONSOLE_SCRIPTS:
        return {"kind": "entry", "name": name, "args": args}
    if not args:
        return None
    if args[0] == "-c" and len(args) >= 2:
        return {"kind": "code", "code": args[1], "args": args[2:]}
    if args[0] == "-m" and len(args) >= 2:
        return {"kind": "module", "module": args[1], "args": args[2:]}
    if not args[0].startswith("-"):
        return {"kind": "script", "path": args[0], "args": args[1:]}
    return None


def client(name: str, real_python: str, args: list[str]) -> None:
    plan = _plan(name, args)
    path = os.environ.get(SOCKET_ENV)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if plan is None or not path:
            raise ConnectionError("not served")
        sock.connect(path)
    except OSError:
        if name in CONSOLE_SCRIPTS:  # the installed script, beside the real interpreter
            script = os.path.join(os.path.dirname(real_python), name)
            os.execv(script, [script, *args])
        os.execv(real_python, [real_python, *args])
    plan.update(cwd=os.getcwd(), env=dict(os.environ))
    _send_msg(sock, json.dumps(plan).encode(), [0, 1, 2])
    status = struct.unpack("!i", _recv_exact(sock, 4))[0]
    sys.exit(status)


def write_shims(directory: Path, real_python: str) -> Path:
    """``python``, ``python3`` and our console scripts in ``directory``, each a client of the server."""
    directory.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    for name in ("python", "python3", *CONSOLE_SCRIPTS):
        shim = directory / name
        shim.write_text(
            f"#!{real_python} -IS\n"  # one argument: the kernel passes the rest of the line as one
            "import sys\n"
            f"sys.path.insert(0, {str(here)!r})\n"
            "import warm_python\n"
            f"warm_python.client({name!r}, {real_python!r}, sys.argv[1:])\n"
        )
        shim.chmod(0o755)
    return directory


# --- the server's side -----------------------------------------------------------------------------------------


def _run_child(plan: dict) -> int:
    """In the forked child: become the command, run it, return its exit status."""
    import atexit
    import io
    import runpy
    import traceback
    import types

    os.chdir(plan["cwd"])
    os.environ.clear()
    os.environ.update(plan["env"])
    # the server's text streams wrap its own descriptors' buffering; the command's are new
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    status = 0
    try:
        kind = plan["kind"]
        if kind == "code":
            sys.argv = ["-c", *plan["args"]]
            sys.path[0] = ""
            main = types.ModuleType("__main__")
            main.__dict__["__builtins__"] = __builtins__
            sys.modules["__main__"] = main
            exec(compile(plan["code"], "<string>", "exec"), main.__dict__)
        elif kind == "module":
            sys.argv = [plan["module"], *plan["args"]]
            sys.path[0] = os.getcwd()
            runpy.run_module(plan["module"], run_name="__main__", alter_sys=True)
        elif kind == "script":
            sys.argv = [plan["path"], *plan["args"]]
            sys.path[0] = str(Path(plan["path"]).resolve().parent)
            runpy.run_path(plan["path"], run_name="__main__")
        else:
            from importlib.metadata import entry_points

            sys.argv = [plan["name"], *plan["args"]]
            sys.path[0] = os.path.dirname(sys.executable)  # a console script's own folder, as when installed
            (ep,) = entry_points(group="console_scripts", name=plan["name"])
            sys.exit(ep.load()())
    except SystemExit as e:
        if e.code is None:
            status = 0
        elif isinstance(e.code, int):
            status = e.code
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        status = 130
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        atexit._run_exitfuncs()  # what an interpreter's exit does: logging.shutdown, temporary folders, ...
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    return status


def _serve_one(server: socket.socket, conn: socket.socket) -> None:
    import threading

    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    (size,) = struct.unpack("!I", header)
    plan = json.loads(_recv_exact(conn, size))
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            conn.close()
            server.close()
            status = _run_child(plan)
        finally:
            os._exit(status & 0xFF if status >= 0 else 1)
    for fd in fds:
        os.close(fd)

    def wait() -> None:
        _, raw = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(raw)
        try:
            conn.sendall(struct.pack("!i", status if status >= 0 else 128 - status))
        finally:
            conn.close()

    threading.Thread(target=wait, daemon=True).start()


@contextlib.contextmanager
def started(directory: Path, env: dict | None = None):
    """A server in ``directory`` (its socket and shims): yields the environment that sends commands to it.
    Stopped on exit with every command it forked (its own process group)."""
    import signal
    import subprocess

    env = {**os.environ, **(env or {})}
    sock = str(directory / "s")
    server = subprocess.Popen(
        [sys.executable, __file__, sock],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,  # what is read at import (HF_HUB_OFFLINE, OMP_NUM_THREADS) is read here
        text=True,
        start_new_session=True,
    )
    try:
        if server.stdout.readline().strip() != "ready":  # waits for the line, not for a time
            raise RuntimeError(f"the warm interpreter did not start (exit status {server.wait()})")
        bin_dir = write_shims(directory / "bin", sys.executable)
        yield {
            **env,
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]),
            SOCKET_ENV: sock,
        }
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def serve(path: str) -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)  # the fixture waits for this line, not for a time
    while True:
        conn, _ = server.accept()
        _serve_one(server, conn)


if __name__ == "__main__":
    serve(sys.argv[1])
