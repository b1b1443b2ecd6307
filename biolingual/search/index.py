"""Build a window-embedding index of long recordings: resumable, incremental, one model per index.

Layout of an index folder (format 2)::

    index.json         model identity (name, weights fingerprint, dim), window and hop, sampling rate, the
                       precisions the embeddings were computed at ("precision": ["bfloat16"]; more than one only
                       where an extension at another precision was allowed), and "root": the folder the
                       recordings are named relative to (the common folder of those of the first merge), and
                       "moved_from": the roots it had before (see relocate)
    parts/<key>.npz    a recording embedded but not merged yet: float16 embeddings [n, D], start and end seconds,
                       the file's absolute path, size and mtime, and its precision. Written atomically when the
                       file is done, so a crash loses at most the files in flight; re-running skips every file
                       that has a part or a record in merged/.
    skipped-<rank>.tsv files that could not be read, with the reason
    merged/            every merged recording's rows, in the order of the recordings' relative paths:
                       embeddings.npy (float16 [N, D], the only copy of each embedding), starts/ends/file_ids .npy,
                       files.json (paths relative to the root), records.json (per recording: path, size, mtime,
                       precision, rows, and the size and mtime of the part it came from), check.json (its
                       embeddings were found finite, at this size and mtime), parts.json ([]: see below)

Each embedding is stored once. A merge (:func:`merge`, under the folder's ``.merge.lock``) writes a new merged/
beside the old one from the old one's rows and the pending parts, swaps it in atomically, then deletes the parts it
took in. Every step leaves an index that opens whole, and the next merge finishes the job:

- killed while the new merged/ is written: the old merged/ and the parts are untouched; the temporary folder
  (``.merged.<pid>.tmp``) is removed by the next merge;
- killed after the swap, before every part is deleted: the new merged/ records each part's own size and mtime,
  so a part still there is known as already taken in and is deleted without merging again (a part written since,
  for the same recording, differs and replaces its rows);
- the root is written to index.json before the first merged/ that names recordings relative to it.

The rows of merged/ are the only copy, so a damaged merged/ is repaired by embedding again the recordings whose
rows are bad (:class:`IndexWriter` finds them when it starts); the others are kept.

Recordings are named relative to the root, so an archive mounted elsewhere is re-pointed by rewriting the root
(:func:`relocate`, ``biolingual index --out INDEX --relocate NEW_ROOT``); :attr:`IndexData.files` are the absolute
paths under the current root. Files added later outside the root are named with ``..``.

Format 1 (parts kept after the merge, merged/ holding a second copy, absolute paths) is converted by the first
merge that can write the folder (:func:`load_index` runs one), with a log line: the root is set, then merged/ is
rebuilt from the parts (they hold every row) and the parts are deleted. merged/parts.json is ``[]``, the listing of
parts/ after the merge, so an older version of this code finds such an index current and opens it rather than
merging the (deleted) parts over it.

Several processes (``torchrun``, or any launcher setting RANK/WORLD_SIZE) split the files by
duration; each writes its own parts, and the merge happens once all are done (or at the next load).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write, atomic_write_text, fsync_dir, replace_dir
from ..errors import AudioError, IndexCorruptError, ModelMismatchError, SearchIndexError
from ..faults import fault_point
from ..locks import held
from ..vocabulary import AUDIO_EXTENSIONS

if TYPE_CHECKING:
    import torch

# torch (and the audio decoders that import it) are imported where the index is built, not at the top: opening an
# index and searching it by an embedding or a row needs neither (tests/test_search_query.py checks)

FORMAT_VERSION = 2  # 1: parts kept beside merged/, absolute paths (converted on first merge)

log = logging.getLogger(__name__)


def model_identity(model) -> dict:
    """Name, :meth:`~biolingual.BioLingual.fingerprint` (config, every weight, front-end settings: a retrained
    model is a different model, the same one loaded from another folder is not) and embedding size."""
    return {"name": str(model.name_or_path), "fingerprint": model.fingerprint(), "dim": int(model.embedding_dim)}


def _fingerprint_v1(model) -> str:
    """The fingerprint indexes were written with before :meth:`~biolingual.BioLingual.fingerprint` (40 hex
    digits: SHA-1 of the config as JSON, the folder it was read from included, and every weight as float32),
    so that an index built then still opens with the model it was built with."""
    digest = hashlib.sha1(model.clap.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.clap.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def find_audio_files(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Files given, plus audio files found (recursively) in folders given; sorted, without repeats."""
    found: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            found.append(str(p))  # a missing file is reported as skipped, with its reason
    return list(dict.fromkeys(os.path.abspath(f) for f in found))


def _part_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:20]


def read_meta(index_dir: str | os.PathLike) -> dict:
    path = Path(index_dir) / "index.json"
    if not path.is_file():
        raise SearchIndexError(
            f"'{index_dir}' is not a biolingual index (no index.json); build one with `biolingual index`"
        )
    try:
        meta = json.loads(path.read_text())
        meta["model"]["fingerprint"], meta["window_s"], meta["hop_s"], meta["sampling_rate"]
    except (ValueError, KeyError, TypeError) as e:
        raise SearchIndexError(f"'{path}' is corrupt ({e!r}); delete the index folder and build it again") from e
    return meta


def check_model(meta: dict, model, index_dir) -> None:
    mine = model_identity(model)
    theirs = meta["model"]
    same = mine["fingerprint"] == theirs["fingerprint"] or (
        len(theirs["fingerprint"]) == 40 and theirs["fingerprint"] == _fingerprint_v1(model)
    )  # an index from before
    if not same or mine["dim"] != theirs["dim"]:
        raise ModelMismatchError(
            f"the index '{index_dir}' was built with model '{theirs['name']}' "
            f"(fingerprint {theirs['fingerprint'][:12]}), "
            f"not with '{mine['name']}' (fingerprint {mine['fingerprint'][:12]}); embeddings of different models "
            "cannot be compared: use that model, or build a new index in another folder"
        )


def index_precisions(meta: dict) -> list[str]:
    """The precisions an index's embeddings were computed at, in the order they were first used (an index
    written before precisions were recorded was float32)."""
    recorded = meta.get("precision", ["float32"])
    return [recorded] if isinstance(recorded, str) else list(recorded)


def check_precision(meta: dict, precision: str, index_dir, allow_mixed: bool = False) -> bool:
    """Whether adding embeddings at ``precision`` extends the index's precisions (only with ``allow_mixed``).
    Another precision without it raises :class:`SearchIndexError` saying which ones and what to do."""
    have = index_precisions(meta)
    if precision in have:
        return False
    if not allow_mixed:
        raise SearchIndexError(
            f"the index '{index_dir}' was built at precision {' + '.join(have)}, not {precision}: windows embedded at "
            f"another precision differ slightly, so rankings would mix the two; "
            f"use --dtype {have[0]} (dtype='{have[0]}'), "
            "build a new index in another folder, or pass --allow-mixed-precision (allow_mixed_precision=True) "
            "to add them anyway (the index then records both)"
        )
    return True


def _open_meta(
    out: Path, model, window_s: float | None, hop_s: float | None, precision: str = "float32", allow_mixed: bool = False
) -> dict:
    """Create index.json, or check an existing one against this model, these settings and this precision
    (recording an allowed extra precision in it)."""
    if (out / "index.json").exists():
        meta = read_meta(out)
        check_model(meta, model, out)
        for key, value in (("window_s", window_s), ("hop_s", hop_s)):
            if value is not None and abs(float(value) - meta[key]) > 1e-9:
                raise SearchIndexError(
                    f"the index '{out}' uses {key.split('_')[0]} {meta[key]} s, not {value} s; "
                    "leave the option out to add files with the index's settings"
                )
        if check_precision(meta, precision, out, allow_mixed):
            with _merge_lock(out):  # index.json is read, changed and written under the lock a merge writes it under
                meta = read_meta(out)
                meta["precision"] = index_precisions(meta) + [p for p in [precision] if p not in index_precisions(meta)]
                atomic_write_text(out / "index.json", json.dumps(meta, indent=2))
            log.warning(
                "index '%s' now mixes precisions %s (--allow-mixed-precision)", out, " + ".join(meta["precision"])
            )
        return meta
    model_window = model.window_samples / model.sampling_rate
    window_s = model_window if window_s is None else float(window_s)
    hop_s = window_s if hop_s is None else float(hop_s)
    if not 0 < window_s <= model_window + 1e-9:
        raise ValueError(f"--window must be between 0 and the model's window ({model_window:g} s), got {window_s}")
    if hop_s <= 0:
        raise ValueError(f"--hop must be positive, got {hop_s}")
    meta = {
        "format": FORMAT_VERSION,  # no "root" yet: the first merge sets it from the recordings it takes in
        "model": model_identity(model),
        "window_s": window_s,
        "hop_s": hop_s,
        "sampling_rate": int(model.sampling_rate),
        "precision": [precision],
    }
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "index.json").exists():  # another rank may have written the same meta meanwhile
        atomic_write_text(out / "index.json", json.dumps(meta, indent=2))
    return meta


def _stat(path: str) -> tuple[int, float]:
    st = os.stat(path)
    return int(st.st_size), float(st.st_mtime)


def _partial_path(parts: Path, path: str) -> Path:
    return parts / f"{_part_key(path)}.partial"  # not *.npz: merge never reads it


def _load_partial(parts: Path, path: str, precision: str) -> dict | None:
    """The windows of ``path`` embedded before a crash ({"emb", "starts", "ends"}), if its checkpoint is for
    the file as it is now and was embedded at ``precision`` (one file is never embedded at two)."""
    partial = _partial_path(parts, path)
    if not partial.exists():
        return None
    try:
        with np.load(partial) as z:
            if (int(z["size"]), float(z["mtime"])) != _stat(path):
                return None
            if (str(z["precision"]) if "precision" in z.files else "float32") != precision:
                return None
            return {"emb": list(z["embeddings"]), "starts": z["starts"].tolist(), "ends": z["ends"].tolist()}
    except Exception:  # an unreadable checkpoint: start the file again
        return None


def _is_done(parts: Path, path: str) -> bool:
    part = parts / f"{_part_key(path)}.npz"
    if not part.exists():
        return False
    try:
        with np.load(part) as z:
            return (int(z["size"]), float(z["mtime"])) == _stat(path)
    except Exception:  # an unreadable part (crash mid-write on another filesystem): embed the file again
        return False


def distributed_rank() -> tuple[int, int, object]:
    """(rank, world size, barrier or None) from RANK/WORLD_SIZE (set by ``accelerate launch`` and
    torchrun), else (0, 1, None). The barrier lets rank 0 merge once every rank has written its parts.
    A launcher that started one process where several were asked for raises
    :class:`~biolingual.errors.LaunchError` (:func:`~biolingual.device.check_launch_size`)."""
    from ..device import check_launch_size

    world = check_launch_size("-m biolingual index ...")
    rank = int(os.environ.get("RANK", "0"))
    if world <= 1:
        return 0, 1, None
    try:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # only a barrier is needed: gloo works on CPU and beside any GPU
        return rank, world, dist.barrier
    except Exception as e:  # a launcher without a rendezvous: the split still works and the merge happens at load
        log.warning("no process group (%s); each rank indexes its share and the merge happens at the next load", e)
        return rank, world, None


@dataclass
class IndexReport:
    added: list[str]
    already: list[str]
    skipped: dict[str, str]
    windows: int
    resumed: int = 0  # windows restored from checkpoints of files interrupted mid-way, not embedded again


def _lower_priority() -> None:
    """Run the calling thread at the lowest priority (Linux; elsewhere a no-op). The decoder runs beside torch's
    threads, which already take every core: at equal priority it slowed their parallel regions by about what
    decoding ahead saved; niced, it takes the cycles they leave (2 cores, median of interleaved runs: tiny,
    30 min of audio, 1.78 s equal, 1.72 s niced; base, 6 min, 4.47 s and 4.30 s)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def default_decode_workers(device, cpus: int | None = None, local_processes: int | None = None) -> int:
    """Decode threads per indexing process when none is asked for. On a CPU, 1: torch's threads already take
    every core, and the one decoder runs niced in the cycles they leave. On a GPU the model waits on decoding
    (one thread reads ~24 h of 48 kHz FLAC per minute, a GPU embeds far more), so the node's cores are shared
    among its processes (``local_processes``: LOCAL_WORLD_SIZE, else 1), one left to each process's main
    thread, at most 8 each."""
    import torch

    if torch.device(device).type == "cpu":
        return 1
    cpus = cpus or os.cpu_count() or 1
    local = local_processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or "1")
    return max(1, min(8, cpus // max(1, local) - 1))


def _put(out: queue.Queue, message: tuple, stop: threading.Event) -> bool:
    """Put ``message`` on ``out`` unless ``stop`` is set first (False then): a worker blocked on a full queue
    whose reader has gone (an error in the main loop) must still end."""
    while not stop.is_set():
        try:
            out.put(message, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _decoder(
    paths: Sequence[str],
    rate: int,
    window: int,
    hop: int,
    out: queue.Queue,
    stop: threading.Event,
    skip: dict[str, int],
) -> None:
    """One decode worker: the windows of ``paths``, file after file, onto ``out`` as ("window", path, Window)
    messages, each file closed by ("done", path, None) or ("error", path, exception). Runs at the lowest
    priority (:func:`_lower_priority`); soundfile and soxr release the GIL, so workers decode in parallel.
    The first ``skip[path]`` windows of a file (embedded before a crash) are decoded but not sent: decoding
    from the start keeps the resampler's state, so the windows that follow are exactly those of an
    uninterrupted run."""
    from ..windows import iter_windows

    _lower_priority()
    for path in paths:
        if stop.is_set():
            return
        try:
            for i, w in enumerate(iter_windows(path, rate, window, hop)):
                if i >= skip.get(path, 0) and not _put(out, ("window", path, w), stop):
                    return
            message = ("done", path, None)
        except (AudioError, OSError, RuntimeError, ValueError) as e:
            message = ("error", path, e)
        if not _put(out, message, stop):
            return


def decoded_windows(
    paths: Sequence[str],
    rate: int,
    window: int,
    hop: int,
    workers: int = 1,
    ahead: int = 16,
    skip: dict[str, int] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[tuple]:
    """The messages of :func:`_decoder` for every file of ``paths``, in the order of ``paths`` and of each
    file's windows, whatever ``workers`` is: file i is decoded by worker i % ``workers`` into that worker's
    own queue of ``ahead`` messages, and read from there in turn. So the batches the model sees, and the
    embeddings, are those of one worker; the workers decode the next files while the current one is embedded
    (a single file is decoded by one worker: it runs at most ``ahead`` windows in front of the model).
    Setting ``stop`` (or closing the generator) ends the workers."""
    stop = stop or threading.Event()
    workers = max(1, min(int(workers), len(paths) or 1))
    queues = [queue.Queue(maxsize=max(1, ahead)) for _ in range(workers)]
    threads = [
        threading.Thread(
            target=_decoder,
            args=(paths[w::workers], rate, window, hop, queues[w], stop, skip or {}),
            daemon=True,
            name=f"biolingual-decode-{w}",
        )
        for w in range(workers)
    ]
    for t in threads:
        t.start()
    try:
        for i in range(len(paths)):
            source = queues[i % workers]
            while True:
                message = source.get()
                yield message
                if message[0] != "window":
                    break
    finally:
        stop.set()


def share_by_duration(
    files: Sequence[str], world_size: int, durations: Sequence[float] | None = None
) -> list[list[str]]:
    """``files`` split over ``world_size`` ranks with near-equal seconds of audio each: longest first, each onto
    the rank with the least audio so far (the lower rank on a tie; equal lengths by path), so the split is the
    same in every process. Each share keeps the order of ``files``. ``durations`` default to the files' headers
    (:func:`_duration`); a file whose length is unknown (unreadable, m4a) counts as the mean of the known ones.
    Splitting by count instead left one rank with the long recordings and the others idle at the end."""
    durations = [_duration(f) for f in files] if durations is None else list(durations)
    known = [d for d in durations if d > 0]
    fill = sum(known) / len(known) if known else 1.0
    weight = [d if d > 0 else fill for d in durations]
    loads = [0.0] * world_size
    owner = [0] * len(files)
    for i in sorted(range(len(files)), key=lambda i: (-weight[i], files[i])):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owner[i] = rank
        loads[rank] += weight[i]
    return [[f for f, o in zip(files, owner) if o == rank] for rank in range(world_size)]


@dataclass
class _Rows:
    """One recording's rows while it is being indexed: the times of every window decoded so far, the
    embeddings of those embedded (a prefix of them), how many of those the checkpoint holds, and when
    the checkpoint was written."""

    emb: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    ends: list = field(default_factory=list)
    saved: int = 0
    checkpoint_at: float = field(default_factory=time.monotonic)


class IndexWriter:
    """The index folder's side of :func:`build_index`: everything written to ``out``, nothing decoded or embedded.

    In: window times (:meth:`add_window`) and, in the same order, their embeddings (:meth:`add_embeddings`),
    then the end of each recording (:meth:`finish`) or its failure (:meth:`skip`). Out: ``parts/<key>.npz``
    per recording, written atomically; checkpoints of recordings in progress; ``skipped-<rank>.tsv``;
    ``merged/`` (:meth:`close`); and :attr:`report`. Opening checks index.json against the model and the
    window and hop asked for (or creates it).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        model,
        window_s: float | None,
        hop_s: float | None,
        rank: int = 0,
        checkpoint_s: float = 30.0,
        precision: str = "float32",
        allow_mixed_precision: bool = False,
    ):
        self.out = Path(out)
        self.precision = precision
        self.meta = _open_meta(self.out, model, window_s, hop_s, precision, allow_mixed_precision)
        self.parts = self.out / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.checkpoint_s = checkpoint_s
        self.report = IndexReport([], [], {}, 0)
        self.resumed: dict[str, int] = {}  # windows of each file restored from its checkpoint
        self.resumed_s = 0.0  # seconds of audio those windows cover
        self._rows: dict[str, _Rows] = {}

    def start(self, files: Sequence[str]) -> list[str]:
        """The files of ``files`` still to index (those with a current part are counted as already in the
        index), after restoring the checkpoints of those interrupted mid-way."""
        todo = []
        root, records = _trusted_records(self.out)
        for f in files:
            done = os.path.isfile(f) and (_is_done(self.parts, f) or _is_merged(records, root, f))
            (self.report.already if done else todo).append(f)
        for f in todo:
            if (rec := _load_partial(self.parts, f, self.precision)) is not None:
                self._rows[f] = _Rows(rec["emb"], rec["starts"], rec["ends"], saved=len(rec["emb"]))
                self.resumed[f] = len(rec["starts"])
                self.resumed_s += rec["ends"][-1] if rec["ends"] else 0.0
        self.report.resumed = sum(self.resumed.values())
        return todo

    def add_window(self, path: str, start: float, end: float) -> float:
        """Record a decoded window of ``path``; returns the seconds of audio it adds (for the progress bar)."""
        rows = self._rows.setdefault(path, _Rows())
        advance = end - (rows.ends[-1] if rows.ends else 0.0)
        rows.starts.append(start)
        rows.ends.append(end)
        return advance

    def add_embeddings(self, paths: Sequence[str], embeddings: np.ndarray) -> None:
        """Embeddings of the next windows (row i belongs to ``paths[i]``), in the order the windows were
        added; a file whose checkpoint is older than ``checkpoint_s`` is checkpointed."""
        for path, e in zip(paths, embeddings):
            self._rows[path].emb.append(e)
        now = time.monotonic()
        for path in set(paths):
            rows = self._rows[path]
            if len(rows.emb) > rows.saved and now - rows.checkpoint_at >= self.checkpoint_s:
                self._checkpoint(path)

    def _checkpoint(self, path: str) -> None:
        rows = self._rows[path]
        n = len(rows.emb)  # embedded windows: a prefix of the file's windows
        size, mtime = _stat(path)
        arrays = dict(
            embeddings=np.stack(rows.emb),
            starts=np.array(rows.starts[:n]),
            ends=np.array(rows.ends[:n]),
            size=np.array(size),
            mtime=np.array(mtime),
            precision=np.array(self.precision),
        )
        atomic_write(_partial_path(self.parts, path), lambda f: np.savez(f, **arrays))
        rows.saved, rows.checkpoint_at = n, time.monotonic()
        fault_point("index.file_checkpoint")  # crash tests: killed mid-file, with these n windows saved

    def skip(self, path: str, reason: str) -> None:
        """Leave ``path`` out of the index, with ``reason`` in the report (its checkpoint goes too)."""
        self._rows.pop(path, None)
        self.report.skipped[path] = reason
        _partial_path(self.parts, path).unlink(missing_ok=True)
        log.warning("skipped %s: %s", path, reason)

    def finish(self, path: str) -> None:
        """Write the part of ``path``, every window of which has been embedded."""
        rows = self._rows.pop(path)
        embeddings = np.stack(rows.emb)
        bad = int((~np.isfinite(embeddings).all(axis=1)).sum())
        if bad:  # checked here, where the rows are in memory anyway: a NaN row would rank first or vanish
            self.skip(path, f"the model gave NaN or infinite embeddings for {bad} of its {len(embeddings)} windows")
            return
        size, mtime = _stat(path)
        arrays = dict(
            embeddings=embeddings,
            starts=np.array(rows.starts),
            ends=np.array(rows.ends),
            path=np.array(path),
            size=np.array(size),
            mtime=np.array(mtime),
            precision=np.array(self.precision),
        )
        atomic_write(self.parts / f"{_part_key(path)}.npz", lambda f: np.savez(f, **arrays))
        _partial_path(self.parts, path).unlink(missing_ok=True)
        fault_point("index.file_done")  # crash tests: killed between files, this one's part written
        self.report.added.append(path)
        self.report.windows += len(rows.starts)

    def close(self, barrier=None) -> IndexReport:
        """Write this rank's skipped-<rank>.tsv (or remove a stale one); after ``barrier`` (every rank done),
        rank 0 merges the parts."""
        skipped = self.out / f"skipped-{self.rank}.tsv"
        if self.report.skipped:
            atomic_write_text(skipped, "".join(f"{p}\t{e}\n" for p, e in self.report.skipped.items()))
        elif skipped.exists():
            skipped.unlink()
        if barrier is not None:
            barrier()
        if self.rank == 0:
            # repair: rows of merged/ found damaged when this run started were embedded again (see start); any still
            # bad belong to recordings not given this time, left out with a warning naming them
            merge(self.out, repair=True)
            try:
                open_merged(self.out)
            except IndexCorruptError as e:  # damaged since it was written, and no part came to replace it
                log.warning("%s\nrewriting it without the damaged rows", e)
                merge(self.out, force=True, repair=True)
        return self.report


def _embed(model, windows: Sequence[np.ndarray]) -> np.ndarray:
    """float16 embeddings of a batch of windows; shorter windows are repeat-padded, as everywhere."""
    import torch

    from ..audio import repeat_pad

    waves = np.stack([repeat_pad(w, model.window_samples) for w in windows])
    return model.encode_audio(torch.from_numpy(waves).to(model.device)).cpu().numpy().astype(np.float16)


def build_index(
    inputs: Iterable[str | os.PathLike],
    model,
    out: str | os.PathLike,
    window_s: float | None = None,
    hop_s: float | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | str | None = None,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    checkpoint_s: float = 30.0,
    allow_mixed_precision: bool = False,
    decode_workers: int | None = None,
) -> IndexReport:
    """Embed every window of every audio file under ``inputs`` into the index folder ``out``.

    Files already in the index (same size and modification time) are skipped, so re-running after a
    crash resumes and re-running after adding files indexes only the new ones. A file being embedded is
    checkpointed at most every ``checkpoint_s`` seconds, so a crash in the middle of a long recording
    loses at most that much work on it. Unreadable files are skipped and listed in the report (and in
    ``skipped-<rank>.tsv``).

    ``batch_size`` None takes the model's :attr:`~biolingual.BioLingual.default_audio_batch`, as ``embed_audio``
    does (4 windows on a CPU: ``base`` indexed 24 windows in 2.6 s at 4 against 2.9 s at 16 on 2 cores).

    ``dtype`` is the precision (auto, float32, bfloat16, int8, float16 or a torch dtype; default: the
    model's :attr:`~biolingual.BioLingual.precision`), recorded in index.json. Adding files to an index
    built at another precision raises :class:`SearchIndexError` unless ``allow_mixed_precision``.

    Several processes (``world_size``) share the files by duration (:func:`share_by_duration`), not by count.

    ``decode_workers`` threads decode ahead of the model (None: :func:`default_decode_workers`, 1 on a CPU,
    more on a GPU); the windows reach the model in the same order, so the index is the same for any number.

    This is the loop: decode workers (:func:`decoded_windows`) read windows, batches of them are embedded
    here, and an :class:`IndexWriter` writes what comes out.
    """
    barrier = None
    if rank is None or world_size is None:
        rank, world_size, barrier = distributed_rank()
    precision = model.resolve_precision(dtype)
    batch_size = batch_size or model.default_audio_batch
    workers = default_decode_workers(model.device) if decode_workers is None else int(decode_workers)
    if workers < 1:
        raise ValueError(f"decode_workers must be at least 1, got {decode_workers}")
    writer = IndexWriter(out, model, window_s, hop_s, rank, checkpoint_s, precision, allow_mixed_precision)
    files = find_audio_files(inputs)
    durations = {f: _duration(f) for f in files} if world_size > 1 else {}  # headers only: ~1 ms a file
    share = share_by_duration(files, world_size, [durations[f] for f in files])[rank] if world_size > 1 else files
    todo = writer.start(share)
    rate = model.sampling_rate
    window = int(round(writer.meta["window_s"] * rate))
    hop = int(round(writer.meta["hop_s"] * rate))

    stop = threading.Event()
    # each worker runs up to 4 batches ahead, as the one decoder did: memory grows with the workers, not the files
    messages = decoded_windows(todo, rate, window, hop, workers, 4 * batch_size, writer.resumed, stop)
    batch: list[tuple[str, np.ndarray]] = []  # (file, window samples) decoded, not yet embedded
    done_waiting: list[str] = []  # finished decoding, waiting for their last windows' batch
    total_s = sum(durations[f] if f in durations else _duration(f) for f in todo)
    bar = tqdm(
        total=round(total_s, 1),
        desc=f"indexing{f' (rank {rank})' if world_size > 1 else ''}",
        disable=not progress,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]",
    )
    bar.update(writer.resumed_s)
    try:
        with model.inference(precision):
            for kind, path, item in messages:
                if kind == "error":
                    batch = [b for b in batch if b[0] != path]
                    writer.skip(path, str(item))
                    continue
                if kind == "done":
                    done_waiting.append(path)
                else:
                    bar.update(writer.add_window(path, item.start, item.end))
                    batch.append((path, item.samples))
                    if len(batch) >= batch_size:
                        writer.add_embeddings([p for p, _ in batch], _embed(model, [w for _, w in batch]))
                        batch = []
                pending = {p for p, _ in batch}
                for p in [p for p in done_waiting if p not in pending]:
                    done_waiting.remove(p)
                    writer.finish(p)
            if batch:
                writer.add_embeddings([p for p, _ in batch], _embed(model, [w for _, w in batch]))
            for p in done_waiting:
                writer.finish(p)
    finally:
        stop.set()
        messages.close()
        bar.close()
    return writer.close(barrier)


def _duration(path: str) -> float:
    import soundfile as sf

    try:
        return sf.info(path).duration
    except Exception:  # unknown before decoding (e.g. m4a); the bar just undercounts
        return 0.0


# ---- the merged view -------------------------------------------------------------------------


@dataclass
class IndexData:
    meta: dict
    embeddings: np.ndarray  # float16 [N, D], memory-mapped
    starts: np.ndarray  # float64 [N] seconds
    ends: np.ndarray
    file_ids: np.ndarray  # int32 [N] into files
    files: list[str]
    folder: Path
    # the largest | |row| - 1 | of the embeddings, from merged/check.json (None where an older merge did not record
    # it): with it exact search can scan by inner product and still prove its candidates hold the best cosines
    norm_deviation: float | None = None

    def __len__(self) -> int:
        return len(self.starts)


def _part_list(parts: Path) -> list[list]:
    """parts/ as format 1 stamped a merge with it: [name, mtime_ns, size] per part."""
    return [[p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in sorted(parts.glob("*.npz"))]


def _merge_lock(index_dir: Path):
    """The lock merges and every change of index.json are made under (one at a time, across processes)."""
    return held(Path(index_dir) / ".merge.lock", what=f"the index '{index_dir}'")


def _relative(root: str | None, path: str) -> str:
    """``path`` relative to ``root`` (with ``..`` outside it); as it is where there is no root or no relative path
    (another drive on Windows)."""
    if not root:
        return path
    try:
        return os.path.relpath(os.path.abspath(path), root)
    except ValueError:
        return path


def resolve_path(root: str | None, path: str) -> str:
    """The absolute path of a recording the index names ``path`` (relative to ``root``, or absolute)."""
    return path if not root or os.path.isabs(path) else os.path.normpath(os.path.join(root, path))


def current_path(meta: dict, path: str) -> str:
    """Where the recording an earlier root named ``path`` (an absolute path kept outside the index, such as an
    agile label's) is now: the same path relative to the newest of the index's former roots it lies under, resolved
    under the current root; ``path`` itself where it lies under none of them."""
    root = meta.get("root")
    if not root or not os.path.isabs(path) or not os.path.relpath(path, root).startswith(".."):
        return path  # under the current root already
    for old in meta.get("moved_from", []):
        rel = os.path.relpath(path, old) if os.path.isabs(path) else ""
        if rel and not rel.startswith(".."):
            return resolve_path(root, rel)
    return path


def _is_merged(records: dict[str, dict], root: str | None, path: str) -> bool:
    rec = records.get(_relative(root, path))
    return rec is not None and rec["size"] is not None and (int(rec["size"]), float(rec["mtime"])) == _stat(path)


def _bad_part(index_dir: Path, part: Path, recording: str | None, what: str) -> IndexCorruptError:
    again = (
        f"delete it and run `biolingual index {recording} --out {index_dir}` to embed that recording again"
        if recording
        else f"delete it and run `biolingual index` on that recording with --out {index_dir} to embed it again"
    )
    return IndexCorruptError(
        f"index part '{part}'{f' (recording {recording!r})' if recording else ''} is corrupt: {what}; {again}"
    )


def _read_part(index_dir: Path, part: Path, dim: int) -> dict:
    """A part's arrays, checked: every array as long as the others, embeddings [n, dim] and finite, times finite."""
    try:
        with np.load(part) as z:
            arrays = {k: z[k] for k in ("embeddings", "starts", "ends", "path")}
    except Exception as e:  # not a zip, a member missing or truncated
        raise _bad_part(index_dir, part, None, f"unreadable ({e})") from e
    emb, recording = arrays["embeddings"], str(arrays["path"])
    n = len(arrays["starts"])
    if emb.shape != (n, dim) or len(arrays["ends"]) != n:
        raise _bad_part(
            index_dir,
            part,
            recording,
            f"embeddings of shape {emb.shape}, {n} starts and {len(arrays['ends'])} "
            f"ends, expected ({n}, {dim}), {n} and {n}",
        )
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        raise _bad_part(
            index_dir,
            part,
            recording,
            f"{len(bad)} of its {n} windows have NaN or infinite embeddings "
            f"(the first at {float(arrays['starts'][bad[0]]):g} s)",
        )
    if not (np.isfinite(arrays["starts"]).all() and np.isfinite(arrays["ends"]).all()):
        raise _bad_part(index_dir, part, recording, "NaN or infinite window times")
    return arrays


def _part_head(index_dir: Path, part: Path) -> dict:
    """What a pending part says of its recording, without its embeddings: path, size, mtime, precision, rows, and
    the part file's own [size, mtime_ns] (how a merge knows a part it already took in)."""
    try:
        st = part.stat()
        with np.load(part) as z:
            return {
                "file": part,
                "path": str(z["path"]),
                "size": int(z["size"]),
                "mtime": float(z["mtime"]),
                "precision": str(z["precision"]) if "precision" in z.files else "float32",
                "rows": int(z["starts"].shape[0]),
                "part": [int(st.st_size), int(st.st_mtime_ns)],
            }
    except Exception as e:  # not a zip, a member missing or truncated
        raise _bad_part(index_dir, part, None, f"unreadable ({e})") from e


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def _corrupt(index_dir: Path, what: str) -> IndexCorruptError:
    return IndexCorruptError(
        f"the index '{index_dir}' is corrupt: {what}; re-index with `biolingual index <its recordings> --out "
        f"{index_dir}`, which embeds again the recordings whose rows are damaged and keeps the others"
    )


@dataclass
class _Merged:
    """A format-2 merged/ as a merge reads it: its records (each with its first row), and its arrays as far as
    they could be read (None: unreadable)."""

    records: list[dict]
    embeddings: np.ndarray | None
    starts: np.ndarray | None
    ends: np.ndarray | None
    checked: bool = False  # check.json says every row of embeddings.npy, as it is now, was found finite

    def rows_ok(self, rec: dict, dim: int) -> bool:
        """Whether every row of ``rec`` is there, finite and timed (reads its embeddings unless ``checked``)."""
        lo, hi = rec["row"], rec["row"] + rec["rows"]
        arrays = (self.embeddings, self.starts, self.ends)
        if any(a is None or len(a) < hi for a in arrays) or self.embeddings.shape[1:] != (dim,):
            return False
        return bool(
            (
                self.checked
                or all(np.isfinite(self.embeddings[i : min(hi, i + 65536)]).all() for i in range(lo, hi, 65536))
            )
            and np.isfinite(self.starts[lo:hi]).all()
            and np.isfinite(self.ends[lo:hi]).all()
        )


def _records(merged: Path) -> list[dict]:
    """merged/records.json's records, each with its first row ("row"); raises OSError, ValueError, KeyError or
    TypeError where it is missing or unreadable."""
    records = json.loads((merged / "records.json").read_text())["records"]
    row = 0
    for rec in records:
        rec["row"], row = row, row + int(rec["rows"])
        if not isinstance(rec["path"], str):
            raise TypeError(f"a record's path is {rec['path']!r}")
    return records


def _records_from_rows(index_dir: Path) -> list[dict]:
    """Records rebuilt from merged/files.json and file_ids.npy where records.json is lost: each recording's
    rows, without the size and mtime of its file (so a run given it embeds it again, and the others keep theirs)."""
    merged = index_dir / "merged"
    try:
        files = json.loads((merged / "files.json").read_text())
        file_ids = np.load(merged / "file_ids.npy")
        counts = np.bincount(file_ids, minlength=len(files)) if len(file_ids) else np.zeros(len(files), int)
        if len(counts) != len(files) or not np.array_equal(file_ids, np.repeat(np.arange(len(files)), counts)):
            raise ValueError("file_ids.npy does not hold each recording's rows together, in files.json's order")
    except (OSError, ValueError, TypeError) as e:
        raise _corrupt(index_dir, f"merged/records.json is lost and cannot be rebuilt ({e})") from e
    records, row = [], 0
    for f, c in zip(files, counts.tolist()):
        records.append({"path": f, "size": None, "mtime": None, "precision": None, "rows": c, "part": None, "row": row})
        row += c
    return records


def _read_merged(index_dir: Path, rebuild: bool = False) -> _Merged | None:
    """merged/ with its records, or None where there is none to take rows from: no merged/, or one of format 1
    (no records.json, recordings by absolute path), whose rows are all in parts/ too. Where records.json is
    missing or unreadable: :class:`IndexCorruptError`, or with ``rebuild`` the records rebuilt from the rows
    (:func:`_records_from_rows`), with a warning."""
    merged = index_dir / "merged"
    if not merged.is_dir():
        return None
    try:
        records = _records(merged)
    except FileNotFoundError:
        try:
            files = json.loads((merged / "files.json").read_text())
        except (OSError, ValueError):
            files = []
        if isinstance(files, list) and all(isinstance(f, str) and os.path.isabs(f) for f in files):
            return None  # format 1: derived from the parts
        problem = "merged/records.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = f"merged/records.json is unreadable ({e!r})"
    else:
        problem = None
    if problem:
        if not rebuild:
            raise _corrupt(index_dir, problem)
        records = _records_from_rows(index_dir)
        log.warning("%s: rebuilt from the rows (the recordings given are embedded again)", problem)

    def load(name, **kw):
        try:
            return np.load(merged / name, **kw)
        except (OSError, ValueError):
            return None

    old = _Merged(records, load("embeddings.npy", mmap_mode="r"), load("starts.npy"), load("ends.npy"))
    try:  # as open_merged trusts check.json: the rows were read once, need not be read twice per merge
        check = json.loads((merged / "check.json").read_text())
        old.checked = (
            old.embeddings is not None
            and check["rows"] == len(old.embeddings)
            and check["embeddings"] == _stamp(merged / "embeddings.npy")
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return old


def _trusted_records(index_dir: str | os.PathLike) -> tuple[str | None, dict[str, dict]]:
    """(root, {relative path: record}) of the recordings merged/ holds whole: all of them when merged/ passes
    :func:`open_merged`'s checks; otherwise those whose rows are all there and finite, with a warning (the others
    are embedded again by the writer, and their new parts replace them)."""
    index_dir = Path(index_dir)
    root = read_meta(index_dir).get("root")
    try:
        merged = _read_merged(index_dir, rebuild=True)
    except IndexCorruptError as e:
        log.warning("%s\nembedding again every recording given", e)
        return root, {}
    if merged is None:
        return root, {}
    try:
        open_merged(index_dir)
        return root, {r["path"]: r for r in merged.records}
    except IndexCorruptError as e:
        dim = read_meta(index_dir)["model"]["dim"]
        good = {r["path"]: r for r in merged.records if merged.rows_ok(r, dim)}
        log.warning(
            "%s\n%d of its %d recordings are whole; the others given are embedded again",
            e,
            len(good),
            len(merged.records),
        )
        return root, good


def _is_current(index_dir: Path, meta: dict) -> bool:
    """Nothing to merge: no pending part, and a merged/ of this format."""
    parts = index_dir / "parts"
    return (
        meta.get("format", 1) >= 2
        and (index_dir / "merged" / "records.json").is_file()
        and not (parts.is_dir() and any(parts.glob("*.npz")))
    )


def _v1_current(index_dir: Path) -> bool:
    """A format-1 index whose merged/ holds its parts (as format 1 judged it)."""
    try:
        listing = json.loads((index_dir / "merged" / "parts.json").read_text())
    except (OSError, ValueError):
        return False
    parts = index_dir / "parts"
    return listing == (_part_list(parts) if parts.is_dir() else [])


def merge(index_dir: str | os.PathLike, force: bool = False, repair: bool = False) -> Path:
    """Fold the pending parts into merged/ (see the module docstring), unless there are none.

    Every row is checked on the way (lengths agree, embeddings and times finite): the rows pass through memory
    here anyway, so the check costs no extra read. A bad part raises :class:`IndexCorruptError` naming it; so
    do damaged rows of merged/ that no pending part replaces, unless ``repair`` (then they are left out, with a
    warning naming their recordings). ``force`` rewrites (and so re-checks) a merged/ that has nothing new.
    An index of format 1 is converted here (a log line says so); one in a folder that cannot be written is
    left as it is while its merged/ is current, and opens as before.
    """
    index_dir = Path(index_dir)
    meta = read_meta(index_dir)
    merged = index_dir / "merged"
    if not force and _is_current(index_dir, meta):
        return merged
    if meta.get("format", 1) < 2 and not os.access(index_dir, os.W_OK) and _v1_current(index_dir):
        log.info(
            "index '%s' is of format 1 and read-only: opened as it is (converted where it can be written)", index_dir
        )
        return merged
    with _merge_lock(index_dir):
        meta = read_meta(index_dir)  # again, under the lock: another process may have merged meanwhile
        if force or not _is_current(index_dir, meta):
            _merge_locked(index_dir, meta, repair, force)
    return merged


def _merge_locked(index_dir: Path, meta: dict, repair: bool, force: bool = False) -> None:
    import shutil

    for stale in index_dir.glob(".merged.*.tmp"):  # a killed merge's (this one holds the lock)
        shutil.rmtree(stale, ignore_errors=True)
    dim = meta["model"]["dim"]
    parts = index_dir / "parts"
    heads = [_part_head(index_dir, p) for p in sorted(parts.glob("*.npz"))] if parts.is_dir() else []
    was = meta.get("format", 1)
    root = meta.get("root")
    if was < 2 or (root is None and heads):
        # the root first: a merged/ naming recordings relative to it is never there without it
        if root is None and heads:
            from .recordings import common_root

            root = common_root([h["path"] for h in heads])
        meta = {**meta, "format": FORMAT_VERSION, **({"root": root} if root else {})}
        atomic_write_text(index_dir / "index.json", json.dumps(meta, indent=2))
        fault_point("index.merge_root")  # crash tests: the root written, merged/ not yet
    try:
        old = _read_merged(index_dir, rebuild=repair)
    except IndexCorruptError as e:
        if not repair:
            raise
        log.warning("%s\nits rows are left out: index its recordings again", e)
        old = None
    # each recording once, by its path relative to the root: a pending part replaces merged/'s rows of it
    entries: dict[str, tuple[str, dict]] = {r["path"]: ("old", r) for r in (old.records if old else [])}
    taken_in = []  # pending parts this merge folds in (or finds folded in already), deleted once merged/ is swapped
    fresh = False
    for h in heads:
        rel = _relative(root, h["path"])
        kind, rec = entries.get(rel, ("", {}))
        taken_in.append(h)
        if kind == "old" and rec.get("part") == h["part"]:
            continue  # a part this merge's predecessor took in and was killed before deleting
        entries[rel] = ("part", h)
        fresh = True
    dropped = []
    if old is not None:
        for rel, (kind, rec) in list(entries.items()):
            if kind == "old" and not old.rows_ok(rec, dim):
                if not repair:
                    raise _corrupt(
                        index_dir, f"the rows of {resolve_path(root, rel)!r} in merged/ are missing or not finite"
                    )
                dropped.append(resolve_path(root, rel))
                del entries[rel]
    for recording in dropped:
        log.warning(
            "left out of '%s' (its rows were damaged): run `biolingual index %s --out %s`",
            index_dir,
            recording,
            index_dir,
        )
    if force or fresh or dropped or old is None:  # else every pending part is in merged/ already: delete them
        _write_merged(index_dir, dim, root, entries, old)
    fault_point("index.merge_swapped")  # crash tests: the new merged/ in place, the parts not yet deleted
    for h in taken_in:
        try:
            if _stamp(h["file"]) == h["part"]:  # not one rewritten since it was read
                h["file"].unlink()
                fault_point("index.merge_part_removed")  # crash tests: some parts deleted, not all
        except FileNotFoundError:
            pass
    if taken_in:
        fsync_dir(parts)
    if was < 2:
        log.warning(
            "converted index '%s' to format %d: each embedding stored once (parts/ folded into merged/), "
            "recordings named relative to %s",
            index_dir,
            FORMAT_VERSION,
            root,
        )


def _write_merged(index_dir: Path, dim: int, root: str | None, entries: dict, old: _Merged | None) -> None:
    """merged/ from ``entries`` ({relative path: ("old", record) | ("part", head)}), in path order, written beside
    the old one and swapped in atomically."""
    import shutil

    order = sorted(entries)
    n = sum(entries[rel][1]["rows"] for rel in order)
    tmp = index_dir / f".merged.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float16, shape=(n, dim))
        starts, ends, file_ids = np.zeros(n), np.zeros(n), np.zeros(n, np.int32)
        records, row, deviation = [], 0, 0.0
        for i, rel in enumerate(order):
            kind, src = entries[rel]
            count = src["rows"]
            if kind == "part":
                arrays = _read_part(index_dir, src["file"], dim)
                if len(arrays["starts"]) != count:
                    raise _bad_part(index_dir, src["file"], src["path"], "it changed while the index was merged")
                emb[row : row + count] = arrays["embeddings"]
                deviation = max(deviation, _norm_deviation(arrays["embeddings"]))
                starts[row : row + count], ends[row : row + count] = arrays["starts"], arrays["ends"]
            else:  # rows of the old merged/, checked by rows_ok; copied a block at a time (bounded memory)
                lo = src["row"]
                for b in range(0, count, 65536):
                    block = np.asarray(old.embeddings[lo + b : lo + min(count, b + 65536)])
                    emb[row + b : row + b + len(block)] = block
                    deviation = max(deviation, _norm_deviation(block))
                starts[row : row + count] = old.starts[lo : lo + count]
                ends[row : row + count] = old.ends[lo : lo + count]
            file_ids[row : row + count] = i
            records.append({k: src.get(k) for k in ("size", "mtime", "precision", "rows", "part")} | {"path": rel})
            row += count
        emb.flush()
        del emb
        np.save(tmp / "starts.npy", starts)
        np.save(tmp / "ends.npy", ends)
        np.save(tmp / "file_ids.npy", file_ids)
        (tmp / "files.json").write_text(json.dumps(order))
        (tmp / "records.json").write_text(json.dumps({"format": FORMAT_VERSION, "records": records}))
        # every row was just checked finite: recorded with the file's size and mtime, so opening the index
        # later need not read 10 GB again to know it (open_merged re-checks only when they changed); and how far
        # the rows' lengths are from 1, which exact search's inner-product scan needs
        (tmp / "check.json").write_text(
            json.dumps(
                {"rows": n, "dim": dim, "embeddings": _stamp(tmp / "embeddings.npy"), "norm_deviation": deviation}
            )
        )
        (tmp / "parts.json").write_text("[]")  # parts/ once this merge has deleted them (see the module docstring)
        fault_point("index.merge_written")  # crash tests: the new merged/ written, not swapped in
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        old.embeddings = None  # the old rows' memory map, before the old folder is removed
    replace_dir(tmp, index_dir / "merged")  # readers see the old merged/ or the new one, never neither


def _norm_deviation(rows: np.ndarray) -> float:
    """The largest | |row| - 1 | of ``rows`` (0 for none), 8,192 rows at a time in float32 (a float64 copy of a
    131,072-row block took 512 MB), plus 1e-6 for float32's rounding of the lengths: a bound, never an underestimate."""
    deviation = 0.0
    for start in range(0, len(rows), 8192):
        x = np.asarray(rows[start : start + 8192], np.float32)
        deviation = max(deviation, float(np.abs(np.sqrt(np.einsum("ij,ij->i", x, x)) - 1.0).max()) + 1e-6)
    return deviation


def _full_check(embeddings: np.ndarray) -> tuple[int, float]:
    """(rows of ``embeddings`` with a NaN or infinite value, the largest | |row| - 1 | of the others), read chunk by
    chunk (bounded memory)."""
    bad, deviation = 0, 0.0
    for start in range(0, len(embeddings), 1 << 17):
        block = np.asarray(embeddings[start : start + (1 << 17)])
        finite = np.isfinite(block).all(axis=1)
        bad += int((~finite).sum())
        deviation = max(deviation, _norm_deviation(block[finite]))
    return bad, deviation


def open_merged(index_dir: str | os.PathLike) -> IndexData:
    """Open merged/ as it is (no merging), after checking that its arrays agree and its embeddings are finite.

    Lengths, file ids and times are checked on every open (vectorised, in memory). The finiteness of the
    embeddings is taken from check.json when embeddings.npy still has the size and mtime recorded there
    (written by :func:`merge`, which checked every row); otherwise (an index merged by an older version, or
    a file changed since) every row is read once and the result recorded. Raises :class:`IndexCorruptError`.
    """
    index_dir = Path(index_dir)
    meta = read_meta(index_dir)
    merged = index_dir / "merged"

    def corrupt(what: str) -> IndexCorruptError:
        return _corrupt(index_dir, what)

    try:
        data = IndexData(
            meta=meta,
            embeddings=np.load(merged / "embeddings.npy", mmap_mode="r"),
            starts=np.load(merged / "starts.npy"),
            ends=np.load(merged / "ends.npy"),
            file_ids=np.load(merged / "file_ids.npy"),
            files=json.loads((merged / "files.json").read_text()),
            folder=index_dir,
        )
    except (OSError, ValueError) as e:  # a missing or truncated array, unreadable files.json
        raise corrupt(f"cannot read {merged} ({e})") from e
    n, dim = len(data.embeddings), meta["model"]["dim"]
    if data.embeddings.shape != (n, dim):
        raise corrupt(f"merged/embeddings.npy has shape {data.embeddings.shape}, expected (rows, {dim})")
    for name in ("starts", "ends", "file_ids"):
        if getattr(data, name).shape != (n,):
            raise corrupt(
                f"merged/{name}.npy has shape {getattr(data, name).shape}, but merged/embeddings.npy has {n} rows"
            )
    if not isinstance(data.files, list) or (
        n and not 0 <= int(data.file_ids.min()) <= int(data.file_ids.max()) < len(data.files)
    ):
        raise corrupt(
            f"merged/file_ids.npy refers to recordings that merged/files.json (of {len(data.files)}) does not list"
        )
    if not (np.isfinite(data.starts).all() and np.isfinite(data.ends).all()):
        raise corrupt("merged/starts.npy or merged/ends.npy holds NaN or infinite times")
    if not all(isinstance(f, str) for f in data.files):
        raise corrupt("merged/files.json holds something other than paths")
    if not all(os.path.isabs(f) for f in data.files) or (merged / "records.json").exists():  # format 2
        try:
            records = _records(merged)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise corrupt(f"merged/records.json is missing or unreadable ({e!r})") from e
        if [r["path"] for r in records] != data.files or sum(int(r["rows"]) for r in records) != n:
            raise corrupt("merged/records.json does not list the recordings and rows of merged/files.json")
    root = meta.get("root")  # the recordings under the index's root as it is now (see relocate)
    data.files = [resolve_path(root, f) for f in data.files]
    check_path = merged / "check.json"
    try:
        check = json.loads(check_path.read_text())
    except (OSError, ValueError):
        check = None
    stamp = _stamp(merged / "embeddings.npy")
    current = isinstance(check, dict) and {k: check.get(k) for k in ("rows", "dim", "embeddings")} == {
        "rows": n,
        "dim": dim,
        "embeddings": stamp,
    }
    if current and isinstance(check.get("norm_deviation"), (int, float)):
        data.norm_deviation = float(check["norm_deviation"])
    if not current:
        bad, data.norm_deviation = _full_check(data.embeddings)
        if bad:
            raise corrupt(f"{bad} of the {n} rows of merged/embeddings.npy hold NaN or infinite values")
        try:
            atomic_write_text(
                check_path,
                json.dumps({"rows": n, "dim": dim, "embeddings": stamp, "norm_deviation": data.norm_deviation}),
            )
        except OSError:  # a read-only index: checked again next time
            pass
    return data


def load_index(index_dir: str | os.PathLike) -> IndexData:
    """The merged index (merging first when parts were added since the last merge), checked: arrays that
    disagree in length or NaN/infinite embeddings raise :class:`IndexCorruptError` saying how to rebuild."""
    merge(index_dir)
    return open_merged(index_dir)


@dataclass
class Relocation:
    old_root: str | None
    new_root: str
    recordings: int
    found: int
    missing: list[str]  # the first few recordings not found under the new root (absolute paths)


def relocate(index_dir: str | os.PathLike, new_root: str | os.PathLike) -> Relocation:
    """Re-point the index at ``new_root``: the folder that now holds what its root held (an archive mounted
    elsewhere). Pending parts are merged first, so that they too are named relative to the old root. Refused
    (:class:`SearchIndexError`) when none of the index's recordings is under ``new_root``: a wrong folder."""
    index_dir, new_root = Path(index_dir), os.path.abspath(new_root)
    with _merge_lock(index_dir):
        meta = read_meta(index_dir)
        if not _is_current(index_dir, meta):
            _merge_locked(index_dir, meta, repair=False)
            meta = read_meta(index_dir)
        try:
            files = json.loads((index_dir / "merged" / "files.json").read_text())
        except (OSError, ValueError) as e:
            raise _corrupt(index_dir, f"cannot read merged/files.json ({e})") from e
        old_root = meta.get("root")
        if not files or not old_root:
            raise SearchIndexError(f"the index '{index_dir}' holds no recordings yet: there is nothing to re-point")
        there = [os.path.exists(resolve_path(new_root, f)) for f in files]
        if not any(there):
            raise SearchIndexError(
                f"none of the index's {len(files)} recordings is under '{new_root}' (the first would be "
                f"'{resolve_path(new_root, files[0])}'); give the folder that now holds what '{old_root}' held"
            )
        # the roots it had, newest first: what was written with a recording's path under one of them (an agile
        # label) finds the recording under the new root (current_path)
        moved_from = [old_root] + [r for r in meta.get("moved_from", []) if r not in (old_root, new_root)]
        atomic_write_text(
            index_dir / "index.json", json.dumps({**meta, "root": new_root, "moved_from": moved_from}, indent=2)
        )
    missing = [resolve_path(new_root, f) for f, ok in zip(files, there) if not ok]
    return Relocation(old_root, new_root, len(files), len(files) - len(missing), missing[:5])
