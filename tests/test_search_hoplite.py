"""perch-hoplite databases in and out, checked with perch-hoplite itself (its SQLite + USearch database code).

Export: an index of three recordings at two sites (deployments CSV) with agile labels becomes a database that
perch-hoplite opens (sqlite_usearch_impl and db_loader), with the deployments, recordings, windows (our float16
embeddings), annotations with their provenance and the model config; hoplite's own search and ours find the same
windows. Import: a database written with perch-hoplite's API, as a hoplite user would (our model's embeddings and
model config, their annotations), becomes an index: `biolingual search` by text and by an embedding finds what
hoplite's search finds, and the annotations arrive as agile labels. A database of another model is refused.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from biolingual.agile.labels import LabelStore
from biolingual.audio import load_audio, split_windows
from biolingual.cli import main
from biolingual.search.index import load_index
from biolingual.search.query import search
from biolingual.search.recordings import recordings_of
from biolingual.synthetic import synth_call

from .conftest import LABELS

hoplite_db = pytest.importorskip("perch_hoplite.db")
from ml_collections import config_dict  # noqa: E402  (installed with perch-hoplite)
from perch_hoplite.db import datatypes, db_loader, sqlite_usearch_impl  # noqa: E402

RATE = 16_000
SECONDS = 20.0  # windows of 10 s every 5 s: [0, 10], [5, 15], [10, 20] per recording
RECORDINGS = {  # path under the root: (species, seed)
    "site-a/SITE-A_20240512_210000.wav": ("Barred Owl", 1),
    "site-a/SITE-A_20240512_220000.wav": ("Spring Peeper", 2),
    "site-b/SITE-B_20240512_210000.wav": ("Common Loon", 3),
}
DEPLOYMENTS = (
    "site,latitude,longitude,folder,timezone,recorder\n"
    "Quebrada A,4.61,-74.08,site-a,America/Bogota,SM4 001\n"
    "Ridge B,4.70,-74.10,site-b,America/Bogota,\n"
)
TOL = 2e-3  # float16 rows scored in float16 (hoplite) or re-normalised in float64 (ours): near-ties may swap


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    """The tiny model with its input batch-norm statistics set from calls (a random model's make every embedding
    nearly the same, and rankings all near-ties), saved to a folder for the command line."""
    model = copy.deepcopy(tiny_model)
    waves = []
    for i, species in enumerate(LABELS[:8]):
        audio = synth_call(species, 10, RATE, seed=i).astype(np.float32)
        waves.append(split_windows(load_audio(audio, model.sampling_rate, sampling_rate=RATE), model.window_samples)[0])
    clap = model.clap
    with torch.no_grad():
        features = model.front_end(torch.from_numpy(np.stack(waves)))
        norm = clap.audio_model.audio_encoder.batch_norm
        norm.reset_running_stats()
        norm.momentum = None
        clap.audio_model.train()
        clap.audio_model(input_features=features)
        clap.audio_model.eval()
    path = tmp_path_factory.mktemp("hoplite_model") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    import biolingual

    return biolingual.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("hoplite_audio") / "field"
    for name, (species, seed) in RECORDINGS.items():
        rng = np.random.default_rng(seed)
        audio = (0.02 * rng.standard_normal(int(SECONDS * RATE))).astype(np.float32)
        audio[3 * RATE : 9 * RATE] += synth_call(species, 6, RATE, seed=seed, noise=0)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, audio, RATE)
    (root.parent / "deployments.csv").write_text(DEPLOYMENTS)
    return root


@pytest.fixture(scope="module")
def labelled_index(recordings, model_dir, tmp_path_factory):
    """An index of the recordings (10 s windows every 5 s, sites from the deployments CSV) with agile labels of two
    targets given on the page and from the command line."""
    out = tmp_path_factory.mktemp("hoplite_index") / "index"
    args = ["index", str(recordings), "--out", str(out), "--model", str(model_dir), "--hop", "5", "--device", "cpu"]
    assert main([*args, "--deployments", str(recordings.parent / "deployments.csv")]) == 0
    index = load_index(out)
    store = LabelStore(out, index=index)
    store.add_target("Barred Owl")
    store.label_many("Barred Owl", [(0, "positive"), (4, "negative")], source="page")
    store.add_target("Spring Peeper")
    store.label("Spring Peeper", 7, "unsure", source="cli")
    return out


def _hits_agree(ours: list[tuple], theirs: list[tuple], scores: dict) -> None:
    """Two rankings of (window key, score) agree: the same scores rank by rank, and where the windows differ, the
    one each placed there scores (by ours) within TOL of the other (a near-tie that float16 may order either way)."""
    assert len(ours) == len(theirs)
    for (key, score), (their_key, their_score) in zip(ours, theirs):
        assert abs(score - their_score) < TOL, (ours, theirs)
        if key != their_key:
            assert abs(scores[their_key] - score) < TOL, (ours, theirs)


def test_export_gives_a_database_perch_hoplite_opens_with_everything(labelled_index, recordings, model, tmp_path):
    db_dir = tmp_path / "hoplite_db"
    assert main(["hoplite", "export", str(labelled_index), str(db_dir), "--project", "andes2024"]) == 0

    db = db_loader.DBConfig("sqlite_usearch", config_dict.ConfigDict({"db_path": str(db_dir)})).load_db()
    index = load_index(labelled_index)

    # what a hoplite tool needs to embed a new query with the same model
    cfg = db.get_metadata("model_config")
    assert cfg.model_key == "biolingual" and cfg.embedding_dim == model.embedding_dim == db.get_embedding_dim()
    assert cfg.model_config.fingerprint == model.fingerprint()
    assert cfg.model_config.model_name == str(model.name_or_path)
    assert (cfg.model_config.window_size_s, cfg.model_config.hop_size_s) == (10.0, 5.0)
    assert cfg.model_config.sample_rate == model.sampling_rate == 48_000
    (source,) = db.get_metadata("audio_sources").audio_globs
    assert source["dataset_name"] == "andes2024" and source["base_path"] == str(recordings)
    assert sorted(p.relative_to(recordings).as_posix() for p in recordings.glob(source["file_glob"])) == sorted(
        RECORDINGS
    )

    deployments = {d.name: d for d in db.get_all_deployments()}
    assert set(deployments) == {"Quebrada A", "Ridge B"}
    assert {d.project for d in deployments.values()} == {"andes2024"}
    assert (deployments["Quebrada A"].latitude, deployments["Quebrada A"].longitude) == (4.61, -74.08)
    assert (deployments["Ridge B"].latitude, deployments["Ridge B"].longitude) == (4.70, -74.10)

    by_name = {r.filename: r for r in db.get_all_recordings()}
    assert set(by_name) == set(RECORDINGS)
    bogota = dt.timezone(dt.timedelta(hours=-5))
    for name, rec in by_name.items():
        site = "Quebrada A" if name.startswith("site-a") else "Ridge B"
        assert rec.deployment_id == deployments[site].id
        hour = int(name[-10:-8])
        assert rec.datetime == dt.datetime(2024, 5, 12, hour, tzinfo=bogota)
    assert by_name["site-a/SITE-A_20240512_210000.wav"].recorder == "SM4 001"

    windows = db.get_all_windows()
    assert len(windows) == len(index) == db.count_embeddings() == 3 * len(RECORDINGS)
    ours = {
        (index.files[index.file_ids[r]], float(index.starts[r]), float(index.ends[r])): r for r in range(len(index))
    }
    names = {rec.id: str(recordings / rec.filename) for rec in by_name.values()}
    row_of = {}
    for w in windows:
        row_of[w.id] = ours[(names[w.recording_id], *w.offsets)]
    stored = db.get_embeddings_batch([w.id for w in windows])
    expected = np.asarray(index.embeddings[[row_of[w.id] for w in windows]], np.float32)
    assert np.allclose(np.asarray(stored, np.float32), expected, atol=1e-3)

    annotations = sorted(
        (names[a.recording_id], *a.offsets, a.label, a.label_type, a.provenance) for a in db.get_all_annotations()
    )

    def window(row):
        return index.files[index.file_ids[row]], float(index.starts[row]), float(index.ends[row])

    assert annotations == sorted(
        [
            (*window(0), "Barred Owl", datatypes.LabelType.POSITIVE, "biolingual agile: page"),
            (*window(4), "Barred Owl", datatypes.LabelType.NEGATIVE, "biolingual agile: page"),
            (*window(7), "Spring Peeper", datatypes.LabelType.UNCERTAIN, "biolingual agile: cli"),
        ]
    )
    # hoplite's own reading of a window's labels: window 0's annotation is found on it
    (w0,) = [w for w in windows if row_of[w.id] == 0]
    assert "Barred Owl" in {a.label for a in db.get_window_annotations(w0.id)}

    # the same query embedding finds the same windows in both: an example window, and a text query
    for n, query in enumerate((np.asarray(index.embeddings[5], np.float32), model.embed_text(["an owl"]).numpy()[0])):
        query = query / np.linalg.norm(query)
        (hits,) = search(index, query[None], ["q"], k=4, merge=False, progress=False)
        mine = [(ours[(h.file, h.start, h.end)], h.score) for h in hits]
        scores = dict(zip(range(len(index)), np.asarray(index.embeddings, np.float64) @ query))
        for approximate in (False, True):  # USearch's exhaustive scan, and its HNSW graph
            theirs = [(row_of[r.window_id], r.sort_score) for r in db.search(query, 4, approximate=approximate)]
            _hits_agree(mine, theirs, scores)
        if n == 0:  # the example window itself comes first in both
            assert mine[0][0] == theirs[0][0] == 5
    db.db.close()

    # bad input: a folder that already holds something is not overwritten
    assert main(["hoplite", "export", str(labelled_index), str(db_dir)]) == 1
    # and a folder that is no index is named, and left as it was (no agile/ label store made in it)
    assert main(["hoplite", "export", str(tmp_path / "nonexist"), str(tmp_path / "db2")]) == 1
    assert not (tmp_path / "nonexist").exists() and not (tmp_path / "db2").exists()

    # and back: the database imported is the index again, its labels with their sources
    again = tmp_path / "again"
    assert main(["hoplite", "import", str(db_dir), str(again), "--device", "cpu"]) == 0
    back = load_index(again)
    assert sorted(zip(back.files, back.starts, back.ends)) == sorted(zip(index.files, index.starts, index.ends))

    def labels(store):
        return {
            (t.name, lab.recording, lab.start, lab.end, lab.value, lab.source)
            for t in store.targets()
            for lab in store.current(t.name)
        }

    assert labels(LabelStore(again, index=back)) == labels(LabelStore(labelled_index, index=index))


def _audio_sources(base) -> config_dict.ConfigDict:
    source = {
        "dataset_name": "andes",
        "base_path": str(base),
        "file_glob": "*/*.wav",
        "min_audio_len_s": 1.0,
        "target_sample_rate_hz": -2,
        "shard_len_s": 60.0,
        "max_shards_per_file": None,
    }
    return config_dict.ConfigDict({"audio_globs": [source]})


@pytest.fixture(scope="module")
def user_db(model, recordings, tmp_path_factory):
    """A database as a hoplite user writes one with perch-hoplite's API: the recordings of two deployments embedded
    by our model (10 s windows every 10 s), its model config, and annotations of their own; its folder."""
    path = tmp_path_factory.mktemp("hoplite_user") / "theirs"
    db = db_loader.create_new_usearch_db(str(path), model.embedding_dim)
    model_config = {
        "model_key": "biolingual",
        "embedding_dim": model.embedding_dim,
        "model_config": {
            "model_name": str(model.name_or_path),
            "fingerprint": model.fingerprint(),
            "window_size_s": 10.0,
            "hop_size_s": 10.0,
            "sample_rate": model.sampling_rate,
        },
        "logits_key": None,
        "logits_idxes": None,
    }
    db.insert_metadata("model_config", config_dict.ConfigDict(model_config))
    db.insert_metadata("audio_sources", _audio_sources(recordings))
    sites = {
        "site-a": db.insert_deployment("site-a", "andes", 4.61, -74.08),
        "site-b": db.insert_deployment("site-b", "andes"),
    }
    for name in RECORDINGS:
        rec = db.insert_recording(
            name, dt.datetime(2024, 5, 12, int(name[-10:-8]), tzinfo=dt.UTC), sites[name.split("/")[0]]
        )
        audio, rate = sf.read(recordings / name, dtype="float32")
        waves = split_windows(load_audio(audio, model.sampling_rate, sampling_rate=rate), model.window_samples)
        embeddings = model.embed_audio(list(waves), sampling_rate=model.sampling_rate, batch_size=8).numpy()
        db.insert_windows_batch(
            [{"recording_id": rec, "offsets": [10.0 * i, 10.0 * i + 10.0]} for i in range(len(waves))], embeddings
        )
        if name.startswith("site-a/SITE-A_20240512_21"):
            db.insert_annotation(rec, [0.0, 10.0], "Barred Owl", datatypes.LabelType.POSITIVE, "expert: J. Doe")
            db.insert_annotation(rec, [10.0, 20.0], "Barred Owl", datatypes.LabelType.NEGATIVE, "expert: J. Doe")
            db.insert_annotation(rec, [12.5, 14.0], "Spring Peeper", datatypes.LabelType.POSITIVE, "birdnet 0.9")
    db.commit()
    db.db.close()
    return path


def test_import_makes_a_hoplite_database_searchable_by_text_with_its_labels(
    user_db, recordings, model, model_dir, tmp_path
):
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(user_db), readonly=True)
    index_dir = tmp_path / "index"
    assert (
        main(
            [
                "hoplite",
                "import",
                str(user_db),
                str(index_dir),
                "--model",
                str(model_dir),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    index = load_index(index_dir)
    assert len(index) == db.count_embeddings() == 2 * len(RECORDINGS)
    key_of = {}
    for w in db.get_all_windows():
        rec = db.get_recording(w.recording_id)
        key_of[w.id] = (str(recordings / rec.filename), *w.offsets)

    # a text query through the command line, and the same text's embedding through hoplite's own search
    text = "an owl hooting at night"
    out = tmp_path / "hits.csv"
    assert main(["search", str(index_dir), text, "--top", "3", "--no-merge", "--csv", str(out), "--device", "cpu"]) == 0
    with open(out) as f:
        mine = [((r["file"], float(r["start_s"]), float(r["end_s"])), float(r["cosine"])) for r in csv.DictReader(f)]
    query = model.embed_text([text]).numpy()[0]
    theirs = [(key_of[r.window_id], r.sort_score) for r in db.search(query, 3, approximate=False)]
    rows = {
        (index.files[index.file_ids[r]], float(index.starts[r]), float(index.ends[r])): r for r in range(len(index))
    }
    scores = {k: float(np.asarray(index.embeddings[r], np.float64) @ query) for k, r in rows.items()}
    _hits_agree(mine, theirs, scores)
    # and an example window's embedding
    example = np.asarray(db.get_embedding(3), np.float32)
    example /= np.linalg.norm(example)
    (hits,) = search(index, example[None], ["example"], k=3, merge=False, progress=False)
    theirs = [(key_of[r.window_id], r.sort_score) for r in db.search(example, 3, approximate=False)]
    assert [(h.file, h.start, h.end) for h in hits][0] == theirs[0][0] == key_of[3]
    _hits_agree(
        [((h.file, h.start, h.end), h.score) for h in hits],
        theirs,
        scores | {k: float(np.asarray(index.embeddings[r], np.float64) @ example) for k, r in rows.items()},
    )

    # the annotations as agile labels, with their provenance; the box of 1.5 s labels the window it lies in
    store = LabelStore(index_dir, index=index)
    owl = str(recordings / "site-a/SITE-A_20240512_210000.wav")
    got = {
        (t.name, lab.recording, lab.start, lab.end, lab.value, lab.source)
        for t in store.targets()
        for lab in store.current(t.name)
    }
    assert got == {
        ("Barred Owl", owl, 0.0, 10.0, "positive", "hoplite: expert: J. Doe"),
        ("Barred Owl", owl, 10.0, 20.0, "negative", "hoplite: expert: J. Doe"),
        ("Spring Peeper", owl, 10.0, 20.0, "positive", "hoplite: birdnet 0.9"),
    }
    # the deployments and datetimes as the recordings' sites, places and clock times (results carry them)
    info = recordings_of(index_dir, index.files)[owl]
    assert (info.site, info.latitude, info.longitude) == ("site-a", 4.61, -74.08)
    assert (
        info.start == dt.datetime(2024, 5, 12, 21, tzinfo=dt.UTC) and info.path == "site-a/SITE-A_20240512_210000.wav"
    )
    # importing again adds nothing: the windows are in the index and the labels current
    assert (
        main(
            [
                "hoplite",
                "import",
                str(user_db),
                str(index_dir),
                "--model",
                str(model_dir),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert len(load_index(index_dir)) == len(index)
    assert sum(len(store.history(t.name)) for t in store.targets()) == 3
    db.db.close()


PERCH = {
    "model_key": "taxonomy_model_tf",
    "embedding_dim": 64,
    "model_config": {
        "window_size_s": 5.0,
        "hop_size_s": 5.0,
        "sample_rate": 32000,
        "tfhub_version": 8,
        "tfhub_path": "google/bird-vocalization-classifier/tensorFlow2/bird-vocalization-classifier",
        "model_path": "",
    },
    "logits_key": None,
    "logits_idxes": None,
}


@pytest.mark.parametrize(
    "config, says",
    [
        (PERCH, "model_key 'taxonomy_model_tf'"),
        ({}, "no model_config"),
        ("other fingerprint", "fingerprint 0123456789ab"),
    ],
    ids=["perch", "no-config", "another-biolingual"],
)
def test_a_database_of_another_model_is_refused(config, says, recordings, model, model_dir, tmp_path, capsys):
    if config == "other fingerprint":
        config = {
            "model_key": "biolingual",
            "embedding_dim": model.embedding_dim,
            "model_config": {
                "model_name": "someone/else",
                "fingerprint": "0123456789abcdef" * 2,
                "window_size_s": 10.0,
                "hop_size_s": 10.0,
                "sample_rate": 48000,
            },
        }
    db_dir = tmp_path / "other"
    db = db_loader.create_new_usearch_db(str(db_dir), model.embedding_dim)
    if config:
        db.insert_metadata("model_config", config_dict.ConfigDict(config))
    db.commit()
    db.db.close()
    capsys.readouterr()
    code = main(
        ["hoplite", "import", str(db_dir), str(tmp_path / "index"), "--model", str(model_dir), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 1
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert str(db_dir) in line and says in line and "Traceback" not in err
    assert not (tmp_path / "index").exists()


def test_recordings_moved_since_the_database_was_written_are_found_with_audio_root(
    user_db, recordings, tmp_path, capsys
):
    moved = tmp_path / "where they were"
    shutil.copytree(user_db, tmp_path / "theirs")
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(tmp_path / "theirs"))
    db.insert_metadata("audio_sources", _audio_sources(moved))
    db.commit()
    db.db.close()
    args = ["hoplite", "import", str(tmp_path / "theirs"), str(tmp_path / "index"), "--device", "cpu"]
    capsys.readouterr()
    assert main(args) == 1  # none found: one line saying where it looked and what to give
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert str(moved / "site-a") in line and "--audio-root" in line
    assert not (tmp_path / "index").exists()
    assert main([*args, "--audio-root", str(recordings)]) == 0  # and the model its model_config names
    assert len(load_index(tmp_path / "index")) == 2 * len(RECORDINGS)
