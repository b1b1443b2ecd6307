"""``build``: list records -> fetch, process and caption them -> pack webdataset shards, resumably.

Crash safety (kill -9 at any moment, then rerun gives exactly the samples of an uninterrupted run):
- a processed record's samples are written to ``.staging/`` (write + rename) before the manifest
  marks it ``staged``; a record not marked is simply redone;
- a shard is written as ``NAME.tar.partial`` and fsynced, then one manifest transaction commits it
  with its samples, then it is renamed to ``NAME.tar`` and its staged files are deleted; at start a
  committed shard still ``.partial`` is renamed, an uncommitted ``.partial`` deleted, and leftover
  staged files of committed samples removed.

One build per output folder: ``build()`` holds the folder's lock (lock.py) for the whole run, so a
second build of the same folder (or of the same ``--partition`` part) is refused, naming the first's pid.
The parts of a partitioned build share the folder's ``.listings/`` (each catalogue listed once) and
``.rate/`` (one request clock per archive host), so N parts are no harder on an archive than one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from itertools import count, islice
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from biolingual.atomic import atomic_write_bytes, fsync_dir
from biolingual.faults import fault_point

from .captioning import make_captioner
from .clips import Rejected, make_clips
from .config import PipelineConfig
from .http import FetchError, PoliteClient
from .licenses import allowed
from .lock import build_lock, held
from .manifest import Manifest, manifest_path
from .record import Record, normalize_url
from .shards import flac_bytes, write_tar
from .sources import make_source
from .splits import assign_split, in_partition

log = logging.getLogger("data_pipeline")
EXCLUDED_HOSTS = {
    "macaulaylibrary.org": "Macaulay Library (redistribution forbidden)",
    "whoi.edu": "Watkins Marine Mammal Sound Database (no commercial use)",
}


class Builder:
    def __init__(
        self,
        config: PipelineConfig,
        out: str | Path,
        partition: tuple[int, int] = (1, 1),
        config_dir=None,
        progress: bool = True,
    ):
        self.config, self.out = config, Path(out)
        self.part, self.parts = partition
        self.progress = progress
        self.out.mkdir(parents=True, exist_ok=True)
        suffix = "" if self.parts == 1 else f"-{self.part}-of-{self.parts}"
        self.manifest = Manifest(manifest_path(self.out, self.part, self.parts))
        self.staging = self.out / f".staging{suffix}"
        self.tmp = self.staging / "downloads"
        self.sources = [make_source(s, config_dir) for s in config.sources]
        self.by_type = {}
        for cfg, src in zip(config.sources, self.sources):
            self.by_type.setdefault(cfg.type, src)
            if "max_bytes" not in cfg.options and hasattr(src, "max_bytes"):
                src.max_bytes = config.download.max_bytes
        if self.parts > 1:  # the parts share one request clock per archive host (see _share_rates)
            self._share_rates()
        self.listing_errors: list[str] = []
        try:
            self.captioner = make_captioner(config.captioner.as_dict(), self.out / f"captions{suffix}.sqlite")
        except BaseException:
            self.manifest.close()
            raise

    def _share_rates(self) -> None:
        """Point every remote source's client at a clock file in the output folder, one per archive host
        (``.rate/<host>.clock``), so the ``--partition`` runs sharing the folder keep to each source's
        ``rate`` together rather than each at the full rate."""
        for cfg, src in zip(self.config.sources, self.sources):
            client = getattr(src, "client", None)
            if not isinstance(client, PoliteClient):
                continue
            host = urlsplit(getattr(src, "base_url", "") or "").netloc or cfg.type
            client.share_rate(self.out / ".rate" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}.clock")

    # ---- the whole run ------------------------------------------------------------------------
    def run(self) -> dict:
        fault_point("build.start")  # crash tests (BIOLINGUAL_KILL_AT): manifest open, nothing recovered yet
        self.recover()
        self.list_records()
        self.process()
        self.pack(final=True)
        self.write_sizes()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.manifest.summary()

    def close(self) -> None:
        self.manifest.close()
        close = getattr(self.captioner, "close", None)
        if close:
            close()

    # ---- recovery -----------------------------------------------------------------------------
    def recover(self) -> None:
        m = self.manifest
        for name, _split, _, nbytes in m.shards():
            final, partial = self.out / name, self.out / (name + ".partial")
            if final.exists() and final.stat().st_size != nbytes:
                # not what was committed (truncated or overwritten, e.g. by a second build before the lock): redo it
                log.error(
                    "shard '%s' is %d bytes, the manifest committed %d: it is deleted and its records processed again",
                    final,
                    final.stat().st_size,
                    nbytes,
                )
                final.unlink()
            elif final.exists():
                continue
            elif partial.exists():
                os.replace(partial, final)  # killed between the commit and the rename
                continue
            else:
                log.error(
                    "shard '%s' is in the manifest but missing on disk: its records will be processed again", final
                )
            m.forget_shard(name)  # its records are redone; their clips in other shards are kept (see _finish)
        if m.repair_orphans():
            log.warning("records marked staged without staged samples (an older build's colliding keys) are redone")
        committed = {name for name, *_ in m.shards()}
        for partial in self.out.glob("*.tar.partial"):
            if partial.name[: -len(".partial")] not in committed:
                partial.unlink()
        waiting = m.waiting_samples()
        pending = {key for key, _, _ in waiting}
        if self.staging.exists():
            for path in self.staging.glob("*/*"):
                if path.is_file() and (path.name.split(".", 1)[0] not in pending or path.name.endswith(".tmp")):
                    path.unlink()
        lost = [
            uid
            for key, uid, split in waiting
            if not (self.staging / split / f"{key}.json").exists()
            or not (self.staging / split / f"{key}.flac").exists()
        ]
        m.redo_staged(set(lost), "staged files lost")
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- stage 1: listing ---------------------------------------------------------------------
    def list_records(self) -> None:
        for i, (cfg, source) in enumerate(zip(self.config.sources, self.sources)):
            # as earlier versions named it (the config mapping's hash), so a resumed build does not list it again
            name = f"{i}:{cfg.type}:{hashlib.sha1(json.dumps(cfg.as_dict(), sort_keys=True).encode()).hexdigest()[:12]}"
            if self.manifest.listing_done(name):
                continue
            records = self._listed(name, cfg, source)
            count = 0
            bar = tqdm(desc=f"list {cfg.type}", unit=" records", disable=not self.progress)
            with self.manifest.listing_transaction() as tx:
                try:
                    count = self._list_source(records, bar, tx)
                except Exception as e:  # one source failing (bad key, archive down) does not stop the others
                    bar.close()  # leaving the block commits what was listed
                    message = f"source #{i + 1} ({cfg.type}) stopped listing: {e}"
                    log.error("%s (what it listed is kept; rerun to list the rest)", message)
                    self.listing_errors.append(message)
                    continue
                self.manifest.mark_listing(name, count)  # in the same transaction as its last records
            bar.close()

    def _listed(self, name: str, cfg, source) -> Iterator[Record]:
        """The records of the source ``name`` (its listing name), at most ``cfg.max_records``.

        A whole build asks the source. The ``--partition`` parts of a build list the catalogue once between
        them: the first to take ``.listings/<name>.lock`` asks the source and publishes what it listed as
        ``.listings/<name>.jsonl`` (written whole, then renamed); the others wait for the lock and read that
        file, so every part sees the same records in the same order (the same duplicates and species counts).
        A listing that fails part-way is not published: its records still go into this part's manifest before
        the error is raised, and the next part to take the lock asks the source again."""
        records = source.records()
        if cfg.max_records:
            records = islice(records, int(cfg.max_records))
        if self.parts == 1:
            yield from records
            return
        shared = self.out / ".listings" / f"{name.replace(':', '-')}.jsonl"
        read, error = shared, None
        with held(shared.with_suffix(".lock")):
            if not shared.exists():
                read = shared.with_name(f".{shared.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                with open(read, "w", encoding="utf-8") as f:
                    try:
                        for rec in records:
                            f.write(rec.to_json() + "\n")
                    except Exception as e:  # what was listed is kept in this part's manifest, as a whole build keeps it
                        error = e
                    f.flush()
                    os.fsync(f.fileno())
                if error is None:
                    os.replace(read, shared)
                    fsync_dir(shared.parent)
                    read = shared
        try:
            with open(read, encoding="utf-8") as f:
                for line in f:
                    yield Record.from_json(line)
        finally:
            if read != shared:
                read.unlink(missing_ok=True)
        if error is not None:
            raise error

    def _list_source(self, records, bar, tx) -> int:
        """Adds ``records`` to the manifest inside the listing transaction ``tx``, committed every 500."""
        splits, m, count = self.config.splits, self.manifest, 0
        for rec in records:
            count += 1
            bar.update()
            dedup = normalize_url(rec.audio_url) if rec.audio_url else ""
            twin = m.find_duplicate(rec.uid, dedup, rec.aliases)
            if twin == rec.uid:
                continue  # listed by an earlier (interrupted) run
            split = assign_split(rec.uid, rec.species, splits.valid, splits.test, splits.unseen_species, splits.seed)
            mine = in_partition(dedup or rec.uid, self.part, self.parts)
            if twin:
                m.add_record(rec, dedup, split, mine, "duplicate", f"same recording as {twin}")
            else:
                why = self.exclusion(rec)
                m.add_record(rec, dedup, split, mine, "excluded" if why else "listed", why)
            if count % 500 == 0:
                tx.checkpoint()
        return count

    def exclusion(self, rec: Record) -> str:
        if rec.excluded:
            return rec.excluded
        for host, why in EXCLUDED_HOSTS.items():
            if host in rec.audio_url or host in rec.page_url:
                return f"excluded archive: {why}"
        if not rec.audio_url:
            return "no audio file (restricted or withheld)"
        if not allowed(rec.license, self.config.licenses):
            return f"licence not accepted: {rec.license or rec.license_url or 'none'}"
        if not rec.species:
            return "no species name"
        return ""

    # ---- stage 2: fetch, process, caption ----------------------------------------------------
    def process(self) -> None:
        m = self.manifest
        audio = self.config.audio
        total = m.pending_count()
        if not total:
            return
        self.tmp.mkdir(parents=True, exist_ok=True)
        workers = max(1, int(self.config.download.concurrency))
        bar = tqdm(total=total, desc="process", unit=" records", disable=not self.progress)
        species_counts: dict[str, int] = {}
        with ThreadPoolExecutor(workers) as pool:
            inflight = set()
            for _uid, split, text in m.pending():
                rec = Record.from_json(text)
                if rec.species not in species_counts:
                    species_counts[rec.species] = m.species_count(rec.species)
                chunks = audio.max_chunks if species_counts[rec.species] < audio.few_recordings else 1
                inflight.add(pool.submit(self._work, rec, split, chunks))
                if len(inflight) >= 2 * workers:
                    done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                    self._finish(done, bar)
            while inflight:
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                self._finish(done, bar)
        bar.close()

    def _finish(self, futures, bar) -> None:
        for future in futures:
            uid, stage, result = future.result()
            if stage == "staged":
                split, samples = result
                done = self.manifest.committed_keys(uid)  # a redone record's clips still in an intact shard
                for key in done:
                    (self.staging / split / f"{key}.flac").unlink(missing_ok=True)
                    (self.staging / split / f"{key}.json").unlink(missing_ok=True)
                left = [(k, b) for k, b in samples if k not in done]
                clash = self.manifest.stage_samples(uid, split, left) if left else ""
                if not left:
                    self.manifest.set_stage(uid, "written")
                if clash:  # never expected (keys are unique by construction): say so rather than lose a record
                    stage, result = "rejected", clash
                else:
                    fault_point("build.record_staged")  # its samples in .staging and marked in the manifest
            if stage != "staged":
                log.warning("%s %s: %s", stage, uid, result)
                self.manifest.set_stage(uid, stage, result)
            bar.update()
        self.pack(final=False)

    def _work(self, rec: Record, split: str, chunks: int):
        """Runs in a worker thread: returns (uid, stage, (split, samples) or reason); never raises."""
        audio = self.config.audio
        dest = self.tmp / rec.key
        path = None
        try:
            source = self.by_type[rec.source]
            path = source.fetch(rec, dest)
            clips = make_clips(
                path,
                audio.sample_rate,
                audio.clip_seconds,
                chunks,
                audio.min_seconds,
                audio.min_tail_seconds,
                audio.silence_dbfs,
            )
            captions = self.captioner.caption(rec)
            folder = self.staging / split
            folder.mkdir(parents=True, exist_ok=True)
            samples = []
            for j, chunk in enumerate(clips.chunks):
                key = rec.key if j == 0 else f"{rec.key}-c{j}"
                data = flac_bytes(chunk, audio.sample_rate)
                meta = self.sample_json(rec, captions, split, j, len(chunk) / audio.sample_rate, clips)
                atomic_write_bytes(folder / f"{key}.flac", data)
                atomic_write_bytes(folder / f"{key}.json", meta)
                samples.append((key, len(data) + len(meta)))
            fault_point("build.record_processed")  # (a worker thread) staged files written, manifest not told
            return rec.uid, "staged", (split, samples)
        except Rejected as e:
            return rec.uid, "rejected", str(e)
        except FetchError as e:
            return rec.uid, "failed" if e.transient else "rejected", f"fetch: {e}"
        except FileNotFoundError as e:
            return rec.uid, "rejected", f"fetch: {e}"
        except PermissionError as e:  # access can be granted (and a network share comes back): retried next run
            return rec.uid, "failed", f"cannot read: {e}"
        except Exception as e:  # a bad record never stops the run: it is logged and retried next run
            log.debug("unexpected error on %s:\n%s", rec.uid, traceback.format_exc())
            return rec.uid, "failed", f"{type(e).__name__}: {e}"
        finally:
            if path is not None and Path(path).parent == self.tmp:
                Path(path).unlink(missing_ok=True)

    @staticmethod
    def sample_json(rec: Record, captions: list[str], split: str, chunk: int, seconds: float, clips) -> bytes:
        return json.dumps(
            {
                "text": list(captions),
                "source": rec.source,
                "source_id": rec.source_id,
                "page_url": rec.page_url,
                "audio_url": rec.audio_url,
                "license": rec.license,
                "license_url": rec.license_url,
                "attribution": rec.attribution,
                "recordist": rec.recordist,
                "species_common": rec.species_common,
                "species_scientific": rec.species_scientific,
                "duration": round(seconds, 3),
                "original_duration": round(clips.original_seconds, 3),
                "original_sample_rate": clips.original_rate,
                "chunk": chunk,
                "split": split,
            },
            ensure_ascii=False,
        ).encode()

    # ---- stage 3: shards ----------------------------------------------------------------------
    def pack(self, final: bool) -> None:
        """Write every full shard (and, when ``final``, the remainders too)."""
        limits = self.config.shards
        bar = None
        if final:
            left = sum(-(-n // limits.max_samples) for n, _ in self.manifest.staged_totals().values())
            bar = tqdm(total=left, desc="pack", unit=" shards", disable=not self.progress or not left)
        while True:
            ready = [
                split
                for split, (n, b) in sorted(self.manifest.staged_totals().items())
                if n and (final or n >= limits.max_samples or b >= limits.max_bytes)
            ]
            if not ready:
                break
            for split in ready:
                self._pack_one(split)
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()

    def _pack_one(self, split: str) -> None:
        m, limits = self.manifest, self.config.shards
        rows, total = [], 0
        for key, nbytes in m.staged(split, limit=limits.max_samples):
            if rows and total + nbytes > limits.max_bytes:
                break
            rows.append(key)
            total += nbytes
        # this part's first free number: a lost shard's name is reused, so names stay contiguous
        used = m.shard_indices(split)
        idx = next(i for i in count(self.part - 1, self.parts) if i not in used)
        name = f"{split}-{idx:06d}.tar"
        partial = self.out / (name + ".partial")
        folder = self.staging / split
        size = write_tar(
            partial,
            (
                (k, {"flac": (folder / f"{k}.flac").read_bytes(), "json": (folder / f"{k}.json").read_bytes()})
                for k in rows
            ),
        )
        fault_point("build.shard_written")  # .partial fsynced, not committed: recovery deletes it
        m.commit_shard(name, split, idx, rows, size)
        fault_point("build.shard_committed")  # committed, still .partial: recovery renames it
        os.replace(partial, self.out / name)
        fault_point("build.shard_renamed")  # its staged files not yet deleted: recovery removes them
        for k in rows:
            (folder / f"{k}.flac").unlink(missing_ok=True)
            (folder / f"{k}.json").unlink(missing_ok=True)
        log.info("wrote %s (%d samples, %.1f MB)", name, len(rows), size / 1e6)

    def write_sizes(self) -> None:
        sizes = {name: count for name, _, count, _ in self.manifest.shards()}
        if self.parts == 1:
            atomic_write_bytes(self.out / "sizes.json", json.dumps(sizes, indent=1, sort_keys=True).encode())
            return
        atomic_write_bytes(
            self.out / f"sizes-{self.part}-of-{self.parts}.json", json.dumps(sizes, indent=1, sort_keys=True).encode()
        )
        merged = {}
        for path in sorted(self.out.glob("sizes-*-of-*.json")):
            merged.update(json.loads(path.read_text()))
        atomic_write_bytes(self.out / "sizes.json", json.dumps(merged, indent=1, sort_keys=True).encode())


def check_layout(out: Path, parts: int) -> None:
    """Refuse to mix a whole build with partition runs, or partition runs of different N, in one folder: their
    shard names overlap (ValueError saying which manifests are there)."""
    whole = (out / "manifest.sqlite").exists()
    counts = {int(p.name.rsplit("-of-", 1)[1].split(".")[0]) for p in out.glob("manifest-*-of-*.sqlite")}
    others = (counts | ({1} if whole else set())) - {parts}
    if others:
        theirs = "without --partition" if others == {1} else f"with --partition I/{max(others)}"
        ours = "without --partition" if parts == 1 else f"with --partition I/{parts}"
        raise ValueError(
            f"'{out}' was built {theirs}; this run is {ours}, and their shard names would collide: "
            f"build into another folder, or rerun {theirs}"
        )


def build(config: PipelineConfig, out, partition=(1, 1), config_dir=None, progress: bool = True) -> dict:
    """Runs (or resumes) a build; returns the manifest summary, with ``listing_errors`` of sources that failed.

    Raises lock.BuildLocked when another build holds ``out`` (or this part of it), manifest.ManifestError when
    the manifest cannot be read, ValueError when ``out`` was built with another partition count."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with build_lock(out, *partition):
        check_layout(out, partition[1])
        builder = Builder(config, out, partition, config_dir, progress)
        try:
            return {**builder.run(), "listing_errors": builder.listing_errors}
        finally:
            builder.close()
