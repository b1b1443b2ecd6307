"""Distillation's teacher embeddings, computed once per shard and cached beside it (``distill.cache``).

``build_cache(teacher, urls, clip_samples)`` writes, for each training shard ``DIR/NAME.tar`` without one,
``DIR/NAME.teacher-<fingerprint>.npz``: the teacher's audio embedding of every sample (by sample key) and
its text embedding of every caption of the shard. The file name holds the teacher's
:meth:`~biolingual.model.BioLingual.fingerprint`, so another or a retrained teacher never reads a stale
cache, and the file is written whole or not at all (:mod:`biolingual.atomic`), so an interrupted build
leaves nothing half-written. ``TeacherCache(urls, fingerprint)`` reads them back and answers a training
batch by keys and captions.

What a cached audio embedding is: the trainer feeds the student ``clip_samples`` of each clip as int16 PCM,
a random crop of a longer clip and the repeat-padded whole of a shorter one (:mod:`biolingual.data`). For
a clip no longer than ``clip_samples`` that input is fixed, and the cache holds the teacher's embedding of
exactly it (the same PCM round trip), so cached and live distillation agree to float rounding. A longer
clip's crop changes from draw to draw; its cache holds the normalised mean of the teacher's embeddings of
its consecutive ``clip_samples`` windows, the whole clip's embedding, which the student's crop is taught
to approach. Shards built by the data pipeline hold clips of one window (``audio.clip_seconds``).

In: the teacher, the training shards' local paths, the crop length. Out: cache files, then embeddings per batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..data import AUDIO_EXTENSIONS, crop_or_pad, decode_audio_bytes, pcm16_to_float, sample_captions, to_pcm16
from ..extras import require
from ..model import BioLingual

log = logging.getLogger("biolingual.train")


class TeacherCacheError(ValueError):
    """The cache cannot serve this run: remote shards, a key in two shards, a sample missing from it."""


def cache_path(url: str, fingerprint: str) -> Path:
    shard = Path(url)
    return shard.with_name(f"{shard.name.removesuffix('.tar')}.teacher-{fingerprint}.npz")


def _windows(audio: np.ndarray, clip_samples: int) -> list[np.ndarray]:
    """The student's fixed input for a short clip; consecutive windows of a longer one."""
    if len(audio) <= clip_samples:
        return [crop_or_pad(audio, clip_samples, None)]
    return [audio[i : i + clip_samples] for i in range(0, len(audio) - clip_samples + 1, clip_samples)]


@torch.no_grad()
def _embed_shard(teacher: BioLingual, url: str, clip_samples: int, batch_size: int) -> dict:
    wds = require("webdataset", "train", "reading shards for the teacher cache")
    keys, owners, waves, captions = [], [], [], {}
    for sample in wds.tarfile_to_samples()(iter([{"url": url}])):
        audio_key = next((k for k in AUDIO_EXTENSIONS if k in sample), None)
        texts = sample_captions(sample)
        if audio_key is None:
            continue  # what the training stream skips too (and, unless distill.audio_only, a sample without captions)
        try:
            audio = decode_audio_bytes(sample[audio_key], teacher.sampling_rate)
        except Exception as e:  # an undecodable sample is skipped by the trainer as well
            log.warning("teacher cache: skipping sample '%s' of %s: %s", sample.get("__key__"), url, e)
            continue
        for window in _windows(audio, clip_samples):
            waves.append(pcm16_to_float(torch.from_numpy(to_pcm16(window))))  # what the trainer's loader delivers
            owners.append(len(keys))
        keys.append(sample.get("__key__", ""))
        for text in texts:
            captions.setdefault(text, None)
    audio_embeddings = []
    for start in range(0, len(waves), batch_size):
        batch = torch.stack(waves[start : start + batch_size]).to(teacher.device)
        audio_embeddings.append(teacher.encode_audio(batch).float().cpu())
    dim = teacher.embedding_dim
    per_window = torch.cat(audio_embeddings) if audio_embeddings else torch.zeros(0, dim)
    sums = torch.zeros(len(keys), dim).index_add_(0, torch.tensor(owners, dtype=torch.long), per_window)
    counts = torch.bincount(torch.tensor(owners, dtype=torch.long), minlength=len(keys)).clamp(min=1)
    audio_out = torch.where((counts == 1)[:, None], sums, torch.nn.functional.normalize(sums / counts[:, None], dim=-1))
    texts = list(captions)
    text_embeddings = []
    for start in range(0, len(texts), batch_size):
        tokens = teacher.tokenize(texts[start : start + batch_size])
        text_embeddings.append(teacher.encode_text(tokens["input_ids"], tokens["attention_mask"]).float().cpu())
    return {
        "keys": np.array(keys, dtype=str),
        "audio": audio_out.numpy(),
        "captions": np.array(texts, dtype=str),
        "text": (torch.cat(text_embeddings) if text_embeddings else torch.zeros(0, dim)).numpy(),
        "scale": np.float32(teacher.logit_scale.detach().float().cpu()),
    }


def _local(urls: list[str]) -> None:
    remote = [u for u in urls if "://" in u or u.startswith("pipe:")]
    if remote:
        raise TeacherCacheError(
            f"distill.cache keeps the teacher's embeddings beside the shards, and '{remote[0]}' is not "
            "a local file: set --distill.cache false to run the teacher on every batch"
        )


def build_cache(teacher: BioLingual, urls: list[str], clip_samples: int, batch_size: int = 32) -> list[Path]:
    """Write the cache file of every shard in ``urls`` that has none for this teacher; returns all of them."""
    _local(urls)
    fingerprint = teacher.fingerprint()
    teacher.eval()
    paths = []
    for url in urls:
        path = cache_path(url, fingerprint)
        if not path.is_file():
            arrays = _embed_shard(teacher, url, clip_samples, batch_size)
            atomic_write(path, lambda f, arrays=arrays: np.savez(f, **arrays))
            log.info("teacher cache: %d samples of %s -> %s", len(arrays["keys"]), url, path.name)
        paths.append(path)
    return paths


class TeacherCache:
    """The cached teacher embeddings of a run's shards, in memory: :meth:`lookup` answers a batch."""

    def __init__(self, urls: list[str], fingerprint: str, device: torch.device | str = "cpu"):
        _local(urls)
        self.device = torch.device(device)
        rows, where, texts, text_rows, audio = {}, {}, {}, [], []
        for url in urls:
            path = cache_path(url, fingerprint)
            with np.load(path, allow_pickle=False) as f:  # plain arrays only: a cache file cannot run code
                for key in f["keys"].tolist():
                    if key in rows:
                        raise TeacherCacheError(
                            f"the sample key '{key}' is in two shards, '{where[key]}' and '{url}': the "
                            "teacher cache finds samples by key (set --distill.cache false)"
                        )
                    rows[key], where[key] = len(rows), url
                audio.append(torch.from_numpy(f["audio"]))
                for caption, row in zip(f["captions"].tolist(), torch.from_numpy(f["text"])):
                    if caption not in texts:
                        texts[caption] = len(text_rows)
                        text_rows.append(row)
                self.scale = torch.tensor(float(f["scale"]))
        self.rows, self.texts = rows, texts
        self.audio = torch.cat(audio).to(self.device)
        self.text = (
            torch.stack(text_rows).to(self.device)
            if text_rows
            else torch.zeros(0, self.audio.shape[1], device=self.device)
        )
        self.scale = self.scale.to(self.device)

    def lookup(
        self, keys: list[str], captions: list[str] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(audio [B, D], text [B, D], logit scale) of the teacher for a batch's sample keys and captions
        (None: audio only, and text None)."""
        try:
            a = [self.rows[k] for k in keys]
            t = [self.texts[c] for c in captions] if captions is not None else None
        except KeyError as e:
            raise TeacherCacheError(
                f"the teacher cache has no entry for {e.args[0]!r}: a shard changed after its cache was "
                "written; delete its .teacher-*.npz file to rebuild it"
            ) from None

        def index(rows):
            return torch.tensor(rows, dtype=torch.long, device=self.device)

        return self.audio[index(a)], self.text[index(t)] if t is not None else None, self.scale
