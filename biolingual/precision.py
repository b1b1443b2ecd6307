"""The numeric precision a model computes embeddings in: its names, what ``auto`` picks, and running a model at one.

In: a precision name (``auto``, ``float32``, ``bfloat16``, ``int8``, and ``float16`` on CUDA) or a
``torch.dtype``, the device the model is on and, for ``auto`` on a CPU, the processor's feature flags
(read from /proc/cpuinfo, or given). Out: the resolved name (:func:`resolve_precision`), a
:class:`PrecisionError` naming what this processor or device cannot do, and the context
(:func:`precision_context`) every embedding call of :class:`~biolingual.BioLingual` runs in.

How each precision runs, and why (measured on a 2-core AMD EPYC with ``avx512_bf16`` and
``avx512_vnni``, no AMX; torch 2.13 CPU; the ``base`` audio tower, batches of 4 and 16 windows, on a
machine shared with other work; ``benchmarks/bench_inference_precision.py`` measures indexing at each
precision, its accuracy and the matmul peaks for docs/performance.md):

- ``bfloat16``: on a CPU, a copy of the weights in bfloat16, run under ``torch.autocast`` (which keeps
  the ops it lists as float32 there). Measured on the base audio tower, batch 4, interleaved, windows/s:
  float32 9.6, autocast over the float32 weights 15.9, the bfloat16 copy 18.6 (18.5 with autocast on
  top), minimum cosine to float32 0.99997 for each; autocast alone casts every weight on every call.
  (An earlier measurement, 1.06x for bfloat16 weights, did not hold here.) The copy is built once per
  model and weights (:func:`bfloat16_clap`, like the int8 copy) and the float32 model, whose fingerprint
  is what an index and the caches know the model by, is left as it is. On a GPU: autocast.
- ``int8``: torch's dynamic quantization of every ``nn.Linear`` of the audio and text towers and
  the projections (``torch.ao.quantization.quantize_dynamic``: int8 weights per output channel,
  activations quantized per batch, fbgemm/x86 VNNI kernels). 1.2-2.0x the float32 speed of the base audio
  tower (2.0x at the default batch of 4 on a quiet machine), minimum cosine 0.9994. ONNX Runtime was measured
  against it (the base tower exported with ``torch.onnx.export``, interleaved runs, batch 4, windows/s): torch
  float32 11.3, ORT float32 11.0, ORT dynamic int8 20.0, ORT static int8 (QDQ, per channel) 16.9, torch
  bfloat16 20.2, torch int8 22.8; no faster, so no exported graph per model and no new dependency.
  ``torch.ao.quantization`` is deprecated in favour of torchao, but it is still in torch 2.13 and works;
  torchao is not a dependency of this library and is not installed here, so it was not measured. The convolutions and
  attention matmuls stay float32 (dynamic
  quantization covers linear layers only), and bfloat16 autocast cannot be combined with it (the
  quantized linear op takes float32 only). The quantized copy is built once per model and weights
  (:func:`int8_clap`) and kept beside the float32 model, whose fingerprint is what an index and the
  caches know the model by.
- ``float16``: autocast, on CUDA only (on a CPU torch emulates it slowly).

``auto``: on CUDA, bfloat16 where the GPU supports it, else float16; on a CPU, bfloat16 where the
processor has native bfloat16 dot-product or matrix units (``avx512_bf16`` or ``amx_bf16`` in its
flags: on this EPYC bfloat16 was the fastest precision, ahead of int8), else float32 (without them
torch emulates bfloat16 and it is slower than float32). ``bfloat16`` asked for on a CPU without them
still runs (emulated), with a warning that it will be slow.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import warnings
import weakref
from pathlib import Path

import torch

from .errors import DeviceError
from .vocabulary import PRECISIONS  # the one list of precision names

# Flags of processors with native bfloat16 dot products (AVX512-BF16) or matrix tiles (AMX-BF16).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_BY_DTYPE = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.qint8: "int8",
    torch.int8: "int8",
}
_AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}

log = logging.getLogger(__name__)
_warned: list[str] = []


class PrecisionError(DeviceError):
    """A precision this processor or device cannot run, or a name that is no precision."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The processor's feature flags (``avx512_bf16``, ``amx_int8`` ...) from the ``flags`` line of
    /proc/cpuinfo, or of ``cpuinfo`` when given (its text). Empty where there is no such file (macOS,
    Windows): ``auto`` then chooses float32 on a CPU."""
    if cpuinfo is None:
        return _host_flags()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def _host_flags() -> frozenset[str]:
    """This machine's flags, read once (every embedding call resolves its precision)."""
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def name_of(dtype) -> str:
    """A precision name or a torch dtype as one of :data:`PRECISIONS`; None is float32. Anything else is
    a :class:`PrecisionError` listing the names."""
    if dtype is None:
        return "float32"
    if isinstance(dtype, torch.dtype):
        if dtype in _BY_DTYPE:
            return _BY_DTYPE[dtype]
    elif isinstance(dtype, str) and dtype.lower() in PRECISIONS + ("fp32", "bf16", "fp16"):
        return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype.lower(), dtype.lower())
    raise PrecisionError(f"unknown precision {dtype!r}: use one of {', '.join(PRECISIONS)}")


def resolve_precision(
    dtype, device, flags: frozenset[str] | set[str] | None = None, cuda_bf16: bool | None = None
) -> str:
    """The precision (float32, bfloat16, float16 or int8) that ``dtype`` (a name of :data:`PRECISIONS`, a
    torch dtype or None) means on ``device``, checked against it.

    ``auto`` chooses by the hardware (see the module docstring): ``flags`` are the CPU's feature flags
    (default: :func:`cpu_flags`), ``cuda_bf16`` whether the GPU runs bfloat16 (default: torch's
    answer). Raises :class:`PrecisionError` for float16 on a CPU and int8 on anything but a CPU (or a
    CPU whose torch build has no quantized engine)."""
    device = torch.device(device)
    name = name_of(dtype)
    if name == "auto":
        if device.type == "cuda":
            supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
            return "bfloat16" if supported else "float16"
        if device.type == "cpu":
            return "bfloat16" if BF16_FLAGS & set(cpu_flags() if flags is None else flags) else "float32"
        return "float32"
    if name == "float16" and device.type == "cpu":
        raise PrecisionError(
            "float16 inference needs a GPU; on CPU use bfloat16 (fast where the processor has "
            "avx512_bf16 or amx_bf16), int8 or float32, or auto to let the processor decide"
        )
    if name == "int8":
        if device.type != "cpu":
            raise PrecisionError(
                f"int8 runs on the CPU only (torch's dynamic quantization), not on {device}; "
                "use bfloat16 or float16 there, or auto"
            )
        if not any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm", "qnnpack", "onednn")):
            raise PrecisionError(
                f"int8 needs a quantized engine, and this torch build ({torch.__version__}) has none; "
                "use bfloat16 or float32"
            )
    if name == "bfloat16" and device.type == "cpu" and flags is None and not BF16_FLAGS & cpu_flags() and not _warned:
        _warned.append("bfloat16")  # once per process, not on every call
        log.warning(
            "this processor has no native bfloat16 units (no avx512_bf16 or amx_bf16 flag): bfloat16 is "
            "emulated and slower than float32; --dtype auto picks float32 here"
        )
    return name


def describe_choice(asked, device, resolved: str) -> str:
    """One line saying what precision a command runs at, and why where ``auto`` chose it."""
    if name_of(asked) != "auto":
        return f"precision: {resolved}"
    if torch.device(device).type == "cpu":
        why = (
            "the processor has native bfloat16 units (" + ", ".join(sorted(BF16_FLAGS & cpu_flags())) + ")"
            if resolved == "bfloat16"
            else "the processor has no native bfloat16 units"
        )
    else:
        why = f"on {device}"
    return f"precision: {resolved} (auto: {why})"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype ``torch.autocast`` runs a resolved precision at (bfloat16, float16), None for the others."""
    return _AUTOCAST.get(precision)


# model -> {precision: (fingerprint, copy)}: kept here, not on the model, and gone with the model
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _copy_for(model, precision: str, build):
    """The model's CLAP as ``build(model.clap)`` makes it for ``precision``, built on first use and kept on the
    model while its weights stay the same (a model trained further gets a new copy)."""
    key = model.fingerprint()
    copies = _COPIES.setdefault(model, {})
    cached = copies.get(precision)
    if cached is not None and cached[0] == key:
        return cached[1]
    copy_ = build(model.clap)
    copies[precision] = (key, copy_)
    return copy_


def int8_clap(model):
    """The model's CLAP with every ``nn.Linear`` dynamically quantized to int8 (CPU), kept on the model."""
    return _copy_for(model, "int8", quantize_linears)


def bfloat16_clap(model):
    """A copy of the model's CLAP with every weight in bfloat16 (CPU), kept on the model; its own weights (and
    so its fingerprint) stay float32."""
    return _copy_for(model, "bfloat16", lambda clap: copy.deepcopy(clap).to(torch.bfloat16).eval())


def quantize_linears(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` (float32, CPU, eval mode) with every ``nn.Linear`` dynamically quantized to int8;
    ``module`` itself is left as it is."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notice (torchao is its successor; see the module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        # one scale per output channel, not per tensor: the same speed (22.1 against 22.5 windows/s, base tower,
        # batch 4), a sixth less error (minimum cosine to float32 0.99946 against 0.99935)
        return quantize_dynamic(
            copy.deepcopy(module).float().cpu().eval(),
            {torch.nn.Linear: per_channel_dynamic_qconfig},
            dtype=torch.qint8,
        )


@contextlib.contextmanager
def precision_context(model, precision: str):
    """Run the model's forward passes at ``precision`` (a resolved name) inside the block: the bfloat16 copy
    (:func:`bfloat16_clap`) under autocast for bfloat16 on a CPU, autocast for bfloat16/float16 on a GPU, the
    int8 copy (:func:`int8_clap`) for int8, nothing for float32. Yields the CLAP model to call; its inputs
    go in at its own dtype (``clap.dtype``)."""
    if precision == "int8":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            yield int8_clap(model)
        return
    dtype = _AUTOCAST.get(precision)
    if dtype is None or dtype == model.dtype:
        yield model.clap
        return
    # on a CPU, bfloat16 runs a bfloat16 copy of the weights (see the module docstring), under autocast too so
    # that the ops autocast keeps in float32 stay there; elsewhere autocast over the model's own weights
    clap = bfloat16_clap(model) if precision == "bfloat16" and model.device.type == "cpu" else model.clap
    with torch.autocast(model.device.type, dtype=dtype):
        yield clap
