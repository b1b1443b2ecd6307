"""perch-hoplite databases in and out: an index folder to a hoplite database, and a hoplite database to an index.

perch-hoplite's database (SQLite + USearch, ``perch_hoplite.db``) is the embedding store the field's tools share:
BirdNET-Analyzer and OpenSoundscape build embedding search and active learning on it. Its tables are deployments
(name, project, latitude, longitude), recordings (file name relative to a base path, datetime, deployment),
windows (recording, offsets [start, end] in seconds, the embedding, kept in USearch) and annotations (recording,
offsets, label, label type, provenance), plus ``hoplite_metadata``, where perch-hoplite's own embedding code keeps
``model_config`` (its ``ModelConfig``: ``model_key``, ``embedding_dim``, ``model_config``, ``logits_key``,
``logits_idxes``) and ``audio_sources`` (``audio_globs``: dataset name, base path, file glob per source).

Out (:func:`export_index`): an index folder (:mod:`.index`) and its recordings' sites and clock times
(:mod:`.recordings`) as a new database folder: one deployment per site (``project`` is the one audio source's
dataset name), each recording relative to the folder holding them all, every window with its float16 embedding
as stored, the :class:`WindowAnnotation` records given (the agile labels: :mod:`biolingual.agile.hoplite`), and
``model_config`` with ``model_key`` "biolingual" and what embedding a new query needs: the model's name and
:meth:`~biolingual.BioLingual.fingerprint`, window and hop seconds, sample rate, embedding size and precision.
The database is written in a temporary folder and renamed into place, so a crash leaves none half written.

In (:func:`import_database`): a database whose ``model_config`` is a BioLingual model with the fingerprint of
the model given (else :class:`~biolingual.errors.ModelMismatchError` naming the database and what differs; a
database without one is refused too) becomes windows of an index, through :class:`~.index.IndexWriter`, each
recording found under its audio source's base path (or ``audio_root``); out come the report and the database's
annotations as :class:`WindowAnnotation` records, and its deployments and datetimes as each recording's
:class:`~biolingual.deployments.RecordingInfo`. Neither direction loads torch: the database code needs numpy,
usearch, ml_collections, etils and absl-py (``pip install --no-deps perch-hoplite`` leaves out its notebook,
TensorFlow-zoo and plotting dependencies, which these tables do not use).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import replace_dir
from ..deployments import RecordingInfo
from ..errors import ModelMismatchError, UsageError
from ..extras import MissingExtraError
from .index import IndexReport, IndexWriter, index_precisions, load_index
from .recordings import common_root, recordings_of

log = logging.getLogger(__name__)

MODEL_KEY = "biolingual"  # hoplite's ModelConfig.model_key for BioLingual embeddings
VALUES = ("negative", "positive", "unsure")  # hoplite's LabelType 0, 1, 2 (NEGATIVE, POSITIVE, UNCERTAIN)
INSTALL = "pip install --no-deps perch-hoplite==1.0.2 'ml-collections>=0.1.1,<0.2' 'etils[epath]' usearch absl-py"


@dataclass(frozen=True)
class WindowAnnotation:
    """One annotation: a label of a stretch of a recording, as hoplite keeps it (the path as the index names it)."""

    recording: str
    start: float
    end: float
    label: str
    value: str  # positive, negative or unsure
    provenance: str


@dataclass
class ExportReport:
    deployments: int
    recordings: int
    windows: int
    annotations: int
    skipped_annotations: int = 0  # of recordings not in the index


@dataclass
class ImportReport:
    index: IndexReport
    annotations: list[WindowAnnotation] = field(default_factory=list)
    recordings: dict[str, RecordingInfo] = field(default_factory=dict)  # of the recordings imported
    missing: dict[str, str] = field(default_factory=dict)  # recording path -> why it was left out


def _hoplite():
    """perch_hoplite's SQLite + USearch database module, or MissingExtraError with the line that installs it."""
    try:
        from perch_hoplite.db import sqlite_usearch_impl
    except ModuleNotFoundError as e:
        raise MissingExtraError(
            f"perch-hoplite databases need perch-hoplite and its database's packages ({e}): {INSTALL}"
        ) from e
    return sqlite_usearch_impl


def _config_dict(value):
    from ml_collections import config_dict

    return config_dict.ConfigDict(value)


def model_config(meta: dict) -> dict:
    """hoplite's ``model_config`` (the fields of perch-hoplite's ``ModelConfig``) for an index's ``meta``."""
    return {
        "model_key": MODEL_KEY,
        "embedding_dim": int(meta["model"]["dim"]),
        "model_config": {
            "model_name": meta["model"]["name"],
            "fingerprint": meta["model"]["fingerprint"],
            "window_size_s": float(meta["window_s"]),
            "hop_size_s": float(meta["hop_s"]),
            "sample_rate": int(meta["sampling_rate"]),
            "precision": index_precisions(meta)[0],
        },
        "logits_key": None,
        "logits_idxes": None,
    }


def _file_glob(files: Sequence[str]) -> str:
    """A glob (relative to the base path) that matches the index's recordings: by their one extension, if one."""
    suffixes = {Path(f).suffix for f in files}
    return f"**/*{suffixes.pop()}" if len(suffixes) == 1 else "**/*"


def export_index(
    index_dir: str | os.PathLike,
    db_dir: str | os.PathLike,
    annotations: Iterable[WindowAnnotation] = (),
    project: str | None = None,
) -> ExportReport:
    """Write the index ``index_dir`` (and ``annotations``) as a new perch-hoplite database in ``db_dir``, which
    must not exist or be empty (see the module docstring). ``project`` (default: the index folder's name) is the
    deployments' project and the audio source's dataset name."""
    impl = _hoplite()
    index_dir, db_dir = Path(index_dir), Path(db_dir)
    if db_dir.exists() and (not db_dir.is_dir() or any(db_dir.iterdir())):
        raise UsageError(f"'{db_dir}' already exists and is not an empty folder: give a new folder for the database")
    index = load_index(index_dir)
    project = project or index_dir.resolve().name
    infos = recordings_of(index_dir, index.files)
    root = common_root(index.files)
    tmp = db_dir.parent / f".{db_dir.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    dim = int(index.meta["model"]["dim"])
    db = impl.SQLiteUSearchDB.create(db_path=str(tmp), usearch_cfg=impl.get_default_usearch_config(dim))
    try:
        db.insert_metadata("model_config", _config_dict(model_config(index.meta)))
        source = {
            "dataset_name": project,
            "base_path": root,
            "file_glob": _file_glob(index.files),
            "min_audio_len_s": 0.0,  # the index keeps recordings of any length (short ones are repeat-padded)
            "target_sample_rate_hz": -2,  # the model's own rate
            "shard_len_s": 60.0,
            "max_shards_per_file": None,
        }
        db.insert_metadata("audio_sources", _config_dict({"audio_globs": [source]}))
        places: dict[str, tuple] = {}  # site -> the first coordinates any of its recordings gives
        for f in index.files:
            info = infos[f]
            if info.site is not None and places.get(info.site, (None, None))[0] is None:
                places[info.site] = (info.latitude, info.longitude)
        sites = {site: db.insert_deployment(site, project, *place) for site, place in places.items()}
        recording_ids = {}
        for f in index.files:
            info = infos[f]
            extra = {"recorder": info.recorder} if info.recorder else {}
            recording_ids[f] = db.insert_recording(
                Path(os.path.relpath(f, root)).as_posix(), info.start, sites.get(info.site), **extra
            )
        # the rows of each recording together, by start: hoplite numbers windows in the order they are inserted
        order = np.lexsort((index.starts, index.file_ids))
        bounds = np.flatnonzero(np.diff(index.file_ids[order])) + 1
        for rows in np.split(order, bounds) if len(order) else []:
            rec = recording_ids[index.files[int(index.file_ids[rows[0]])]]
            batch = [{"recording_id": rec, "offsets": [float(index.starts[r]), float(index.ends[r])]} for r in rows]
            # "allow": the windows are new, so hoplite's per-window duplicate look-up would only cost time
            db.insert_windows_batch(batch, np.asarray(index.embeddings[rows]), handle_duplicates="allow")
        labelled, skipped = 0, 0
        for a in annotations:
            if a.recording not in recording_ids:
                skipped += 1
                log.warning("annotation of %s left out: the recording is not in the index", a.recording)
                continue
            db.insert_annotation(
                recording_ids[a.recording],
                [float(a.start), float(a.end)],
                a.label,
                VALUES.index(a.value),
                a.provenance,
                handle_duplicates="allow",
            )
            labelled += 1
        db.commit()
        windows = db.count_embeddings()
    except BaseException:
        db.db.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    db.db.close()  # the last connection: SQLite folds its write-ahead log into hoplite.sqlite
    if db_dir.exists():
        db_dir.rmdir()  # empty (checked above): the finished folder takes its place
    replace_dir(tmp, db_dir)
    return ExportReport(len(sites), len(recording_ids), windows, labelled, skipped)


def _open(db_dir: Path):
    impl = _hoplite()
    if not (db_dir / impl.HOPLITE_FILENAME).is_file():
        raise UsageError(f"'{db_dir}' is not a perch-hoplite database (it has no {impl.HOPLITE_FILENAME})")
    if not (db_dir / impl.UINDEX_FILENAME).is_file():
        raise UsageError(f"the perch-hoplite database '{db_dir}' has no {impl.UINDEX_FILENAME}: it holds no embeddings")
    try:
        return impl.SQLiteUSearchDB.create(db_path=str(db_dir), readonly=True)
    except (sqlite3.DatabaseError, ValueError, KeyError, RuntimeError) as e:  # not SQLite, no usearch_config...
        raise UsageError(f"'{db_dir}' cannot be opened as a perch-hoplite database: {e}") from None


def _metadata(db) -> dict:
    return db.get_metadata(None).to_dict()


def read_model_config(db_dir: str | os.PathLike) -> dict:
    """The ``model_config`` of the database in ``db_dir``, checked to be a BioLingual model's (model key, name,
    fingerprint, window, hop, sample rate, embedding size); :class:`ModelMismatchError` naming the database and
    what it holds otherwise. Needs no model: what any model could be compared with is checked here."""
    db_dir = Path(db_dir)
    db = _open(db_dir)
    try:
        metadata = _metadata(db)
        stored_dim = db.get_embedding_dim()
    finally:
        db.db.close()
    where = f"the perch-hoplite database '{db_dir}'"
    config = metadata.get("model_config")
    if not isinstance(config, dict):
        raise ModelMismatchError(
            f"{where} has no model_config in its hoplite_metadata, so nothing says which model made its embeddings; "
            f"only embeddings of a BioLingual model (model_key '{MODEL_KEY}' with its fingerprint) can be searched "
            "by text with it"
        )
    settings = config.get("model_config") or {}
    if config.get("model_key") != MODEL_KEY:
        made_by = settings.get("model_name") or settings.get("tfhub_path") or settings.get("model_path")
        raise ModelMismatchError(
            f"{where} holds embeddings of model_key '{config.get('model_key')}'"
            + (f" ({made_by})" if made_by else "")
            + f", not of a BioLingual model (model_key '{MODEL_KEY}'): embeddings of different models cannot be "
            "compared, so text queries would find nothing meaningful"
        )
    missing = [k for k in ("fingerprint", "window_size_s", "hop_size_s", "sample_rate") if settings.get(k) is None]
    if missing:
        raise ModelMismatchError(
            f"{where} names a BioLingual model ('{settings.get('model_name')}') but its model_config lacks "
            f"{', '.join(missing)}, so it cannot be checked against a model; export it again with "
            "`biolingual hoplite export`, or add them to model_config.model_config"
        )
    if config.get("embedding_dim") is not None and int(config["embedding_dim"]) != int(stored_dim):
        raise ModelMismatchError(
            f"{where} says its embeddings have {config['embedding_dim']} dimensions, but its USearch index holds "
            f"{stored_dim}"
        )
    return config


def check_model_config(config: dict, model, db_dir) -> None:
    """:class:`ModelMismatchError` unless ``config`` (from :func:`read_model_config`) is ``model``'s: the same
    fingerprint, embedding size and sample rate, and a window no longer than the model's."""
    settings = config["model_config"]
    where = f"the perch-hoplite database '{db_dir}'"
    fingerprint, dim = model.fingerprint(), int(model.embedding_dim)
    if settings["fingerprint"] != fingerprint:
        raise ModelMismatchError(
            f"{where} was embedded with BioLingual model '{settings.get('model_name')}' (fingerprint "
            f"{str(settings['fingerprint'])[:12]}), not with '{model.name_or_path}' (fingerprint {fingerprint[:12]}): "
            "embeddings of different models cannot be compared; give that model with --model"
        )
    if int(config.get("embedding_dim") or dim) != dim:
        raise ModelMismatchError(
            f"{where} holds {config['embedding_dim']}-dimensional embeddings, the model gives {dim}"
        )
    if int(settings["sample_rate"]) != int(model.sampling_rate):
        raise ModelMismatchError(
            f"{where} says its audio was embedded at {settings['sample_rate']} Hz, the model embeds at "
            f"{model.sampling_rate} Hz"
        )


def _base_paths(metadata: dict, db_dir: Path, audio_root) -> dict[str | None, Path]:
    """{dataset name (a deployment's project): base path of its recordings}; None -> the one to use otherwise."""
    if audio_root is not None:
        return {None: Path(audio_root)}
    globs = ((metadata.get("audio_sources") or {}).get("audio_globs")) or []
    bases = {g["dataset_name"]: Path(g["base_path"]) for g in globs if g.get("base_path")}
    if not bases:
        raise UsageError(
            f"the perch-hoplite database '{db_dir}' has no audio_sources saying where its recordings are: "
            "give the folder that holds them with --audio-root"
        )
    if len(bases) == 1:
        bases[None] = next(iter(bases.values()))
    return bases


def _recording_info(rec, deployment, relative: str) -> RecordingInfo:
    """What the database says of a recording: its deployment's name (the site) and place, its datetime (kept only
    with its timezone: a clock time without one would move detections into another hour) and recorder."""
    source = "perch-hoplite database"
    fields = rec.to_kwargs()
    values = {
        "site": deployment.name if deployment is not None else None,
        "latitude": deployment.latitude if deployment is not None else None,
        "longitude": deployment.longitude if deployment is not None else None,
        "recorder": fields.get("recorder") or None,
        "start": rec.datetime if isinstance(rec.datetime, dt.datetime) and rec.datetime.tzinfo else None,
    }
    problems = []
    if isinstance(rec.datetime, dt.datetime) and rec.datetime.tzinfo is None:
        problems.append(f"the perch-hoplite database gives {rec.datetime.isoformat(sep=' ')} without a timezone")
    if values["site"] is None:
        problems.append("no site: the perch-hoplite database gives the recording no deployment")
    return RecordingInfo(
        path=relative, **values, sources={k: source for k, v in values.items() if v is not None}, problems=problems
    )


def import_database(
    db_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    model,
    audio_root: str | os.PathLike | None = None,
) -> ImportReport:
    """Add the windows of the perch-hoplite database ``db_dir`` to the index ``index_dir`` (created if need be)
    with ``model``, which must be the database's (see the module docstring). Each recording is the database's file
    name under its audio source's base path (or under ``audio_root``); a recording whose file is not there is
    left out and named in the report (the index records each file's size and time, to tell when it changed).
    Recordings already in the index are not added again."""
    db_dir = Path(db_dir)
    config = read_model_config(db_dir)
    check_model_config(config, model, db_dir)
    settings = config["model_config"]
    precision = settings.get("precision") or "float32"
    precision = precision[0] if isinstance(precision, (list, tuple)) else str(precision)
    db = _open(db_dir)
    try:
        metadata = _metadata(db)
        bases = _base_paths(metadata, db_dir, audio_root)
        deployments = {d.id: d for d in db.get_all_deployments()}
        paths, infos, missing = {}, {}, {}
        for rec in db.get_all_recordings():
            deployment = deployments.get(rec.deployment_id)
            base = bases.get(deployment.project if deployment is not None else None, bases.get(None))
            if base is None:
                missing[rec.filename] = f"its project has no base path in audio_sources ({', '.join(map(str, bases))})"
                continue
            path = os.path.abspath(base / rec.filename)
            if not os.path.isfile(path):
                missing[path] = "no such file"
                continue
            paths[rec.id] = path
            infos[path] = _recording_info(rec, deployment, rec.filename)
        if missing and not paths:
            first = next(iter(missing))
            raise UsageError(
                f"none of the recordings of the perch-hoplite database '{db_dir}' were found ({len(missing)}; the "
                f"first: '{first}', {missing[first]}): give the folder that holds them with --audio-root"
            )
        for path, why in missing.items():
            log.warning("left out %s: %s", path, why)
        windows: dict[int, list] = {}
        for w in db.get_all_windows():
            windows.setdefault(w.recording_id, []).append(w)
        writer = IndexWriter(
            index_dir, model, float(settings["window_size_s"]), float(settings["hop_size_s"]), precision=precision
        )
        todo = set(writer.start(sorted(paths.values())))
        for rec_id, path in sorted(paths.items(), key=lambda item: item[1]):
            if path not in todo:
                continue
            rows = sorted(windows.get(rec_id, []), key=lambda w: tuple(w.offsets))
            if not rows:
                writer.skip(path, "the database holds no windows of it")
                continue
            try:
                embeddings = np.asarray(db.get_embeddings_batch([w.id for w in rows]), np.float16)
            except KeyError:  # hoplite lets a window be inserted without its embedding
                writer.skip(path, "the database holds windows of it without their embeddings")
                continue
            for w in rows:
                writer.add_window(path, float(w.offsets[0]), float(w.offsets[1]))
            writer.add_embeddings([path] * len(rows), embeddings)
            writer.finish(path)
        report = writer.close()
        annotations = [
            WindowAnnotation(
                paths[a.recording_id],
                float(a.offsets[0]),
                float(a.offsets[1]),
                a.label,
                VALUES[int(a.label_type)],
                a.provenance,
            )
            for a in sorted(db.get_all_annotations(), key=lambda a: a.id)
            if a.recording_id in paths
        ]
    finally:
        db.db.close()
    return ImportReport(report, annotations, infos, missing)
