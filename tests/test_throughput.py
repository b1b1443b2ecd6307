"""biolingual.training.throughput: FLOPs counted per training sample, the peak table, MFU, GPU memory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from biolingual.features import FrontEndConfig
from biolingual.presets import default_vocab_size, preset_config
from biolingual.training import throughput as tp

TEN_S = 480_000


def _model(preset: str):
    """What the counter reads of a BioLingual model (its configs), without building its weights: the base
    preset's own weights would take seconds to initialise and are never run."""
    return SimpleNamespace(
        clap=SimpleNamespace(config=preset_config(preset, default_vocab_size(preset))),
        front_end=SimpleNamespace(config=FrontEndConfig()),
    )


def test_tiny_flops_are_counted_and_scale_with_batch_clip_and_caption():
    tiny = _model("tiny")
    one = tp.forward_flops(tiny, TEN_S, 30)
    assert all(v > 0 for v in one.values()), one
    two = tp.forward_flops(tiny, TEN_S, 30, batch=2)
    assert two == {k: 2 * v for k, v in one.items()}  # every count is linear in the batch
    # HTS-AT resizes every clip up to one window to its fixed spec_size image: the audio tower costs the same
    # for 5 s as for 10 s, while the front end's mel product follows the clip's frames (501 frames against 1001)
    half = tp.forward_flops(tiny, TEN_S // 2, 30)
    assert half["audio"] == one["audio"]
    assert half["front_end"] == pytest.approx(one["front_end"] * 501 / 1001, rel=1e-6)
    # a shorter caption costs the text tower less and nothing else
    short = tp.forward_flops(tiny, TEN_S, 15)
    assert short["text"] < one["text"] and short["audio"] == one["audio"]


def test_a_training_sample_is_three_forward_passes_of_the_towers_plus_the_front_end_once():
    tiny = _model("tiny")
    f = tp.forward_flops(tiny, TEN_S, 30)
    assert tp.TRAIN_FLOPS_FACTOR == 3
    assert tp.flops_per_sample(tiny, TEN_S, 30) == 3 * (f["audio"] + f["text"]) + f["front_end"]
    assert tp.flops_per_sample(tiny, TEN_S, 30) == pytest.approx(0.287e9, rel=0.01)


def test_base_counts_the_figure_of_the_gpu_notes():
    # 50.9 GFLOP per sample for a 10 s clip and a 30-token caption (audio 11.82, text 5.13 GFLOP forward);
    # counted on a meta/zeroed copy built from the config: a few seconds, no base weights initialised
    base = _model("base")
    f = tp.forward_flops(base, TEN_S, 30)
    assert f["audio"] == pytest.approx(11.82e9, rel=0.01) and f["text"] == pytest.approx(5.13e9, rel=0.01)
    assert tp.flops_per_sample(base, TEN_S, 30) == pytest.approx(50.9e9, rel=0.1)


def test_peaks_are_looked_up_by_the_gpu_name_and_unknown_ones_give_none():
    assert tp.peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert tp.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12  # dtype names too
    assert tp.peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 494.7e12
    assert tp.peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert tp.peak_flops("NVIDIA H100 NVL", "fp32") == 60e12
    assert tp.peak_flops("NVIDIA H200", "fp16") == 989.4e12
    assert tp.peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert tp.peak_flops("NVIDIA L40S", "bf16") == 362.05e12
    assert tp.peak_flops("NVIDIA L4", "bf16") == 121e12  # not L40S's, which contains "L4"
    assert tp.peak_flops("NVIDIA A10", "bf16") == 125e12  # not A100's
    assert tp.peak_flops("NVIDIA GeForce GTX 1080", "fp32") is None  # not in the table: no guess
    assert tp.peak_flops("NVIDIA H100 80GB HBM3", "int4") is None
    assert tp.peak_flops("cpu", "bf16") is None
    assert tp.peak_flops(torch.device("cpu"), "fp32") is None


def test_the_matmul_precision_follows_mixed_precision_and_tf32():
    assert tp.matmul_precision("bf16") == "bf16" and tp.matmul_precision("fp16") == "fp16"
    before = torch.backends.cuda.matmul.allow_tf32  # a torch setting, not an attribute monkeypatch can swap
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert tp.matmul_precision("no") == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = False
        assert tp.matmul_precision("no") == "fp32" and tp.matmul_precision("float32") == "fp32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_mfu_is_achieved_over_peak_flops():
    assert tp.mfu(100.0, 50.9e9, 989.4e12) == pytest.approx(100 * 50.9e9 / 989.4e12)
    assert tp.mfu(100.0, 50.9e9, None) is None
    assert tp.mfu(100.0, 50.9e9, 0.0) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_gpu_memory_is_none_without_cuda():
    assert tp.gpu_memory() is None
    assert tp.gpu_memory("cpu") is None
