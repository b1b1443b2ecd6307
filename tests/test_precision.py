"""Precision (--dtype / dtype=): auto's choice by the processor, bfloat16 and int8 close to float32, the
precision an index was built at recorded and checked, and clear refusals of what a device cannot run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import biolingual
from biolingual.cli import main
from biolingual.precision import PrecisionError, cpu_flags, resolve_precision
from biolingual.synthetic import SPECIES, synth_call

RATE = 22_050
EPYC = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}  # this project's CI machine: native bf16 dot products
SAPPHIRE = {"avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
OLD_XEON = {"avx2", "avx512f", "avx512_vnni"}  # int8 dot products, no bfloat16 units


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Two 25 s recordings of different species (three windows each)."""
    d = tmp_path_factory.mktemp("precision")
    for i, species in enumerate(list(SPECIES)[:2]):
        sf.write(d / f"rec{i}.wav", synth_call(species, 25.0, RATE, seed=i), RATE)
    return d


def test_auto_chooses_by_the_processor_flags_and_the_gpu():
    assert resolve_precision("auto", "cpu", flags=EPYC) == "bfloat16"
    assert resolve_precision("auto", "cpu", flags=SAPPHIRE) == "bfloat16"
    assert resolve_precision("auto", "cpu", flags=OLD_XEON) == "float32"
    assert resolve_precision("auto", "cpu", flags=set()) == "float32"
    assert resolve_precision("auto", "cuda", cuda_bf16=True) == "bfloat16"
    assert resolve_precision("auto", "cuda", cuda_bf16=False) == "float16"
    # names, torch dtypes and None mean the same precisions
    assert resolve_precision(None, "cpu") == resolve_precision(torch.float32, "cpu") == "float32"
    assert (
        resolve_precision(torch.bfloat16, "cpu", flags=EPYC)
        == resolve_precision("bf16", "cpu", flags=EPYC)
        == "bfloat16"
    )
    info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n"
    assert cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert resolve_precision("auto", "cpu", flags=cpu_flags(info)) == "bfloat16"


def test_what_a_device_cannot_run_is_refused_with_a_clear_message():
    with pytest.raises(PrecisionError, match="float16 inference needs a GPU; on CPU use bfloat16"):
        resolve_precision("float16", "cpu")
    with pytest.raises(PrecisionError, match="int8 runs on the CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(PrecisionError, match="unknown precision 'int4': use one of auto, float32"):
        resolve_precision("int4", "cpu")
    assert issubclass(PrecisionError, ValueError)  # callers catching ValueError (as before) still do


def test_bfloat16_and_int8_stay_close_to_float32_and_leave_the_model_as_it_was(tiny_model):
    clips = [synth_call(s, 10.0, 48_000, seed=i) for i, s in enumerate(list(SPECIES)[:3])]
    fingerprint, keys = tiny_model.fingerprint(), list(tiny_model.state_dict())
    reference = tiny_model.embed_audio(clips, sampling_rate=48_000)
    for dtype, threshold in (("bfloat16", 0.999), ("int8", 0.995)):
        low = tiny_model.embed_audio(clips, sampling_rate=48_000, dtype=dtype)
        assert low.dtype == torch.float32 and F.cosine_similarity(low, reference).min().item() >= threshold, dtype
    text = tiny_model.embed_text(["The sound of a Barred Owl"])
    assert F.cosine_similarity(tiny_model.embed_text(["The sound of a Barred Owl"], dtype="int8"), text).item() >= 0.995
    assert (
        F.cosine_similarity(tiny_model.embed_text(["The sound of a Barred Owl"], dtype="bfloat16"), text).item()
        >= 0.999
    )
    # on a CPU bfloat16 runs a copy whose weights are all bfloat16 (autocast alone casts them on every call)
    with tiny_model.inference("bfloat16"):
        running = tiny_model._running[0]
    assert running is not tiny_model.clap and {p.dtype for p in running.parameters()} == {torch.bfloat16}
    # the int8 and bfloat16 copies are kept beside the model, not in it: same weights, same fingerprint,
    # float32 by default
    assert {p.dtype for p in tiny_model.clap.parameters()} == {torch.float32}
    assert tiny_model.fingerprint() == fingerprint and list(tiny_model.state_dict()) == keys
    assert tiny_model.precision == "float32" and torch.equal(
        tiny_model.embed_audio(clips, sampling_rate=48_000), reference
    )


def test_load_with_a_precision_name_sets_the_default_of_every_call(saved_model, tiny_model, clips):
    path = clips["loon_long.flac"]
    model = biolingual.load(saved_model, device="cpu", dtype="int8")
    assert model.precision == "int8" and model.dtype == torch.float32
    assert model.fingerprint() == tiny_model.fingerprint()  # the same model, computed at another precision
    assert torch.equal(model.embed_audio(path), tiny_model.embed_audio(path, dtype="int8"))
    assert biolingual.load(saved_model, device="cpu", dtype="auto").precision == resolve_precision("auto", "cpu")
    with pytest.raises(PrecisionError, match="needs a GPU"):
        biolingual.load(saved_model, device="cpu", dtype="float16")


def test_cli_embed_dtype_says_what_it_ran_at_and_refuses_float16_on_cpu(saved_model, clips, tmp_path, capsys):
    paths = [str(clips["peeper_short.wav"]), str(clips["cricket_48k.wav"])]
    assert (
        main(["embed", *paths, "--model", str(saved_model), "--device", "cpu", "--out", str(tmp_path / "f32.npy")]) == 0
    )
    assert "precision:" not in capsys.readouterr().err  # float32, the default, as before: nothing new printed
    assert (
        main(
            [
                "embed",
                *paths,
                "--model",
                str(saved_model),
                "--device",
                "cpu",
                "--dtype",
                "bfloat16",
                "--out",
                str(tmp_path / "bf16.npy"),
            ]
        )
        == 0
    )
    assert "precision: bfloat16" in capsys.readouterr().err
    f32, bf16 = np.load(tmp_path / "f32.npy"), np.load(tmp_path / "bf16.npy")
    assert (f32 * bf16).sum(1).min() >= 0.999
    assert (
        main(
            [
                "embed",
                *paths,
                "--model",
                str(saved_model),
                "--device",
                "cpu",
                "--dtype",
                "auto",
                "--out",
                str(tmp_path / "auto.npy"),
            ]
        )
        == 0
    )
    assert f"precision: {resolve_precision('auto', 'cpu')} (auto: the processor has" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                *paths,
                "--model",
                str(saved_model),
                "--device",
                "cpu",
                "--dtype",
                "float16",
                "--labels",
                "Barred Owl",
                "Spring Peeper",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: float16 inference needs a GPU") and "Traceback" not in err


def test_index_records_its_precision_and_refuses_to_mix_unless_asked(saved_model, recordings, tmp_path, capsys):
    out = tmp_path / "index"
    common = ["--model", str(saved_model), "--device", "cpu", "--out", str(out)]
    assert main(["index", str(recordings / "rec0.wav"), *common, "--dtype", "int8"]) == 0
    assert json.loads((out / "index.json").read_text())["precision"] == ["int8"]
    assert "precision: int8" in capsys.readouterr().err

    def precisions():  # each recording's, as the merged index records it
        return sorted(r["precision"] for r in json.loads((out / "merged" / "records.json").read_text())["records"])

    assert precisions() == ["int8"]

    # adding a file at another precision (the default float32) is refused, and nothing is written
    assert main(["index", str(recordings / "rec1.wav"), *common]) == 1
    err = capsys.readouterr().err
    assert (
        f"error: the index '{out}' was built at precision int8, not float32" in err and "--allow-mixed-precision" in err
    )
    assert precisions() == ["int8"] and not list((out / "parts").glob("*.npz"))

    assert main(["index", str(recordings / "rec1.wav"), *common, "--allow-mixed-precision"]) == 0
    assert json.loads((out / "index.json").read_text())["precision"] == ["int8", "float32"]
    assert precisions() == ["float32", "int8"]

    # the index's model at int8 searches it (queries embedded at int8) and finds windows of both files
    assert (
        main(
            [
                "search",
                str(out),
                "a frog calling",
                "--dtype",
                "int8",
                "--top",
                "6",
                "--no-merge",
                "--csv",
                str(tmp_path / "hits.csv"),
            ]
        )
        == 0
    )
    assert len(list(csv.DictReader(open(tmp_path / "hits.csv")))) == 6


def test_build_index_api_takes_dtype_and_checks_it(tiny_model, recordings, tmp_path):
    from biolingual.search import build_index, load_index
    from biolingual.search.index import SearchIndexError

    out = tmp_path / "api"
    report = build_index([recordings / "rec0.wav"], tiny_model, out, dtype=torch.bfloat16, progress=False)
    assert report.windows == 3 and load_index(out).meta["precision"] == ["bfloat16"]
    reference = tiny_model.embed_audio(str(recordings / "rec0.wav"), pooling="first", dtype="bfloat16")
    first = np.asarray(load_index(out).embeddings[0], np.float32)
    assert float(first @ reference[0].numpy()) > 0.999  # the index's first window is embed_audio's, at bfloat16
    with pytest.raises(SearchIndexError, match="built at precision bfloat16, not int8"):
        build_index([recordings / "rec1.wav"], tiny_model, out, dtype="int8", progress=False)


def test_eval_cache_keys_on_the_precision(saved_model, tmp_path):
    from eval import zero_shot
    from eval.embedding_cache import EmbeddingCache, model_identity

    rows = []
    for i, label in enumerate(list(SPECIES)[:2]):
        sf.write(tmp_path / f"c{i}.wav", synth_call(label, 2.0, RATE, seed=i), RATE)
        rows.append([f"c{i}.wav", label])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    args = [
        "--model",
        str(saved_model),
        "--data",
        str(tmp_path / "labels.csv"),
        "--out",
        str(tmp_path / "zs"),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert zero_shot.main(args) == 0
    assert zero_shot.main([*args, "--dtype", "int8"]) == 0
    with EmbeddingCache(tmp_path / "zs" / "embeddings.sqlite") as cache:
        assert len(cache) == 4  # the int8 embeddings were computed, not served from the float32 ones
    model = biolingual.load(saved_model, device="cpu")
    assert model_identity(model) == f"{model.fingerprint()}|pooling=mean"  # float32 keys as before: caches stay valid
    model.set_precision("int8")
    assert model_identity(model).endswith("|precision=int8")
    assert zero_shot.main([*args, "--dtype", "float16"]) == 1  # refused up front, before anything is loaded
