"""Shards -> batches: streaming webdataset loaders for training and validation.

Shards are tar files of samples ``KEY.flac`` (or wav/ogg/mp3) + ``KEY.json`` whose ``text`` is a
caption or a list of captions: our own shards and LAION-CLAP's both look like this.

Training streams are resampled: every rank and worker draws shards at random (weighted by source)
with a seed made of (seed, epoch, rank, worker), and an epoch has a fixed number of batches, so all
ranks take the same number of steps and a run is reproducible and resumable mid-epoch.

Where shards come from: brace patterns, or a build folder of ``python -m data_pipeline build``
(its ``sizes.json`` names the shards of each split, gaps in the numbers of a partitioned build included).

How a training batch is made, and what it costs in shared memory: each of a rank's W loader workers
keeps several shards open at once and interleaves their samples, and hands the main process its share
of every batch (B / W clips) as int16 PCM; the main process joins the W shares (on the model's device
when given one, through pinned memory on CUDA) and turns them into float32. At configs/base.yaml's
settings (B 170, W 8, 10 s at 48 kHz) that is 2 prefetched items x 8 workers x 22 clips x 960,000 bytes
= 0.31 GiB of /dev/shm per rank, against 10.4 GB when whole float32 batches crossed, 4 per worker.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import random
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .audio import repeat_pad, resample, to_mono
from .extras import require

# The training extra: the core install (load, embed, zero-shot) never imports this module.
braceexpand = require("braceexpand", "train", "reading training shards (biolingual.data)")
wds = require("webdataset", "train", "reading training shards (biolingual.data)")

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "mp3")
DEFAULT_MAX_BAD_IN_ROW = 200  # undecodable samples in a row, none good, before a stream gives up on its shards
OPEN_SHARDS = 8  # shards each training worker reads at once, interleaving their samples
PREFETCH = 2  # items (one worker's share of a batch) each loader worker keeps ready in /dev/shm
PCM_SCALE = 32768  # int16 full scale: soundfile reads 16-bit PCM as k / 32768, so k comes back exactly


class ShardError(ValueError):
    """Shards are missing, empty or hold no usable audio/caption pairs."""


# ---- shard lists -------------------------------------------------------------------------------
def expand_shards(pattern: str | Sequence[str], split: str = "train") -> list[list[str]]:
    """``"a-{000..009}.tar::b-{00..03}.tar"`` -> one list of shard paths per source (brace patterns).

    A source that is a folder is a build folder (``python -m data_pipeline build --out``): its ``split``
    shards (``train``, ``valid``, ``test``, ``unseen``) as its ``sizes.json`` lists them, since the
    shard numbers of a ``--partition I/N`` build have gaps; a folder without ``sizes.json`` (shards
    written some other way) gives its ``{split}-*.tar`` files.
    """
    patterns = pattern.split("::") if isinstance(pattern, str) else list(pattern)
    sources = []
    for p in patterns:
        p = p.strip()
        if not p:
            continue
        urls = folder_shards(Path(p), split) if Path(p).is_dir() else [u for u in braceexpand.braceexpand(p)]
        sources.append(urls)
    if not sources:
        raise ShardError(f"no shards given (pattern {pattern!r} is empty)")
    return sources


def folder_shards(folder: Path, split: str = "train") -> list[str]:
    """The ``split`` shards of a build folder, in name order (see :func:`expand_shards`); ShardError if none."""
    sizes = folder / "sizes.json"
    if sizes.is_file():
        try:
            names = list(json.loads(sizes.read_text()))
        except (ValueError, TypeError) as e:
            raise ShardError(f"'{sizes}' is not a build's shard list (shard name -> sample count): {e}") from e
        urls = [str(folder / n) for n in sorted(names) if n.startswith(f"{split}-") and n.endswith(".tar")]
    else:
        urls = sorted(str(p) for p in folder.glob(f"{split}-*.tar"))
    if not urls:
        raise ShardError(
            f"folder '{folder}' has no {split} shards ({split}-*.tar"
            + (", as its sizes.json lists them)" if sizes.is_file() else ")")
        )
    return urls


def _is_remote(url: str) -> bool:
    return url.startswith(("pipe:", "http://", "https://", "s3://", "gs://"))


def check_shards(sources: list[list[str]], name: str = "train", captions: bool = True) -> None:
    """Fail before training starts when shards are missing, empty, or hold no audio or (``captions``) no captions."""
    for urls in sources:
        local = [u for u in urls if not _is_remote(u)]
        missing = [u for u in local if not Path(u).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ShardError(f"{name} shard not found: '{missing[0]}'{more}")
        empty = [u for u in local if Path(u).stat().st_size == 0]
        if empty:
            raise ShardError(f"{name} shard is empty: '{empty[0]}'")
        if local:
            _check_shard_contents(local[0], name, captions)


def _check_shard_contents(path: str, name: str, captions: bool = True) -> None:
    suffixes: set[str] = set()
    try:
        with tarfile.open(path) as tar:
            for i, member in enumerate(tar):
                if i >= 64:
                    break
                if member.isfile() and "." in Path(member.name).name:
                    suffixes.add(Path(member.name).name.split(".", 1)[1].lower())
    except tarfile.TarError as e:
        raise ShardError(f"{name} shard '{path}' is not a readable tar file: {e}") from e
    if not suffixes & set(AUDIO_EXTENSIONS):
        raise ShardError(f"{name} shard '{path}' has no audio (.flac/.wav/.ogg/.mp3) members; found {sorted(suffixes)}")
    if captions and "json" not in suffixes and "txt" not in suffixes:
        raise ShardError(
            f"{name} shard '{path}' has no captions (.json with 'text', or .txt); found {sorted(suffixes)}"
        )


# ---- sample decoding ---------------------------------------------------------------------------
def sample_metadata(sample: dict) -> dict:
    """The sample's ``.json`` member as a dict (empty when it has none)."""
    meta = json.loads(sample["json"]) if "json" in sample else {}
    return meta if isinstance(meta, dict) else {}


def sample_captions(sample: dict) -> list[str]:
    """The captions of a raw sample: ``json['text']`` (a string or a list), else a ``.txt`` member."""
    if "json" in sample:
        text = sample_metadata(sample).get("text")
        captions = [text] if isinstance(text, str) else list(text or [])
    elif "txt" in sample:
        captions = [sample["txt"].decode("utf-8")]
    else:
        captions = []
    return [c for c in captions if isinstance(c, str) and c.strip()]


def decode_audio_bytes(data: bytes, target_rate: int) -> np.ndarray:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")  # [time] or [time, channels]
    mono = to_mono(samples)
    if mono.size == 0 or not np.isfinite(mono).all():
        raise ValueError("no samples" if mono.size == 0 else "non-finite samples")
    return resample(mono, rate, target_rate)


def crop_or_pad(samples: np.ndarray, length: int, rng: random.Random | None) -> np.ndarray:
    """A random ``length`` crop of a long clip (``rng``), or its start when ``rng`` is None; short clips are
    repeat-padded."""
    if len(samples) > length:
        start = rng.randrange(len(samples) - length + 1) if rng is not None else 0
        return samples[start : start + length]
    return repeat_pad(samples, length)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1) -> int16 PCM (x 32768, rounded; values outside clipped, as LAION-CLAP's
    int16 round trip clips them). Back through :func:`pcm16_to_float` it is exact for what soundfile
    reads from 16-bit files (k / 32768), and otherwise off by at most half a step, 2**-16 (one step,
    2**-15, within half a step of +1, where 32767 / 32768 is the largest value)."""
    return np.clip(np.rint(audio * np.float32(PCM_SCALE)), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)


def pcm16_to_float(pcm: torch.Tensor) -> torch.Tensor:
    """int16 PCM (any shape, any device) -> float32 in [-1, 1), on the same device; 1 / 32768 is a power
    of two, so a CPU and a GPU give the same bits."""
    return pcm.to(torch.float32).mul_(1.0 / PCM_SCALE)


@dataclass
class Decoder:
    """Raw tar sample -> {"audio": [clip_samples] float32 (int16 PCM with ``pcm16``), "text": str};
    picklable for workers."""

    sampling_rate: int
    clip_samples: int
    train: bool
    seed: int = 0
    pcm16: bool = False  # int16 PCM: half the bytes of float32 through the workers' shared memory
    captions: bool = True  # False: a sample without a caption is kept, with text "" (audio-only distillation)

    def __call__(self, sample: dict, index: int) -> dict:
        audio_key = next((k for k in AUDIO_EXTENSIONS if k in sample), None)
        if audio_key is None:
            raise ValueError("no audio member")
        captions = sample_captions(sample)
        if not captions and self.captions:
            raise ValueError("no caption")
        # One generator per sample, keyed by its position in the stream: skipping samples on resume
        # does not change the crops and captions of the ones after.
        rng = random.Random(_mix(self.seed, index)) if self.train else None
        audio = crop_or_pad(decode_audio_bytes(sample[audio_key], self.sampling_rate), self.clip_samples, rng)
        text = "" if not captions else rng.choice(captions) if rng is not None else captions[0]
        meta = {k: v for k, v in sample_metadata(sample).items() if k != "text"} if not self.train else {}
        audio = to_pcm16(audio) if self.pcm16 else audio.astype(np.float32, copy=False)
        return {"audio": audio, "text": text, "key": sample.get("__key__", ""), "meta": meta}


def _mix(*values: int) -> int:
    """A stable 64-bit seed from integers (Python's hash() is salted per process)."""
    return zlib.crc32(repr(values).encode()) * 2654435761 % (2**63)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


# ---- the streams -------------------------------------------------------------------------------
class TrainStream(IterableDataset):
    """A rank's endless-shard training stream: each loader worker's share of every batch of an epoch.

    Worker w of ``workers`` keeps ``open_shards`` shards open at once, drawn with replacement (the
    source chosen by ``weights``, then a shard of it uniformly: every draw reads its whole shard, so
    each sample is equally frequent whatever the size of its shard, a partitioned build's short tail
    shards included), takes the next sample from one of them at random, shuffles samples as compressed
    bytes, skips the raw samples it consumed before a resume (undecodable ones included), decodes, and
    yields items of ``share(w)`` clips as int16 PCM with ``position`` (w, raw samples consumed) and
    ``pid`` (this worker process's id).

    ``plan`` (shared memory: [epoch, items, skip_0, ..., skip_{workers-1}]) says which epoch to stream,
    how many items and what to skip; :func:`train_loader` sets it before every epoch, and persistent
    worker processes read it when they start the epoch's iteration.
    """

    def __init__(
        self,
        sources: list[list[str]],
        weights: Sequence[float] | None,
        decoder: Decoder,
        batch_size: int,
        workers: int,
        seed: int,
        rank: int,
        shuffle_buffer: int = 1000,
        open_shards: int = OPEN_SHARDS,
        max_bad_in_row: int = DEFAULT_MAX_BAD_IN_ROW,
    ):
        super().__init__()
        if weights is not None and len(weights) != len(sources):
            raise ValueError(f"{len(weights)} weights for {len(sources)} shard sources")
        self.sources, self.weights = sources, list(weights) if weights is not None else [1.0] * len(sources)
        self.decoder, self.batch_size, self.workers = decoder, batch_size, max(1, workers)
        self.seed, self.rank, self.shuffle_buffer = seed, rank, shuffle_buffer
        # never more than there are shards: one shard open twice would only repeat its own samples
        self.open_shards = max(1, min(open_shards, len({u for urls in sources for u in urls})))
        self.max_bad_in_row = max_bad_in_row
        self.plan = torch.zeros(2 + self.workers, dtype=torch.int64).share_memory_()

    def share(self, worker: int) -> int:
        """Clips worker ``worker`` gives to every batch (the first ``batch_size % workers`` give one more)."""
        return self.batch_size // self.workers + (worker < self.batch_size % self.workers)

    def set_plan(self, epoch: int, items: int, skip: Sequence[int]) -> None:
        self.plan.copy_(torch.tensor([epoch, items, *skip], dtype=torch.int64))

    def _shard_urls(self, rng: random.Random) -> Iterator[dict]:
        while True:
            source = rng.choices(range(len(self.sources)), weights=self.weights)[0]
            yield {"url": rng.choice(self.sources[source])}

    def __iter__(self):
        worker, _ = _worker()
        epoch, items, skip = (int(v) for v in (self.plan[0], self.plan[1], self.plan[2 + worker]))
        stream_seed = _mix(self.seed, epoch, self.rank, worker)
        rng = random.Random(stream_seed)
        decoder = Decoder(
            self.decoder.sampling_rate,
            self.decoder.clip_samples,
            self.decoder.train,
            stream_seed,
            pcm16=True,
            captions=self.decoder.captions,
        )
        bad_run = BadRun(self.max_bad_in_row)
        samples = _interleaved(self._shard_urls(rng), self.open_shards, random.Random(stream_seed + 2), bad_run)
        samples = wds.filters._shuffle(
            samples, self.shuffle_buffer, min(100, self.shuffle_buffer), rng=random.Random(stream_seed + 1)
        )
        indexed = _stop_on(bad_run, ((i, sample) for i, sample in enumerate(samples) if i >= skip))
        shares = _decoded_batches(indexed, decoder, self.share(worker), partial=False, bad_run=bad_run, worker=worker)
        pid = os.getpid()
        for item in itertools.islice(shares, items):
            item["pid"] = pid
            yield item


def _interleaved(shards: Iterator[dict], open_shards: int, rng: random.Random, bad_run: BadRun) -> Iterator[dict]:
    """Raw samples of ``open_shards`` of ``shards`` ({"url": ...}) read at once: each next one from an
    open shard chosen by ``rng``, a shard that ends replaced by the next. A batch thus mixes many shards
    even when a shard is as large as the shuffle buffer (and holds one species, as shards written in
    key order do). Ends once ``bad_run`` has failed (shards that give nothing but errors)."""
    read = wds.tarfile_to_samples(handler=bad_run.handler)
    slots = [read(iter([next(shards)])) for _ in range(open_shards)]  # lazy: a shard opens at its first sample
    while bad_run.failed() is None:
        slot = rng.randrange(open_shards)
        sample = next(slots[slot], None)
        if sample is None:
            slots[slot] = read(iter([next(shards)]))
        else:
            yield sample


def _stop_on(bad_run: BadRun, indexed):
    """Pass samples through until ``bad_run`` has failed on unreadable shards (then the decoder reports it)."""
    for item in indexed:
        yield item
        if bad_run.failed() is not None:
            return


class EvalStream(IterableDataset):
    """Every sample of the given shards once, deterministically (start of the clip, first caption)."""

    def __init__(
        self, urls: list[str], decoder: Decoder, batch_size: int, max_bad_in_row: int = DEFAULT_MAX_BAD_IN_ROW
    ):
        super().__init__()
        self.urls, self.decoder, self.batch_size, self.max_bad_in_row = urls, decoder, batch_size, max_bad_in_row

    def __iter__(self):
        worker, workers = _worker()
        urls = [{"url": u} for u in self.urls[worker::workers]]
        bad_run = BadRun(self.max_bad_in_row)
        samples = wds.tarfile_to_samples(handler=bad_run.handler)(iter(urls))
        yield from _decoded_batches(
            enumerate(samples), self.decoder, self.batch_size, partial=True, bad_run=bad_run, worker=worker
        )


class BadRun:
    """Counts undecodable samples (and unreadable shard data) since the last good sample.

    A stream of resampled shards never ends, so a shard set where nothing decodes would skip forever;
    after ``limit`` failures in a row with no good sample, :meth:`failed` returns the message that
    stops the stream, naming the shards the failures came from.
    """

    def __init__(self, limit: int = DEFAULT_MAX_BAD_IN_ROW):
        self.limit = max(1, int(limit))
        self.count = 0
        self.shards: dict[str, str] = {}  # shard -> the last reason one of its samples failed

    def bad(self, shard: str | None, reason: str) -> None:
        self.count += 1
        self.shards[str(shard)] = reason

    def good(self) -> None:
        self.count = 0
        self.shards.clear()

    def failed(self) -> str | None:
        if self.count < self.limit:
            return None
        listed = "; ".join(f"'{u}' ({why})" for u, why in list(self.shards.items())[:5])
        more = f" and {len(self.shards) - 5} more" if len(self.shards) > 5 else ""
        return (
            f"{self.count} samples in a row could not be used, none usable in between: {listed}{more}. "
            "Check or rebuild these shards (or remove them from the pattern)."
        )

    def handler(self, exn) -> bool:
        """webdataset handler for unreadable shard data: log, count, go on (the stream checks :meth:`failed`)."""
        log.warning("skipping unreadable shard data: %r", exn)
        # webdataset appends (stream, url) to the exception's args
        url = next((a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str)), "unknown shard")
        self.bad(url, f"{type(exn).__name__}: {exn.args[0] if exn.args else ''}"[:200])
        return True


def _decoded_batches(
    indexed_samples, decode, batch_size: int, partial: bool, bad_run: BadRun | None = None, worker: int = 0
):
    """(index, raw sample) pairs -> collated batches; a sample that fails to decode is logged, counted
    in the next batch's ``skipped`` and never stops the stream, unless ``bad_run.limit`` fail in a row:
    then a last item ``{"error": message}`` is yielded (an exception raised in a DataLoader worker
    reaches the trainer wrapped in a traceback, a message reaches it as it is).

    Each batch carries ``position`` = (worker, raw samples consumed so far): a resume skips exactly that
    many raw samples, however many of them failed to decode.
    """
    bad_run = bad_run or BadRun()
    batch: list[dict] = []
    bad = 0
    consumed = 0
    for index, sample in indexed_samples:
        consumed = index + 1
        try:
            batch.append(decode(sample, index))
        except Exception as e:  # any decoding failure is one bad sample, not a failed run
            bad += 1
            log.warning("skipping sample '%s' of %s: %s", sample.get("__key__"), sample.get("__url__"), e)
            bad_run.bad(sample.get("__url__"), str(e)[:200])
            if (message := bad_run.failed()) is not None:
                yield {"error": message}
                return
            continue
        bad_run.good()
        if len(batch) == batch_size:
            yield collate(batch, bad, position=(worker, consumed))
            batch, bad = [], 0
    if (message := bad_run.failed()) is not None:
        yield {"error": message}
        return
    if partial and (batch or bad):
        yield collate(batch, bad, position=(worker, consumed))


def collate(samples: list[dict], skipped: int = 0, position: tuple[int, int] = (0, 0)) -> dict:
    audio = np.stack([s["audio"] for s in samples]) if samples else np.zeros((0, 0), np.float32)
    return {
        "audio": torch.from_numpy(audio),
        "text": [s["text"] for s in samples],
        "key": [s["key"] for s in samples],
        "meta": [s["meta"] for s in samples],
        "skipped": skipped,
        "position": position,
    }


def _init_worker(_):
    torch.set_num_threads(1)  # decoding workers must not compete with the model for cores


def _own_generator(*seed: int) -> torch.Generator:
    """A DataLoader draws its workers' seeds from this, not from the global RNG: starting a loader
    (a new epoch, a resume, a validation) must not shift the model's dropout randomness."""
    return torch.Generator().manual_seed(_mix(*seed))


# ---- loaders -----------------------------------------------------------------------------------
def _raising(batches):
    """Batches as they come; the ``{"error": ...}`` item a stream ends with when its shards are unusable
    becomes a :class:`ShardError` here, in the process that iterates."""
    for batch in batches:
        if "error" in batch:
            raise ShardError(batch["error"])
        yield batch


class TrainLoader:
    """The training batches of one rank for one epoch (``len()`` = steps per epoch).

    A batch is one share from each stream worker, in worker order (the order the DataLoader takes
    them in), joined on ``device`` when given one (each share copied there without blocking, from
    pinned memory on CUDA) and turned from int16 PCM into float32 there: {"audio": float32
    [B, clip_samples], "text", "key", "meta": [B], "skipped": undecodable samples passed over,
    "worker_pids": the process that made each share}.

    ``positions`` holds, per stream worker, the raw samples consumed by the batches handed out so far:
    what a checkpoint stores so that a resume skips exactly them (see :func:`train_loader`).
    """

    def __init__(
        self,
        loader: DataLoader,
        stream: TrainStream,
        steps: int,
        positions: list[int],
        device: torch.device | None,
        settings: tuple,
    ):
        self.loader, self.stream, self.steps, self.positions = loader, stream, steps, positions
        self.device, self.settings = device, settings

    def __iter__(self):
        shares = _raising(self.loader)
        workers = self.stream.workers
        for _ in range(self.steps):
            parts = list(itertools.islice(shares, workers))
            if len(parts) < workers:  # the streams are endless; an unusable one has raised ShardError
                return
            order = [p["position"][0] for p in parts]
            if order != list(range(workers)):  # the positions a resume skips would be wrong
                raise RuntimeError(f"loader workers' shares came in the order {order}, not 0..{workers - 1}")
            for p in parts:
                worker, consumed = p["position"]
                self.positions[worker] = consumed
            yield self._join(parts)

    def _join(self, parts: list[dict]) -> dict:
        pcm = [p["audio"] if self.device is None else p["audio"].to(self.device, non_blocking=True) for p in parts]
        return {
            "audio": pcm16_to_float(torch.cat(pcm)),
            "text": [t for p in parts for t in p["text"]],
            "key": [k for p in parts for k in p["key"]],
            "meta": [m for p in parts for m in p["meta"]],
            "skipped": sum(p["skipped"] for p in parts),
            "worker_pids": [p["pid"] for p in parts],
        }

    def __len__(self) -> int:
        return self.steps


def train_loader(
    pattern: str | Sequence[str],
    *,
    batch_size: int,
    steps_per_epoch: int,
    epoch: int = 0,
    seed: int = 0,
    rank: int = 0,
    workers: int = 2,
    weights: Sequence[float] | None = None,
    sampling_rate: int = 48_000,
    clip_samples: int = 480_000,
    shuffle_buffer: int = 1000,
    start_step: int = 0,
    consumed: Sequence[int] | None = None,
    max_bad_in_row: int = DEFAULT_MAX_BAD_IN_ROW,
    device: str | torch.device | None = None,
    previous: TrainLoader | None = None,
    open_shards: int = OPEN_SHARDS,
    captions: bool = True,
) -> TrainLoader:
    """Batches {"audio": [B, clip_samples] float32, "text": [B]} for ``steps_per_epoch`` steps of one rank.

    ``pattern``: brace patterns (``::`` between sources) or build folders (their train shards, see
    :func:`expand_shards`). ``device``: where the batches' audio is put (the model's device); None
    keeps it on the CPU. ``workers`` decoding processes (at most ``batch_size``; 0: in this process)
    each give every batch its share; they live as long as the loader: pass the previous epoch's loader
    as ``previous`` and, when its settings are the same, this epoch runs in its worker processes.

    ``start_step`` > 0 resumes inside the epoch: the samples before it are skipped as compressed
    bytes (not decoded), and the batches after are exactly those of an uninterrupted run. Pass
    ``consumed``, the ``positions`` of the interrupted epoch's loader, to skip exactly the raw samples it
    read (samples that failed to decode included); without it each worker skips steps x its share of
    samples, which is exact only when none failed.

    ``max_bad_in_row`` undecodable samples with no good one in between stop the stream with a
    :class:`ShardError` naming the shards (a set where nothing decodes would otherwise skip forever).
    """
    sources = expand_shards(pattern)
    check_shards(sources, captions=captions)
    workers = min(max(0, workers), batch_size)  # every worker gives every batch at least one clip
    n_workers = max(1, workers)
    device = torch.device(device) if device is not None else None
    settings = (
        sources,
        list(weights) if weights is not None else None,
        batch_size,
        workers,
        seed,
        rank,
        sampling_rate,
        clip_samples,
        shuffle_buffer,
        max_bad_in_row,
        open_shards,
        device,
        captions,
    )
    if previous is not None and previous.settings == settings:
        stream, loader = previous.stream, previous.loader
    else:
        stream = TrainStream(
            sources,
            weights,
            Decoder(sampling_rate, clip_samples, train=True, captions=captions),
            batch_size,
            n_workers,
            seed,
            rank,
            shuffle_buffer,
            open_shards,
            max_bad_in_row,
        )
        # Shared memory: PREFETCH items per worker of one share (batch_size / workers clips) of int16, so
        # PREFETCH x batch_size x 2 bytes x clip_samples in all: 0.31 GiB at configs/base.yaml's settings
        # (2 x 8 workers x 22 clips x 960,000 bytes), see the module docstring.
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            worker_init_fn=_init_worker if workers else None,
            persistent_workers=workers > 0,
            prefetch_factor=PREFETCH if workers else None,
            pin_memory=device is not None and device.type == "cuda",
            generator=_own_generator(seed, epoch, rank),
        )
    if consumed is not None and len(consumed) == n_workers:
        skip = [int(c) for c in consumed]
    else:
        if consumed is not None:
            log.warning(
                "the checkpoint's data position is for %d workers, this run has %d: skipping by batch count",
                len(consumed),
                n_workers,
            )
        skip = [start_step * stream.share(w) for w in range(n_workers)]
    stream.set_plan(epoch, steps_per_epoch - start_step, skip)
    return TrainLoader(loader, stream, steps_per_epoch - start_step, list(skip), device, settings)


class EvalLoader:
    """Every sample of some shards once (see :func:`eval_loader`); unusable shards raise :class:`ShardError`."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self):
        return _raising(self.loader)


def eval_loader(
    pattern: str | Sequence[str],
    *,
    batch_size: int,
    workers: int = 2,
    sampling_rate: int = 48_000,
    clip_samples: int = 480_000,
    name: str = "validation",
    max_bad_in_row: int = DEFAULT_MAX_BAD_IN_ROW,
    split: str = "valid",
) -> EvalLoader:
    """Every sample of the validation shards once, in a fixed order, deterministically decoded; a build
    folder in ``pattern`` gives its ``split`` shards."""
    sources = expand_shards(pattern, split)
    check_shards(sources, name=name)
    urls = [u for urls in sources for u in urls]
    workers = min(workers, len(urls))
    return EvalLoader(
        DataLoader(
            EvalStream(urls, Decoder(sampling_rate, clip_samples, train=False), batch_size, max_bad_in_row),
            batch_size=None,
            num_workers=workers,
            worker_init_fn=_init_worker if workers else None,
            generator=_own_generator(0),
        )
    )


def check_usable(
    pattern: str | Sequence[str],
    name: str = "train",
    sampling_rate: int = 48_000,
    max_bad_in_row: int = DEFAULT_MAX_BAD_IN_ROW,
    split: str = "train",
    captions: bool = True,
) -> None:
    """Fail before training starts unless some sample of the shards decodes to audio with a caption
    (with ``captions`` False: to audio).

    Reads the shards in order only until the first usable sample (usually the first one), in this
    process; raises :class:`ShardError` naming the shards and why their samples failed. A build folder
    in ``pattern`` gives its ``split`` shards.
    """
    sources = expand_shards(pattern, split)
    check_shards(sources, name=name, captions=captions)
    decoder = Decoder(
        sampling_rate, sampling_rate, train=False, captions=captions
    )  # one second is enough to know it decodes
    bad_run = BadRun(max_bad_in_row)
    samples = wds.tarfile_to_samples(handler=bad_run.handler)(iter({"url": u} for urls in sources for u in urls))
    for batch in _decoded_batches(enumerate(samples), decoder, 1, partial=True, bad_run=bad_run):
        if "error" in batch:
            raise ShardError(f"{name} shards: {batch['error']}")
        if batch["text"]:
            return
    reasons = "; ".join(f"'{u}' ({why})" for u, why in list(bad_run.shards.items())[:5])
    raise ShardError(
        f"{name} shards '{pattern}' hold no usable sample (audio with a caption)" + (f": {reasons}" if reasons else "")
    )
