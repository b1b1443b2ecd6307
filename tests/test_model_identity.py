"""One fingerprint (``BioLingual.fingerprint``) is what the search index, the evaluation cache and the probe
cache know a model by; an index written with the fingerprint used before still opens with its model."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

import biolingual
from biolingual.errors import ModelMismatchError
from biolingual.search.index import _fingerprint_v1, build_index, check_model, read_meta
from biolingual.synthetic import synth_call


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("identity") / "owl.wav"
    sf.write(path, synth_call("Barred Owl", 12.0, 48000, seed=5), 48000)
    return path


def test_the_index_stores_the_fingerprint(tiny_model, saved_model, recording, tmp_path):
    model = biolingual.load(saved_model, device="cpu")
    build_index([recording], model, tmp_path / "index", progress=False)
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta["model"]["fingerprint"] == model.fingerprint()
    check_model(meta, tiny_model, tmp_path / "index")  # the model it was saved from: the same model


def test_an_index_written_with_the_old_fingerprint_still_opens(tiny_model, saved_model, recording, tmp_path):
    model = biolingual.load(saved_model, device="cpu")
    index = tmp_path / "index"
    build_index([recording], model, index, progress=False)
    meta = json.loads((index / "index.json").read_text())
    meta["model"]["fingerprint"] = _fingerprint_v1(model)  # as the index was written before fingerprint()
    (index / "index.json").write_text(json.dumps(meta))
    assert len(meta["model"]["fingerprint"]) == 40
    check_model(read_meta(index), model, index)  # opens with the model it was built with, to search and to add files to
    report = build_index([recording], model, index, progress=False)
    assert report.already == [str(recording)]

    other = biolingual.create("tiny", tokenizer_texts=["an owl"], seed=1, device="cpu")
    with pytest.raises(ModelMismatchError, match="was built with model"):
        check_model(read_meta(index), other, index)


def test_the_eval_cache_keys_on_the_fingerprint_and_pooling(tiny_model):
    from eval.embedding_cache import model_identity

    assert model_identity(tiny_model) == f"{tiny_model.fingerprint()}|pooling={tiny_model.pooling}"


def test_the_probe_cache_keys_on_the_fingerprint(saved_model):
    from eval.probe.encoders import load_encoder

    encoder = load_encoder(str(saved_model), device="cpu")
    assert encoder.identity == encoder.model.fingerprint()
