"""What a GPU user watches while training: model FLOPs per sample, the device's peak, MFU and GPU memory.

MFU (model FLOPs utilisation) = achieved model FLOP/s / the device's dense peak FLOP/s for the dtype the
matrix products run in. Model FLOPs are counted, not estimated: :func:`forward_flops` runs one forward pass
of batch 1 under ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions, attention),
once per (architecture, clip length, caption length), and training counts 3x the towers' forward (the
backward pass costs about twice the forward), plus the log-mel front end once (it has no gradient).

For the ``base`` preset (HTS-AT-tiny + RoBERTa-base) and a 10 s clip with a 30-token caption: audio tower
11.82 GFLOP, text tower 5.13 GFLOP, front end 0.04 GFLOP, so 50.9 GFLOP per training sample (the figure
in the GPU notes). ``tiny``: 0.29 GFLOP per sample, of which the front end is 0.04. HTS-AT resizes every input to its
fixed ``spec_size`` image, so the audio tower costs the same for any clip up to one window; only the front end
grows with the clip. The contrastive loss (a B x B product of 512-d embeddings: 2 x 512 x B FLOP per
sample, 0.17 MFLOP at batch 170) is left out.

The peak table holds datasheet dense figures (no 2:4 sparsity) for the GPUs named there; a GPU not in it
gets None and no MFU is reported (never guessed). A CPU gets None too.
"""

from __future__ import annotations

import functools
import json
import re

import torch

# FLOPs of one training step per sample, in units of the forward pass: forward + backward (~2x forward).
TRAIN_FLOPS_FACTOR = 3

GIB = 2**30

# Dense peak FLOP/s by matmul precision, from the vendors' datasheets (sparsity figures halved).
# Matched against torch.cuda.get_device_name in this order: the first pattern found wins, so more specific
# names (H100 NVL, H100 PCIe, L40S, A100) come before the names they contain (H100, L4, A10).
_PEAKS: list[tuple[str, dict[str, float]]] = [
    (r"H100.*NVL|H200.*NVL", {"bf16": 835e12, "fp16": 835e12, "tf32": 417.5e12, "fp32": 60e12}),
    (r"H100.*PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    # H100 SXM ("NVIDIA H100 80GB HBM3"), H200 SXM and GH200 share the SXM5 compute figures
    (r"H100|H200|GH200", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    (r"A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    (r"L40S", {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183.2e12, "fp32": 91.6e12}),
    (r"L40\b", {"bf16": 181.05e12, "fp16": 181.05e12, "tf32": 90.5e12, "fp32": 90.5e12}),
    (r"L4\b", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    (r"A10\b", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
]

_PRECISION_NAMES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "tf32": "tf32",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
}


def _sizes(model) -> tuple[str, str]:
    """(CLAP config JSON, front-end config JSON) of a BioLingual model: what its FLOPs depend on."""
    return model.clap.config.to_json_string(use_diff=False), json.dumps(
        model.front_end.config.to_dict(), sort_keys=True
    )


def forward_flops(model, clip_samples: int, text_tokens: int, batch: int = 1) -> dict[str, int]:
    """FLOPs of one forward pass of ``batch`` clips of ``clip_samples`` samples (at the model's rate) and
    ``batch`` captions padded to ``text_tokens`` tokens: {"front_end", "audio", "text"}.

    ``model`` is a :class:`~biolingual.BioLingual` (wrapped, compiled or sharded ones: pass the unwrapped
    module); only its configs are read, so it is never run and may be on any device. The count runs on a
    copy made from the configs: the audio tower on the meta device, the text tower (whose padding checks
    read values) on the CPU with uninitialised weights, the front end on the CPU. Cached per (configs,
    clip_samples, text_tokens, batch); the first count of the ``base`` text tower takes about a second."""
    config, front_end = _sizes(model)
    fe, audio = _audio_count(config, front_end, int(clip_samples), int(batch))
    return {"front_end": fe, "audio": audio, "text": _text_count(config, int(text_tokens), int(batch))}


def flops_per_sample(model, clip_samples: int, text_tokens: int) -> float:
    """Model FLOPs of one training sample: ``TRAIN_FLOPS_FACTOR`` (3) x the audio and text towers' forward
    (forward + backward) plus the front end's forward (no gradient), for a clip of ``clip_samples`` samples
    and a caption padded to ``text_tokens`` tokens. ``base``, 10 s, 30 tokens: 50.9e9."""
    f = forward_flops(model, clip_samples, text_tokens)
    return float(TRAIN_FLOPS_FACTOR * (f["audio"] + f["text"]) + f["front_end"])


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# Two caches: captions change length from batch to batch, clips do not, so a new caption length recounts
# only the text tower (~0.1 s for base once its copy is built).
@functools.lru_cache(maxsize=64)
def _audio_count(config_json: str, front_end_json: str, clip_samples: int, batch: int) -> tuple[int, int]:
    """(front end, audio tower) forward FLOPs."""
    from ..features import FrontEndConfig, LogMelFrontEnd

    front_end = LogMelFrontEnd(FrontEndConfig(**json.loads(front_end_json)))
    audio_tower = _towers(config_json)[0]
    features = []
    fe = _flops(lambda: features.append(front_end(torch.zeros(batch, clip_samples))))
    meta_features = torch.empty(features[0].shape, device="meta")
    kwargs = {}
    if audio_tower.config.audio_config.enable_fusion:
        kwargs["is_longer"] = torch.zeros(batch, 1, dtype=torch.bool, device="meta")
    return fe, _flops(lambda: audio_tower.get_audio_features(input_features=meta_features, **kwargs))


@functools.lru_cache(maxsize=512)
def _text_count(config_json: str, text_tokens: int, batch: int) -> int:
    """Text tower forward FLOPs."""
    text_tower = _towers(config_json)[1]
    # a token id that is neither padding nor a special token, so no padding path is taken
    ids = torch.full((batch, text_tokens), 5, dtype=torch.long)
    return _flops(lambda: text_tower.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids)))


@functools.lru_cache(maxsize=1)
def _towers(config_json: str):
    """A ``ClapModel`` of the config on the meta device (audio) and one on the CPU with its weights left
    zeroed (text: its padding checks read input values, which meta tensors do not have). Values do not
    change FLOPs. Only the last config's copies are kept (the base text tower is ~500 MB)."""
    from transformers import ClapConfig, ClapModel
    from transformers.initialization import no_init_weights

    config = ClapConfig.from_dict(json.loads(config_json))
    with torch.device("meta"):
        meta = ClapModel(config)
    with no_init_weights():
        cpu = ClapModel(config)
    with torch.no_grad():
        for p in cpu.parameters():
            p.zero_()  # uninitialised memory can hold denormals, which slow CPU matmuls several-fold
    return meta.eval(), cpu.eval()


def matmul_precision(mixed_precision: str = "no") -> str:
    """The precision the matrix products run in, for a peak lookup: "bf16"/"fp16" under that mixed precision
    (accelerate's names, or dtype names), else "tf32" when CUDA's float32 matmuls may use TF32
    (``torch.backends.cuda.matmul.allow_tf32``), else "fp32"."""
    name = _PRECISION_NAMES.get(str(mixed_precision).lower().removeprefix("torch."))
    if name in ("bf16", "fp16"):
        return name
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def peak_flops(device: torch.device | str | None, precision: str) -> float | None:
    """The dense peak FLOP/s of ``device`` for matrix products in ``precision`` (bf16, fp16, tf32, fp32, or
    bfloat16/float16/float32), from a datasheet table keyed on ``torch.cuda.get_device_name`` (H100 SXM,
    PCIe and NVL, H200, GH200, A100, L40S, L40, L4, A10). None for a CPU, a GPU not in the table or an
    unknown precision: then MFU is not reported. ``device`` may also be a GPU's name as a string
    ("NVIDIA H100 80GB HBM3"), for lookups without the GPU."""
    name = _device_name(device)
    key = _PRECISION_NAMES.get(str(precision).lower().removeprefix("torch."))
    if name is None or key is None:
        return None
    for pattern, peaks in _PEAKS:
        if re.search(pattern, name):
            return peaks.get(key)
    return None


def _device_name(device) -> str | None:
    """The GPU's name for ``device``; None for a CPU (or another non-CUDA device)."""
    if isinstance(device, str) and not re.fullmatch(r"(cuda|cpu|mps|meta|xpu)(:\d+)?", device):
        return device  # already a device name
    if device is None:
        if not torch.cuda.is_available():
            return None
        device = torch.device("cuda")
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(device)


def mfu(samples_per_s: float, flops_per_sample: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, a fraction (0.3 = 30%): ``samples_per_s`` x ``flops_per_sample`` / ``peak``;
    None when the peak is unknown (None or not positive)."""
    if peak is None or peak <= 0:
        return None
    return samples_per_s * flops_per_sample / peak


def gpu_memory(device: torch.device | str | None = None, reset: bool = False) -> dict[str, float] | None:
    """Peak GPU memory of this process on ``device`` (default: the current CUDA device) since the last reset:
    {"allocated_gib": tensors, "reserved_gib": held by torch's caching allocator}; None on a CPU or without
    CUDA. ``reset`` starts a new peak after reading (e.g. one per logging window)."""
    if device is not None and torch.device(device).type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    out = {
        "allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
    }
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return out
