"""The warm interpreter the docs test runs its commands in (tests/warm_python.py) behaves as ``python``
and our console scripts do: a command's exit status (including a failure and a signal), arguments, working
directory, environment and streams are its own, so a failing documented command fails the docs test."""

import subprocess

import pytest

from tests import warm_python


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with warm_python.started(tmp_path_factory.mktemp("warm"), {"HF_HUB_OFFLINE": "1"}) as env:
        yield env


def sh(command: str, env: dict, cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, input=stdin, capture_output=True, text=True
    )


def test_status_arguments_and_the_warm_imports(env, tmp_path):
    r = sh("""python -c 'import sys; print(sys.argv, "torch" in sys.modules); sys.exit(3)' a 'b c'""", env, tmp_path)
    assert r.returncode == 3
    assert r.stdout.strip() == "['-c', 'a', 'b c'] True"  # torch was imported by the server, not the command


def test_failures_reach_the_caller(env, tmp_path):
    r = sh("python -c 'raise ValueError(\"bad record 7\")'", env, tmp_path)
    assert r.returncode == 1 and "ValueError: bad record 7" in r.stderr
    r = sh("python -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'", env, tmp_path)
    assert r.returncode == 137
    r = sh("python -c 'import sys; sys.exit(\"no such file\")'", env, tmp_path)
    assert r.returncode == 1 and "no such file" in r.stderr


def test_module_script_cwd_environment_and_streams(env, tmp_path):
    (tmp_path / "mod.py").write_text("import os, sys\nprint(os.environ['COLOUR'], sys.argv[1:], os.getcwd())\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "script.py").write_text("import sys\nsys.stdout.write(sys.stdin.read().upper())\n")
    r = sh("COLOUR=green python -m mod x", env, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"green ['x'] {tmp_path}"
    r = sh("python sub/script.py | tr O 0 > out.txt; cat out.txt", env, tmp_path, stdin="hello owl\n")
    assert r.returncode == 0 and r.stdout == "HELL0 0WL\n"
    r = sh("echo 'print(1 + 1)' | python -", env, tmp_path)  # not served: the real interpreter runs it
    assert r.returncode == 0 and r.stdout == "2\n"


def test_console_script(env, tmp_path):
    r = sh("biolingual --help | head -1", env, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: biolingual")
    r = sh("biolingual embed owl.wav --out e.npy --model ./no_such_model", env, tmp_path)
    assert r.returncode == 1 and "no_such_model" in r.stderr and "Traceback" not in r.stderr
