"""`device="cuda"` / `--device cuda` where torch has no CUDA GPU: one clear message, before anything loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

import biolingual
from biolingual.cli import main
from biolingual.loading import DeviceError, resolve_device

NO_GPU = f"was asked for, but this machine has no CUDA GPU torch can use (torch {torch.__version__}, "


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as torch sees it without a usable GPU, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_load_refuses_cuda_without_a_gpu(saved_model, no_cuda, device):
    with pytest.raises(DeviceError) as info:
        biolingual.load(saved_model, device=device)
    message = str(info.value)
    assert message.startswith(f"device '{device}' {NO_GPU}")
    assert message.endswith("use --device cpu (device='cpu' in Python)")
    assert ("CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build") in message
    assert isinstance(info.value, ValueError)


def test_create_refuses_cuda_without_a_gpu(no_cuda):
    with pytest.raises(DeviceError, match=re.escape(NO_GPU)):
        biolingual.create("tiny", tokenizer_texts=["an owl"], device="cuda")


def test_a_cuda_index_past_the_last_gpu_is_refused(saved_model, one_gpu):
    with pytest.raises(DeviceError, match=r"^device 'cuda:1' was asked for, but torch sees 1 CUDA GPU \(cuda:0\); "):
        biolingual.load(saved_model, device="cuda:1")


def test_an_unknown_device_name_is_refused():
    with pytest.raises(DeviceError, match="^unknown device 'gpu': use cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_cpu_and_default_devices_still_resolve(no_cuda, saved_model):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert biolingual.load(saved_model, device="cpu").device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_loads_on_a_gpu_and_a_missing_index_is_refused(saved_model):
    assert biolingual.load(saved_model, device="cuda").device.type == "cuda"
    count = torch.cuda.device_count()
    with pytest.raises(DeviceError, match=f"torch sees {count} CUDA GPU"):
        biolingual.load(saved_model, device=f"cuda:{count}")


# ---- through the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_folder(saved_model, clips, tmp_path_factory):
    folder = tmp_path_factory.mktemp("index") / "idx"
    assert (
        main(
            [
                "index",
                str(clips["peeper_short.wav"]),
                "--out",
                str(folder),
                "--model",
                str(saved_model),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return folder


@pytest.mark.parametrize("command", ["predict", "embed", "index", "search", "detect"])
def test_cli_device_cuda_without_a_gpu_is_an_error_line(
    command, saved_model, clips, index_folder, tmp_path, no_cuda, capsys
):
    clip = str(clips["peeper_short.wav"])
    argv = {
        "predict": ["predict", clip, "--labels", "Spring Peeper", "owl"],
        "embed": ["embed", clip, "--out", str(tmp_path / "e.npy")],
        "index": ["index", clip, "--out", str(tmp_path / "new_index")],
        "search": ["search", str(index_folder), "a frog"],
        "detect": ["detect", str(index_folder), "--labels", "Spring Peeper", "owl"],
    }[command]
    capsys.readouterr()
    code = main([*argv, "--model", str(saved_model), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith(f"error: device 'cuda' {NO_GPU}"), err


def test_cli_subprocess_device_cuda_without_a_gpu_has_no_traceback(saved_model, clips):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "biolingual.cli",
        "predict",
        str(clips["peeper_short.wav"]),
        "--labels",
        "owl",
        "--model",
        str(saved_model),
        "--device",
        "cuda",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: device 'cuda' {NO_GPU}" in result.stderr


# ---- launched processes: which GPU, and a launcher that started fewer than asked -----------------------


def test_rank_device_maps_ranks_onto_the_gpus_there_are():
    from biolingual.device import rank_device

    assert [str(rank_device(r, 8)) for r in (0, 7, 8, 15)] == ["cuda:0", "cuda:7", "cuda:0", "cuda:7"]
    assert [rank_device(r, 2).index for r in range(5)] == [0, 1, 0, 1, 0]
    assert rank_device(3, 0) == torch.device("cpu")


# what `accelerate launch --cpu --num_processes 2` exports to its one process (accelerate 1.16, simple launcher)
SIMPLE_LAUNCHER_ENV = {
    "ACCELERATE_USE_CPU": "True",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
    "ACCELERATE_MIXED_PRECISION": "no",
    "ACCELERATE_DYNAMO_BACKEND": "NO",
    "OMP_NUM_THREADS": "1",
}


def test_check_launch_size_refuses_the_simple_launcher_asked_for_several():
    from biolingual.device import check_launch_size
    from biolingual.errors import LaunchError

    with pytest.raises(LaunchError) as info:
        check_launch_size("-m biolingual index rec/ --out idx/", SIMPLE_LAUNCHER_ENV)
    assert isinstance(info.value, ValueError)
    assert str(info.value).endswith(
        "`ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N -m biolingual index rec/ --out idx/`"
    )
    # one process asked for (no MASTER_ADDR), torchrun/elastic (WORLD_SIZE), MPI, or no launcher at all: fine
    one = {k: v for k, v in SIMPLE_LAUNCHER_ENV.items() if not k.startswith("MASTER")}
    assert check_launch_size("x", one) == 1
    assert check_launch_size("x", {**SIMPLE_LAUNCHER_ENV, "WORLD_SIZE": "2", "RANK": "1"}) == 2
    assert check_launch_size("x", {**SIMPLE_LAUNCHER_ENV, "OMPI_COMM_WORLD_SIZE": "2"}) == 1
    assert check_launch_size("x", {}) == 1
    assert check_launch_size("x", {"WORLD_SIZE": "4"}) == 4
