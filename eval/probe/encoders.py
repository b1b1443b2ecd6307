"""The encoders a probe can read layers from, behind one interface: transformers speech SSL models
(HuBERT, wav2vec2, WavLM and their fine-tuned variants), AVES (torchaudio-format weights, see ``aves.py``)
and BioLingual (the stage outputs of its HTS-AT audio tower).

An encoder turns one clip into the chunks it is run on (their lengths depend only on the clip, so a clip's
features never depend on which clips share its batch) and a batch of equal-length chunks into the hidden
states of every layer, as [batch, frames, width] tensors.

Every encoder runs at a precision (``--dtype``, :mod:`biolingual.precision`): float32 (the protocol's, the
default), bfloat16 (autocast) or int8 (torch's dynamic quantization of the linear layers, on a copy). Hidden
states always come back as float32.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from biolingual.audio import split_windows
from biolingual.loading import DEFAULT_MODEL, default_device
from biolingual.model import state_digest
from biolingual.precision import autocast_dtype, precision_context, quantize_linears, resolve_precision

from .aves import AVES_MODELS, WEIGHTS_SUFFIX, AvesError, fetch_aves, find_aves_files, load_aves

log = logging.getLogger(__name__)

SHORT_NAMES = {
    "hubert": "facebook/hubert-base-ls960",
    "wav2vec2": "facebook/wav2vec2-base",
    "wav2vec2-100h": "facebook/wav2vec2-base-100h",
    "wav2vec2-960h": "facebook/wav2vec2-base-960h",
    "wavlm": "microsoft/wavlm-base",
    "wavlm-100h": "patrickvonplaten/wavlm-libri-clean-100h-base",
    "biolingual": DEFAULT_MODEL,
    **{name: f"{stem} (Earth Species Project storage)" for name, stem in AVES_MODELS.items()},
}
MIN_SAMPLES = 5000  # the protocol's minimum input: 0.3125 s at 16 kHz
TILE_MULTIPLE_S = 0.0  # 0: a clip runs at its own length, as the paper's batch-1 extraction; > 0: tiled up to
# a multiple of this many seconds so that clips of like length share batches (faster, but repeats audio)
CHUNK_S = 30.0  # longer clips run as chunks of this length; their hidden states are pooled together


class ProbeModelError(ValueError):
    """A --models entry that cannot be resolved or loaded (the message says which and why)."""


def tile_to(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeat a clip end to end (the last copy cut short) until it is ``length`` samples long."""
    return np.resize(samples, length) if len(samples) < length else samples


class LayerEncoder:
    name: str
    source: str
    sampling_rate: int
    layer_names: list[str]
    min_samples: int
    precision: str = "float32"  # what the hidden states are computed at; the feature cache keys on it

    def settings(self) -> dict:
        """Everything besides the weights that changes the features (part of the cache identity)."""
        raise NotImplementedError

    def chunks(self, samples: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def hidden_states(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """[B, T] waveforms -> one [B, frames, width] tensor per layer."""
        raise NotImplementedError

    @property
    def identity(self) -> str:
        if getattr(self, "_identity", None) is None:
            self._identity = state_digest(self.module, {"kind": type(self).__name__, **self.settings()})
        return self._identity

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)


class SpeechEncoder(LayerEncoder):
    """A transformers model that takes raw waveforms (``input_values``) and returns ``hidden_states``."""

    def __init__(
        self,
        model,
        name: str,
        source: str,
        sampling_rate: int = 16000,
        normalize: bool = False,
        device=None,
        chunk_s: float = CHUNK_S,
        tile_multiple_s: float = TILE_MULTIPLE_S,
        dtype=None,
    ):
        self.module = model.eval().to(device or default_device())
        self.precision = resolve_precision(dtype, self.module.device)
        # int8 runs a quantized copy; the float32 module stays the identity (its weights are what is probed)
        self._int8 = quantize_linears(self.module) if self.precision == "int8" else None
        self.name, self.source, self.sampling_rate, self.normalize = name, source, sampling_rate, normalize
        self.min_samples = round(MIN_SAMPLES * sampling_rate / 16000)
        self.multiple = round(tile_multiple_s * sampling_rate)
        self.chunk = round(chunk_s * sampling_rate)
        self.layer_names = [f"layer {i}" for i in range(model.config.num_hidden_layers + 1)]

    def settings(self) -> dict:
        return {
            "rate": self.sampling_rate,
            "normalize": self.normalize,
            "min": self.min_samples,
            "multiple": self.multiple,
            "chunk": self.chunk,
        }

    def chunks(self, samples: np.ndarray) -> list[np.ndarray]:
        if len(samples) > self.chunk:
            return list(split_windows(samples, self.chunk))
        target = math.ceil(len(samples) / self.multiple) * self.multiple if self.multiple else len(samples)
        return [tile_to(samples, max(self.min_samples, target))]

    @torch.inference_mode()
    def hidden_states(self, waves: torch.Tensor) -> list[torch.Tensor]:
        waves = waves.to(self.module.device, torch.float32)
        if self.normalize:  # --normalize-waveform: the feature extractor's do_normalize, zero mean, unit variance
            waves = (waves - waves.mean(1, keepdim=True)) / torch.sqrt(
                waves.var(1, keepdim=True, unbiased=False) + 1e-7
            )
        module = self._int8 or self.module
        dtype = autocast_dtype(self.precision)
        with torch.autocast(waves.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            hidden = module(input_values=waves, output_hidden_states=True).hidden_states
        return [h.float() for h in hidden]


class BioLingualEncoder(LayerEncoder):
    """The audio tower of a BioLingual (CLAP) model: the patch embedding and each HTS-AT stage are the layers;
    a stage's [channels, freq, time] map is read as freq x time tokens. Clips run as the model's own windows."""

    def __init__(self, model, name: str, source: str):
        self.model, self.module = model, model.clap.audio_model
        self.name, self.source = name, source
        self.precision = model.precision  # biolingual.load(..., dtype=)
        self.sampling_rate, self.min_samples = model.sampling_rate, model.window_samples
        depths = model.clap.config.audio_config.depths
        self.layer_names = ["patch embedding"] + [f"stage {i + 1}" for i in range(len(depths))]

    def settings(self) -> dict:
        return {"front_end": self.model.front_end.config.to_dict()}

    @property
    def identity(self) -> str:
        """The model's :meth:`~biolingual.BioLingual.fingerprint` (config, every weight, front end), the identity
        the search index and the evaluation cache know it by."""
        if getattr(self, "_identity", None) is None:
            self._identity = self.model.fingerprint()
        return self._identity

    def chunks(self, samples: np.ndarray) -> list[np.ndarray]:
        return list(split_windows(samples, self.model.window_samples))

    @torch.inference_mode()
    def hidden_states(self, waves: torch.Tensor) -> list[torch.Tensor]:
        features = self.model.front_end(waves.to(self.model.device))
        kwargs = {}
        if self.model.clap.config.audio_config.enable_fusion:
            kwargs["is_longer"] = torch.zeros(features.shape[0], 1, dtype=torch.bool, device=features.device)
        with precision_context(self.model, self.precision) as clap:  # the copy at that precision, or autocast
            out = clap.audio_model(input_features=features.to(clap.dtype), output_hidden_states=True, **kwargs)
        return [h.flatten(2).transpose(1, 2).float() for h in out.hidden_states]  # [B, C, H, W] -> [B, H*W, C]


def _is_path(spec: str) -> bool:
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.endswith(WEIGHTS_SUFFIX)


def check_spec(spec: str) -> None:
    """Fail early, before any work, on a --models entry that names nothing."""
    if spec in SHORT_NAMES:
        return
    path = Path(spec).expanduser()
    if _is_path(spec):
        if not path.exists():
            raise ProbeModelError(f"model '{spec}': no such file or folder")
        if path.is_dir() and not (path / "config.json").is_file() and find_aves_files(path) is None:
            raise ProbeModelError(
                f"model '{spec}': the folder has neither a transformers config.json nor "
                f"AVES files (*{WEIGHTS_SUFFIX} + *.torchaudio.model_config.json)"
            )
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as e:
        raise ProbeModelError(
            f"unknown model '{spec}': not a short name ({', '.join(SHORT_NAMES)}), not a local folder, and not a "
            f"transformers id that could be fetched or found in the cache ({str(e).splitlines()[0]})"
        ) from e


def _speech(
    source: str, name: str, device, chunk_s: float, normalize_waveform: bool, tile_multiple_s: float, dtype=None
) -> SpeechEncoder:
    """A transformers speech model. Its waveform is normalised to zero mean and unit variance only with
    ``normalize_waveform`` and only where its feature extractor says ``do_normalize``; the paper's code feeds
    every model the peak-normalised waveform, without a feature extractor."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    config = AutoConfig.from_pretrained(source)
    model = AutoModel.from_pretrained(source, config=config)
    if getattr(model, "main_input_name", None) != "input_values":
        raise ProbeModelError(
            f"model '{name}' ({config.model_type}) does not take raw waveforms; a probe needs "
            "a speech/audio encoder such as HuBERT, wav2vec2 or WavLM"
        )
    rate, normalize = 16000, False
    try:
        fe = AutoFeatureExtractor.from_pretrained(source)
        rate, normalize = int(getattr(fe, "sampling_rate", rate)), bool(getattr(fe, "do_normalize", False))
    except (OSError, ValueError):
        log.info("%s has no feature extractor config; assuming 16 kHz input without normalisation", name)
    return SpeechEncoder(
        model, name, source, rate, normalize and normalize_waveform, device, chunk_s, tile_multiple_s, dtype
    )


def load_encoder(
    spec: str,
    device=None,
    chunk_s: float = CHUNK_S,
    normalize_waveform: bool = False,
    tile_multiple_s: float = TILE_MULTIPLE_S,
    dtype=None,
) -> LayerEncoder:
    """An encoder from a short name, a transformers id or folder, a BioLingual (CLAP) id or folder, or
    torchaudio-format AVES files (a ``*.torchaudio.pt`` file or a folder holding one). ``normalize_waveform``
    and ``tile_multiple_s`` apply to the speech models (see ``_speech`` and ``TILE_MULTIPLE_S``); ``dtype``
    is the precision (auto, float32, bfloat16, int8; default float32), see :mod:`biolingual.precision`."""
    from transformers import AutoConfig

    import biolingual

    check_spec(spec)
    device = torch.device(device) if device is not None else default_device()
    name = spec if spec in SHORT_NAMES else Path(spec.rstrip("/")).name or spec
    try:
        if spec in AVES_MODELS:
            weights = fetch_aves(spec)
            return SpeechEncoder(
                load_aves(weights),
                name,
                str(weights),
                device=device,
                chunk_s=chunk_s,
                tile_multiple_s=tile_multiple_s,
                dtype=dtype,
            )
        source = SHORT_NAMES.get(spec, spec)
        path = Path(source).expanduser()
        if path.is_file() or (path.is_dir() and not (path / "config.json").is_file()):
            weights, config = (path, None) if path.is_file() else find_aves_files(path)
            return SpeechEncoder(
                load_aves(weights, config),
                name,
                str(weights),
                device=device,
                chunk_s=chunk_s,
                tile_multiple_s=tile_multiple_s,
                dtype=dtype,
            )
        if AutoConfig.from_pretrained(str(path) if path.is_dir() else source).model_type == "clap":
            return BioLingualEncoder(biolingual.load(source, device=device, dtype=dtype), name, source)
        return _speech(
            str(path) if path.is_dir() else source, name, device, chunk_s, normalize_waveform, tile_multiple_s, dtype
        )
    except (AvesError, OSError) as e:
        raise ProbeModelError(f"model '{spec}' could not be loaded: {e}") from e
