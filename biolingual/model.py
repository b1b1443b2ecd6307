"""The BioLingual model: transformers' ``ClapModel`` plus its tokenizer and the batched front end.

``BioLingual`` is an ``nn.Module`` whose only parameters are the ``ClapModel``'s, so a checkpoint is
a plain transformers CLAP checkpoint: ``save_pretrained`` writes what ``ClapModel.from_pretrained``
and ``pipeline("zero-shot-audio-classification")`` read.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerBase

from .audio import AudioSource, describe, load_audio, split_windows
from .device import resolve_device
from .errors import AudioError, ModelNotFoundError, model_not_found
from .features import FrontEndConfig, LogMelFrontEnd
from .precision import name_of, precision_context, resolve_precision
from .presets import preset_clap
from .prompts import DEFAULT_TEMPLATE, check_labels, check_template
from .tokenizer import MAX_TEXT_TOKENS
from .windows import iter_windows

DEFAULT_MODEL = "davidrrobinson/BioLingual"
POOLINGS = ("mean", "max", "first")
# Config keys that say where a model was read from or how it is held, not what it computes: left out of
# the fingerprint so a model saved and loaded again, copied to another folder or read with another
# transformers version is the same model. (The weights' dtype is in their bytes.)
_PROVENANCE_KEYS = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "_commit_hash",
        "_attn_implementation",
        "_attn_implementation_autoset",
    }
)

# Files longer than this are read window by window instead of decoded whole (unfused models).
STREAM_SECONDS = 120.0

log = logging.getLogger(__name__)


def _seconds(path) -> float:
    """A file's duration from its header, or 0 where soundfile cannot tell (the loader then decodes it whole
    and reports any problem)."""
    try:
        info = sf.info(os.fspath(path))
        return info.frames / info.samplerate if info.samplerate > 0 else 0.0
    except Exception:  # unreadable, missing, not a libsndfile format: not this function's error to raise
        return 0.0


def pooled_output(output) -> torch.Tensor:
    """The embedding in what ``ClapModel.get_audio_features``/``get_text_features`` return: transformers v4
    returned the embedding itself, v5 an output with ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else that is given is meant as a folder."""
    return (
        name.startswith((".", "/", "~"))
        or name.endswith(("/", os.sep))
        or name.count("/") > 1
        or os.sep != "/"
        and os.sep in name
    )


def _without_provenance(config: dict) -> dict:
    return {
        k: _without_provenance(v) if isinstance(v, dict) else v for k, v in config.items() if k not in _PROVENANCE_KEYS
    }


def state_digest(module: nn.Module, settings: dict | None = None) -> str:
    """A digest (32 hex digits) of a module's weights (names and exact bytes) and of the settings that shape
    its outputs. :meth:`BioLingual.fingerprint` is this of the CLAP model; the probe's other encoders use it too."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    h.update(json.dumps(settings or {}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _as_list(items) -> tuple[list, bool]:
    """(inputs as a list, whether a single item was given)."""
    if isinstance(items, (list, tuple)):
        return list(items), False
    return [items], True


# Buffers the model builds the same way every time (index tables, a counter): a checkpoint saved by another
# transformers version may leave them out, and the constructor's value is the right one. Anything else missing
# (a weight, BatchNorm's running statistics) would be random or wrong.
_BUILT_BUFFERS = ("position_ids", "token_type_ids", "relative_position_index", "num_batches_tracked")


def _load_clap(name: str, source: str, local: bool, dtype: torch.dtype) -> tuple[ClapModel, ClapConfig]:
    """(the CLAP model with every weight read from ``source``, its config), or a ModelNotFoundError naming the
    folder or file and what is wrong. ``from_pretrained`` alone would build a CLAP model from any config.json
    (a saved BertModel's too) and fill in randomly whatever the weights lack, so such a folder predicted
    0.5/0.5 without a word; and a corrupt weights file raised safetensors' own error."""
    from safetensors import SafetensorError

    where = f"the folder '{source}'" if local else f"'{name}'"
    try:
        raw, _ = ClapConfig.get_config_dict(source)
    except OSError as e:
        if local:
            raise ModelNotFoundError(
                f"Cannot load model '{name}': '{Path(source) / 'config.json'}' cannot be read ({e})"
            ) from e
        raise model_not_found(
            name, f"it is not a local folder and could not be fetched or found in the cache ({e})"
        ) from e
    if raw.get("model_type") != "clap":
        raise ModelNotFoundError(
            f"Cannot load model '{name}': {where} holds a {raw.get('model_type')!r} model, not a CLAP model "
            "(config.json's model_type); give a folder written by model.save_pretrained(...) or "
            "ClapModel.save_pretrained"
        )
    try:
        config = ClapConfig.from_pretrained(source)
        clap, info = ClapModel.from_pretrained(source, config=config, dtype=dtype, output_loading_info=True)
    except SafetensorError as e:
        files = (
            ", ".join(f"'{f}'" for f in sorted(Path(source).glob("*.safetensors")))
            if local
            else f"the weights of '{name}'"
        )
        raise ModelNotFoundError(
            f"Cannot load model '{name}': {files} is corrupt or truncated ({e}); save or copy the model again"
        ) from e
    except OSError as e:
        if local:
            raise ModelNotFoundError(
                f"Cannot load model '{name}': {where} has no weights (model.safetensors or "
                f"pytorch_model.bin) or they cannot be read ({e})"
            ) from e
        raise model_not_found(
            name, f"it is not a local folder and could not be fetched or found in the cache ({e})"
        ) from e
    missing = sorted(k for k in info.get("missing_keys") or () if not k.endswith(_BUILT_BUFFERS))
    if missing:
        raise ModelNotFoundError(
            f"Cannot load model '{name}': the weights in {where} lack {len(missing)} of the CLAP model's tensors "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), which would be random; give a folder "
            "written by model.save_pretrained(...) or ClapModel.save_pretrained"
        )
    return clap, config


class BioLingual(nn.Module):
    """A contrastive language-audio model for animal sounds.

    Use :func:`biolingual.load` (:meth:`from_pretrained`) or :func:`biolingual.create`
    (:meth:`from_preset`) to get one.
    """

    def __init__(
        self,
        clap: ClapModel,
        tokenizer: PreTrainedTokenizerBase,
        front_end: FrontEndConfig | None = None,
        pooling: str = "mean",
        name_or_path: str | None = None,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        self.clap = clap
        bias = getattr(clap.config, "logit_bias", None)
        if bias is not None and getattr(clap, "logit_bias", None) is None:  # a model trained with the sigmoid loss
            clap.logit_bias = nn.Parameter(
                torch.tensor(float(bias), dtype=clap.logit_scale_a.dtype, device=clap.logit_scale_a.device)
            )
        self.tokenizer = tokenizer
        self.front_end = LogMelFrontEnd(front_end or FrontEndConfig(fusion=clap.config.audio_config.enable_fusion))
        self.front_end.to(self.device)
        self.pooling = pooling
        self.name_or_path = name_or_path
        # The precision embedding calls run at when they are given none (biolingual.load(dtype="int8") ...):
        # a resolved name of biolingual.precision, never "auto".
        self.precision = "float32"
        # (the CLAP model inference() runs: the int8 copy for int8), empty outside it; a tuple, so that
        # nn.Module does not register the copy as a submodule (its weights would enter the state dict)
        self._running: tuple = ()
        self.eval()

    # ---- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.clap.logit_scale_a.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clap.logit_scale_a.dtype

    @property
    def sampling_rate(self) -> int:
        return self.front_end.config.sampling_rate

    @property
    def window_samples(self) -> int:
        return self.front_end.config.window_samples

    @property
    def embedding_dim(self) -> int:
        return self.clap.config.projection_dim

    @property
    def logit_scale(self) -> torch.Tensor:
        """The temperature multiplier applied to cosine similarities (exp of the learned log scale)."""
        return self.clap.logit_scale_a.exp()

    @property
    def logit_bias(self) -> nn.Parameter | None:
        """The learned bias of the sigmoid loss (``model.clap.logit_bias``) of a model trained with it, else None.

        ``ClapModel`` has no such parameter: :meth:`save_pretrained` writes its value into config.json
        (``"logit_bias"``), which ``ClapConfig`` keeps as an extra attribute and ``ClapModel`` never reads,
        so transformers loads the folder as it is, without a warning, with the same embeddings and logits
        (``logit_scale_a``/``logit_scale_t`` are its temperatures). The bias shifts every logit by the same
        amount, so rankings and softmaxes over labels (:meth:`zero_shot`) do not depend on it; a sigmoid
        model's probability that a clip matches one text on its own is ``sigmoid(logit + bias)``."""
        return getattr(self.clap, "logit_bias", None)

    def add_logit_bias(self, value: float) -> nn.Parameter:
        """Give the model a learnable sigmoid-loss bias starting at ``value`` (kept if it has one); returns it."""
        if self.logit_bias is None:
            self.clap.logit_bias = nn.Parameter(torch.tensor(float(value), dtype=self.dtype, device=self.device))
        return self.clap.logit_bias

    @property
    def max_text_tokens(self) -> int:
        return min(MAX_TEXT_TOKENS, self.clap.config.text_config.max_position_embeddings - 2)

    # ---- differentiable encoders (used by training) -------------------------------------------
    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """[B, window_samples] waveforms at the model's rate -> L2-normalised [B, D] embeddings.

        Each waveform is exactly one window, so for a fused model none is "longer" (transformers' rule)."""
        return self.encode_features(self.features(waveforms))

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The front end's log-mel features of [B, window_samples] waveforms, always in float32: outside any
        autocast (bfloat16 mel energies and logs would lose precision before the model sees them)."""
        with torch.autocast(self.device.type, enabled=False):
            return self.front_end(waveforms.float())

    def encode_features(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """[B, channels, frames, n_mels] front-end features -> L2-normalised [B, D] embeddings.

        ``is_longer`` ([B] bools, fused models only; default all False) marks the clips whose features are
        :meth:`LogMelFrontEnd.fusion_input` of a clip longer than a window."""
        clap = self._running[0] if self._running else self.clap
        features = features.to(clap.dtype)  # the bfloat16 copy takes bfloat16 features
        kwargs = {}
        if self.clap.config.audio_config.enable_fusion:
            if is_longer is None:
                is_longer = torch.zeros(features.shape[0], dtype=torch.bool)
            kwargs["is_longer"] = is_longer.to(device=features.device, dtype=torch.bool).reshape(-1, 1)
        return F.normalize(pooled_output(clap.get_audio_features(input_features=features, **kwargs)).float(), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> L2-normalised [B, D] embeddings."""
        clap = self._running[0] if self._running else self.clap
        out = clap.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(pooled_output(out).float(), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
        }

    def forward(self, waveforms: torch.Tensor, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None):
        """(audio embeddings, text embeddings, logit scale) for a batch of paired clips and captions; with
        ``input_ids`` None the text embeddings are None (audio-only training)."""
        text = self.encode_text(input_ids, attention_mask) if input_ids is not None else None
        return self.encode_audio(waveforms), text, self.logit_scale

    def fingerprint(self) -> str:
        """What makes two models the same model, as 32 hex digits: the CLAP config (less where it was read
        from and how it is held), every weight (names and exact bytes, so another dtype is another model)
        and the front-end settings. A model saved and loaded again, or copied to another folder, keeps
        its fingerprint; one trained further does not. Pooling is not part of it: it is a choice of each
        ``embed_audio`` call. The search index, the evaluation cache and the probe cache key on it."""
        config = _without_provenance(self.clap.config.to_dict())
        config.pop("logit_bias", None)  # the bias is a weight (clap.logit_bias), hashed with the others
        settings = {"config": config, "front_end": self.front_end.config.to_dict()}
        # Hashing every weight takes about 0.3 s for the base model on a CPU, too slow for each cache
        # look-up; the digest is reused while no tensor was replaced, moved or written in place (torch
        # bumps a tensor's version counter on every in-place write: optimizer steps, load_state_dict, copy_).
        key = (
            json.dumps(settings, sort_keys=True),
            tuple(
                (name, id(t), t.data_ptr(), t._version, t.dtype, t.device)
                for name, t in self.clap.state_dict(keep_vars=True).items()
            ),
        )
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, state_digest(self.clap, settings))
            self._fingerprint_cache = cached
        return cached[1]

    # ---- inference ----------------------------------------------------------------------------
    def resolve_precision(self, dtype=None) -> str:
        """The precision an embedding call with ``dtype`` runs at on this model's device (None: the model's
        own :attr:`precision`): float32, bfloat16, float16 or int8 (see :mod:`biolingual.precision`)."""
        return resolve_precision(self.precision if dtype is None else dtype, self.device)

    @contextlib.contextmanager
    def inference(self, dtype: torch.dtype | str | None = None):
        """A context for embedding: evaluation mode and ``torch.inference_mode``, at the precision ``dtype``
        (a torch dtype or a name: auto, float32, bfloat16, int8, float16; None: the model's
        :attr:`precision`). bfloat16 and float16 autocast (float16 on a GPU only), int8 runs a dynamically
        quantized copy of the model (CPU only); a precision the device cannot run raises
        :class:`~biolingual.precision.PrecisionError` (a ValueError). The training flag is restored on exit."""
        precision = self.resolve_precision(dtype)
        was_training, running = self.training, self._running
        self.eval()
        try:
            with torch.inference_mode(), precision_context(self, precision) as clap:
                self._running = (clap,)
                yield
        finally:
            self._running = running
            self.train(was_training)

    def _load_units(self, source: AudioSource, sampling_rate: int | None, index: int, pooling: str):
        """The model inputs of one clip, in order: 10 s windows (float32 arrays) for the batched front end,
        or, for a fused model and a clip longer than a window, one ``(features, is_longer)`` pair.

        A file longer than :data:`STREAM_SECONDS` (unfused model) comes back as a lazy iterator that reads
        and resamples it block by block (:func:`biolingual.windows.iter_windows`), so memory does not
        grow with the file: a 1-hour file would otherwise be held whole, decoded and cut (about 1.8 GB).
        Pooling is over window embeddings, so windows can be embedded as they come. Shorter files and
        arrays are decoded whole here, in a worker thread, ahead of the model."""
        fused = self.clap.config.audio_config.enable_fusion
        if (
            isinstance(source, (str, os.PathLike))
            and not fused
            and sampling_rate is None
            and _seconds(source) > STREAM_SECONDS
        ):
            windows = (
                w.samples for w in iter_windows(source, self.sampling_rate, self.window_samples, self.window_samples)
            )
            return itertools.islice(windows, 1) if pooling == "first" else windows
        samples = load_audio(source, self.sampling_rate, sampling_rate=sampling_rate, index=index)
        if fused and len(samples) > self.window_samples:
            # A fused model sees a long clip whole, as it was trained: pooling does not apply.
            return [self.front_end.fusion_input(samples)]
        windows = split_windows(samples, self.window_samples)
        return list(windows[:1] if pooling == "first" else windows)

    def _units_expected(self, source: AudioSource, sampling_rate: int | None, pooling: str) -> int:
        """How many model inputs :meth:`_load_units` will give ``source``, for the progress bar's total, without
        decoding it: 10 s windows from a file's header (or an array's length), one where that cannot tell, for
        pooling ``first`` and for a fused model's long clip."""
        if pooling == "first" or self.clap.config.audio_config.enable_fusion:
            return 1
        if isinstance(source, (str, os.PathLike)):
            seconds = _seconds(source)
        else:
            shape = getattr(source, "shape", None)
            seconds = max(shape) / sampling_rate if shape and sampling_rate else 0.0  # channels are fewer than samples
        return max(1, math.ceil(seconds * self.sampling_rate / self.window_samples - 1e-9))

    def _iter_units(self, inputs: list, sampling_rate: int | None, pooling: str, workers: int, skip_errors: bool):
        """Yield (index, units or None, error) in input order, decoding ahead of the model in threads
        (soundfile and soxr release the GIL, so decoding overlaps the forward passes)."""

        def job(i, src):
            try:
                return self._load_units(src, sampling_rate, i, pooling), None
            except (AudioError, OSError) as e:
                if not skip_errors:
                    raise
                return None, e

        with ThreadPoolExecutor(max(1, workers)) as pool:
            pending: deque = deque()
            for i, src in enumerate(inputs):
                pending.append((i, pool.submit(job, i, src)))
                if len(pending) > 2 * workers:
                    j, fut = pending.popleft()
                    yield (j, *fut.result())
            while pending:
                j, fut = pending.popleft()
                yield (j, *fut.result())

    @property
    def default_audio_batch(self) -> int:
        """Windows per forward pass when none is given: small on a CPU, where a batch of 4 keeps HTS-AT's
        working set in cache (measured ~20% faster per clip than 16 for the base model on 2 cores)."""
        return 4 if self.device.type == "cpu" else 32

    def _embed(self, inputs, sampling_rate, batch_size, pooling, dtype, progress, workers, skip_errors):
        """(embeddings of the readable inputs, their indices, {index: error}) for a list of inputs."""
        batch_size = batch_size or self.default_audio_batch
        pooling = pooling or self.pooling
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        per_clip: dict[int, list[torch.Tensor]] = {}
        errors: dict[int, Exception] = {}
        queue: list[tuple[int, object]] = []

        def fail(clip: int, error: Exception) -> None:
            if not skip_errors:
                raise error
            errors[clip] = error

        def flush(items):
            waves = [k for k, (_, unit) in enumerate(items) if isinstance(unit, np.ndarray)]
            features: list = [None] * len(items)
            longer = [False] * len(items)
            if waves:
                batch = torch.from_numpy(np.stack([items[k][1] for k in waves])).to(self.device)
                for k, f in zip(waves, self.features(batch)):
                    features[k] = f
            for k, (_, unit) in enumerate(items):
                if not isinstance(unit, np.ndarray):
                    features[k], longer[k] = unit[0].to(self.device), unit[1]
            embeddings = self.encode_features(torch.stack(features), torch.tensor(longer)).cpu()
            for (clip, _), emb in zip(items, embeddings):
                if not torch.isfinite(emb).all():  # never hand back NaN: say which input did it
                    if clip not in errors:
                        fail(
                            clip,
                            AudioError(
                                f"{describe(inputs[clip], clip)}: the model's embedding of it is not finite "
                                "(NaN or inf); check that the audio is sound, not corrupt or extreme"
                            ),
                        )
                    continue
                per_clip.setdefault(clip, []).append(emb)

        # The bar counts windows, not clips: one 10-hour file is 3,600 of them (27 minutes on a CPU), which a bar
        # of clips showed as 0/1 until the end. Its total comes from the files' headers and is corrected as each
        # clip is done (a header that cannot tell, a resampled length one window off, a skipped file).
        expected = [self._units_expected(source, sampling_rate, pooling) for source in inputs]
        show = progress if progress is not None else sum(expected) > batch_size
        with (
            self.inference(dtype),
            tqdm(total=sum(expected), desc="embedding audio", unit="window", disable=not show) as bar,
        ):
            for clip, units, error in self._iter_units(inputs, sampling_rate, pooling, workers, skip_errors):
                if error is not None:
                    errors[clip] = error
                    units = ()
                done = 0
                try:
                    for unit in units:  # a streamed file reads as this loop goes: bad samples show up here
                        queue.append((clip, unit))
                        if len(queue) >= batch_size:
                            flush(queue)
                            queue = []
                        done += 1
                        bar.update(1)
                except (AudioError, OSError) as e:
                    fail(clip, e)
                    queue = [item for item in queue if item[0] != clip]
                if done != expected[clip]:
                    bar.total += done - expected[clip]
                    bar.refresh()
            if queue:
                flush(queue)
        kept = sorted(i for i in per_clip if i not in errors)
        if not kept:
            return torch.empty(0, self.embedding_dim), kept, errors
        return torch.stack([self._pool(torch.stack(per_clip[i]), pooling) for i in kept]), kept, errors

    def embed_audio(
        self,
        audio: AudioSource | Sequence[AudioSource],
        sampling_rate: int | None = None,
        batch_size: int | None = None,
        pooling: str | None = None,
        dtype: torch.dtype | str | None = None,
        progress: bool | None = None,
        workers: int = 2,
    ) -> torch.Tensor:
        """L2-normalised float32 embeddings [N, D] of clips (paths, arrays or tensors).

        Arrays and tensors need ``sampling_rate``. ``batch_size`` is the number of 10 s windows per
        forward pass (default: 4 on CPU, 32 on GPU). Clips longer than the model's window (10 s) are cut
        into consecutive windows whose embeddings are pooled by ``pooling`` (mean, max or first).
        ``dtype`` is the precision (a torch dtype or auto, float32, bfloat16, int8, float16; default: the
        model's :attr:`precision`, float32 unless loaded with another), see :meth:`inference`.
        A missing, unreadable, empty or non-finite input raises an error naming it.
        """
        inputs, _ = _as_list(audio)
        embeddings, _, _ = self._embed(inputs, sampling_rate, batch_size, pooling, dtype, progress, workers, False)
        return embeddings

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int | None = None,
        pooling: str | None = None,
        dtype: torch.dtype | str | None = None,
        progress: bool | None = None,
        workers: int = 2,
    ) -> tuple[torch.Tensor, list, dict]:
        """For long runs: embed the files that can be read, skip and report the others.

        Returns (embeddings [K, D], the K paths embedded, {path: error message} for the skipped ones). The skipped
        files are reported there only, not logged too: the caller says it once (``biolingual embed`` and ``predict``
        print ``skipped PATH: reason``; logging them here as well showed each twice).
        """
        paths = list(paths)
        embeddings, kept, errors = self._embed(paths, None, batch_size, pooling, dtype, progress, workers, True)
        return embeddings, [paths[i] for i in kept], {paths[i]: str(e) for i, e in errors.items()}

    @staticmethod
    def _pool(window_embeddings: torch.Tensor, pooling: str) -> torch.Tensor:
        if pooling == "mean":
            pooled = window_embeddings.mean(0)
        elif pooling == "max":
            pooled = window_embeddings.max(0).values
        else:
            pooled = window_embeddings[0]
        return F.normalize(pooled, dim=-1)

    def embed_text(
        self,
        texts: str | Sequence[str],
        batch_size: int = 256,
        dtype: torch.dtype | str | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """L2-normalised float32 embeddings [M, D] of texts (truncated to 77 tokens, as in training)."""
        texts, _ = _as_list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"embed_text takes strings; item #{bad[0]} is a {type(texts[bad[0]]).__name__}")
        if not texts:
            return torch.empty(0, self.embedding_dim)
        out = []
        show = progress if progress is not None else len(texts) > 4 * batch_size
        with self.inference(dtype):
            for start in tqdm(range(0, len(texts), batch_size), desc="embedding text", disable=not show):
                out.append(self.encode_text(**self.tokenize(texts[start : start + batch_size])).cpu())
        return torch.cat(out)

    def embed_labels(self, labels: Sequence[str], template: str | Sequence[str] = DEFAULT_TEMPLATE) -> torch.Tensor:
        """One normalised embedding per label; with several templates, the mean over templates (prompt ensembling)."""
        labels = list(labels)
        if not labels:
            raise ValueError("labels is empty: give at least one label")
        templates = [template] if isinstance(template, str) else list(template)
        for t in templates:
            check_template(t)
        prompts = [t.format(label) for t in templates for label in labels]
        embeddings = self.embed_text(prompts).view(len(templates), len(labels), -1)
        return F.normalize(embeddings.mean(0), dim=-1)

    def zero_shot(
        self,
        audio: AudioSource | Sequence[AudioSource],
        labels: Sequence[str],
        template: str | Sequence[str] = DEFAULT_TEMPLATE,
        sampling_rate: int | None = None,
        batch_size: int | None = None,
        **embed_kwargs,
    ) -> torch.Tensor:
        """Probabilities [N, len(labels)] that each clip is each label (softmax over labels).

        The label texts are embedded once per call, whatever the number of clips. A label given twice, a
        blank label, or a template without exactly one ``{}`` raises ValueError (:func:`check_labels`,
        :func:`check_template`).
        """
        text = self.embed_labels(check_labels(labels), template)
        clips = self.embed_audio(audio, sampling_rate=sampling_rate, batch_size=batch_size, **embed_kwargs)
        return self.similarity_to_probs(clips, text)

    def logits(self, audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """CLAP's ``logits_per_audio`` [N, M], float32, on the embeddings' device: the temperature-scaled cosine
        similarity of each clip to each text (label), for normalised embeddings as :meth:`embed_audio` and
        :meth:`embed_labels` give."""
        scale = self.logit_scale.detach().float().cpu()
        return scale * audio_embeddings.float() @ text_embeddings.float().T

    def similarity_to_probs(self, audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Softmax over texts of :meth:`logits`."""
        return self.logits(audio_embeddings, text_embeddings).softmax(dim=-1)

    def predict(
        self,
        audio: AudioSource | Sequence[AudioSource],
        labels: Sequence[str],
        top_k: int = 5,
        template: str | Sequence[str] = DEFAULT_TEMPLATE,
        **kwargs,
    ):
        """The ``top_k`` most likely labels with their probabilities: ``[(label, prob), ...]``.

        For a list of clips, one such list per clip. ``top_k`` below 1 raises ValueError; above the number
        of labels, every label is ranked.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k is the number of labels to return, at least 1; got {top_k!r}")
        inputs, single = _as_list(audio)
        labels = check_labels(labels)
        probs = self.zero_shot(inputs, labels, template=template, **kwargs)
        k = min(top_k, len(labels))
        values, indices = probs.topk(k, dim=-1)
        ranked = [[(labels[i], float(p)) for p, i in zip(v.tolist(), ix.tolist())] for v, ix in zip(values, indices)]
        return ranked[0] if single else ranked

    # ---- persistence --------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, state_dict: dict | None = None) -> None:
        """Write a transformers-format folder: config, model.safetensors, tokenizer, preprocessor config.

        ``state_dict`` (this model's keys, e.g. the full weights gathered from a sharded FSDP run) replaces
        the weights the module holds."""
        os.makedirs(path, exist_ok=True)
        if state_dict is not None:
            state_dict = {k.removeprefix("clap."): v for k, v in state_dict.items() if k.startswith("clap.")}
        if self.logit_bias is not None:
            # not a ClapModel weight: into config.json, where ClapModel leaves it alone (see logit_bias)
            state_dict = dict(state_dict if state_dict is not None else self.clap.state_dict())
            self.clap.config.logit_bias = float(state_dict.pop("logit_bias", self.logit_bias).detach().float())
        self.clap.save_pretrained(path, state_dict=state_dict)
        self.tokenizer.save_pretrained(path)
        self.front_end.config.to_feature_extractor().save_pretrained(path)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike | None = None, device=None, dtype: torch.dtype | str | None = None
    ) -> BioLingual:
        """Load a model from a hub id (default: the published BioLingual) or a local folder
        (what :func:`biolingual.load` does).

        ``device`` defaults to CUDA when available, else CPU. ``dtype`` is either a torch dtype, the dtype the
        weights are held in (e.g. ``torch.float16`` on GPU; default float32), or a precision name (auto,
        float32, bfloat16, int8, float16; see :mod:`biolingual.precision`): the weights stay float32 and
        every embedding call runs at that precision unless it is given another (:attr:`precision`).
        Raises :class:`~biolingual.errors.ModelNotFoundError` for a name that is neither,
        :class:`~biolingual.errors.DeviceError` for a device this machine lacks and
        :class:`~biolingual.precision.PrecisionError` for a precision it cannot run.
        """
        device = resolve_device(device)  # before any loading: a device this machine lacks fails at once
        precision = None
        if isinstance(dtype, str):  # a precision: checked before loading, like the device
            precision, dtype = resolve_precision(dtype, device), None
        name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_MODEL
        local = Path(name).expanduser()
        if local.is_dir():
            if not (local / "config.json").is_file():
                raise model_not_found(name, f"the folder '{local}' has no config.json, so it is not a saved model")
            source = str(local)
        elif local.exists():
            raise model_not_found(name, f"'{local}' is a file; a model is a folder")
        elif _looks_like_path(name):
            raise model_not_found(name, f"there is no folder '{local}'")
        else:
            source = name
        clap, config = _load_clap(name, source, local.is_dir(), dtype or torch.float32)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as e:
            raise model_not_found(name, f"its tokenizer could not be loaded ({e})") from e
        try:
            front_end = FrontEndConfig.from_feature_extractor(
                ClapFeatureExtractor.from_pretrained(source), fusion=config.audio_config.enable_fusion
            )
        except OSError:
            log.warning("'%s' has no preprocessor_config.json; using the published CLAP front-end settings", name)
            front_end = FrontEndConfig(fusion=config.audio_config.enable_fusion)
        model = cls(clap, tokenizer, front_end, name_or_path=name).to(device)
        if precision is not None:
            model.set_precision(precision)
        return model

    def set_precision(self, dtype) -> str:
        """Make ``dtype`` (a precision name or torch dtype; auto chooses by the hardware) the precision of
        every embedding call that is given none; returns the resolved name. For int8 (and bfloat16 on a CPU)
        the model's copy at that precision is built here, so its cost is paid once, up front."""
        self.precision = self.resolve_precision(dtype)
        if self.precision in ("int8", "bfloat16") and self.device.type == "cpu":
            from .precision import bfloat16_clap, int8_clap

            (int8_clap if self.precision == "int8" else bfloat16_clap)(self)
        if name_of(dtype) == "auto":
            log.info("precision auto -> %s on %s", self.precision, self.device)
        return self.precision

    @classmethod
    def from_preset(
        cls,
        preset: str,
        tokenizer: PreTrainedTokenizerBase,
        audio_tower: str | None = None,
        text_tower: str | None = None,
        name_or_path: str | None = None,
        device=None,
        text_from: BioLingual | None = None,
    ) -> BioLingual:
        """A freshly initialised model of a preset (``tiny`` or ``base``) reading text with ``tokenizer``,
        the published CLAP front end, on ``device`` (default: CUDA when available, else CPU).

        ``audio_tower``/``text_tower`` start those towers from pretrained weights; ``text_from`` (a model whose
        ``tokenizer`` is given) gives its text tower and projection (see :func:`biolingual.presets.preset_clap`).
        :func:`biolingual.create` and training's initial model are built here; seed torch first for
        reproducible weights."""
        device = resolve_device(device)
        clap = preset_clap(
            preset,
            tokenizer,
            audio_tower=audio_tower,
            text_tower=text_tower,
            text_from=text_from.clap if text_from is not None else None,
        )
        return cls(clap, tokenizer, FrontEndConfig(), name_or_path=name_or_path or f"preset:{preset}").to(device)
