"""biolingual.data: resampled training streams and deterministic validation streams over real shards."""
import numpy as np
import pytest
import torch

from biolingual.data import ShardError, check_shards, eval_loader, expand_shards, train_loader
from data_pipeline.shards import flac_bytes
from biolingual.synthetic import synth_call

from .shards import RATE, add_member, laion_sample, write_shards

CLIP = 2 * RATE


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    urls, species = write_shards(d, "train", n_species=4, per_species=6, per_shard=8)  # 24 samples, 3 shards
    return d, urls, species


def _pattern(d):
    return str(d / "train-{000000..000002}.tar")


def _batches(loader):
    return [(b["audio"].clone(), list(b["text"])) for b in loader]


def test_brace_patterns_and_sources():
    sources = expand_shards("a-{00..02}.tar::b.tar")
    assert sources == [["a-00.tar", "a-01.tar", "a-02.tar"], ["b.tar"]]


def test_fixed_epoch_length_and_shapes(shards):
    d, _, species = shards
    loader = train_loader(_pattern(d), batch_size=5, steps_per_epoch=7, workers=2, clip_samples=CLIP)
    batches = _batches(loader)
    assert len(loader) == 7 and len(batches) == 7
    for audio, text in batches:
        assert audio.shape == (5, CLIP) and audio.dtype == torch.float32 and len(text) == 5
        assert all(any(name in t for name in species) for t in text)


def test_same_seed_same_stream_other_epoch_or_rank_differs(shards):
    d, _, _ = shards
    make = lambda **kw: _batches(train_loader(_pattern(d), batch_size=4, steps_per_epoch=4, workers=2, clip_samples=CLIP, **kw))
    first, again = make(epoch=0), make(epoch=0)
    for (a1, t1), (a2, t2) in zip(first, again):
        torch.testing.assert_close(a1, a2, atol=0, rtol=0)
        assert t1 == t2
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(first, make(epoch=1)))
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(first, make(rank=1)))


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_resuming_mid_epoch_gives_the_rest_of_the_same_epoch(shards, workers):
    d, _, _ = shards
    kw = dict(batch_size=3, steps_per_epoch=8, workers=workers, clip_samples=CLIP, epoch=2, seed=5)
    full = _batches(train_loader(_pattern(d), **kw))
    rest = _batches(train_loader(_pattern(d), start_step=5, **kw))
    assert len(rest) == 3
    for (a1, t1), (a2, t2) in zip(full[5:], rest):
        torch.testing.assert_close(a1, a2, atol=0, rtol=0)
        assert t1 == t2


def test_more_workers_than_shards(tmp_path):
    urls, _ = write_shards(tmp_path, "one", n_species=2, per_species=3, per_shard=100)
    assert len(urls) == 1
    batches = _batches(train_loader(urls[0], batch_size=2, steps_per_epoch=6, workers=4, clip_samples=CLIP))
    assert len(batches) == 6
    assert sum(len(t) for _, t in _batches(eval_loader(urls[0], batch_size=4, workers=4, clip_samples=CLIP))) == 6


def test_weighted_sources(tmp_path):
    a, _ = write_shards(tmp_path, "a", n_species=2, per_species=4, seed=1)
    b, _ = write_shards(tmp_path, "b", n_species=2, per_species=4, seed=2)
    a_names = set(__import__("biolingual.synthetic", fromlist=["x"]).invented_species(2, seed=1))
    loader = train_loader(f"{tmp_path}/a-000000.tar::{tmp_path}/b-000000.tar", weights=[1.0, 0.0], batch_size=4,
                          steps_per_epoch=4, workers=0, clip_samples=CLIP, shuffle_buffer=10)
    texts = [t for _, ts in _batches(loader) for t in ts]
    assert all(any(n in t for n in a_names) for t in texts)


def test_corrupt_and_incomplete_samples_are_skipped_and_counted(tmp_path):
    urls, _ = write_shards(tmp_path, "bad", n_species=2, per_species=3, per_shard=100)
    add_member(tmp_path / "bad-000000.tar", "broken.flac", b"not flac at all")
    add_member(tmp_path / "bad-000000.tar", "broken.json", b'{"text": ["a broken clip"]}')
    add_member(tmp_path / "bad-000000.tar", "nocaption.flac", flac_bytes(synth_call("Barred Owl", 1.0, RATE), RATE))
    batches = list(eval_loader(urls[0], batch_size=100, workers=0, clip_samples=CLIP))
    assert sum(len(b["text"]) for b in batches) == 6
    assert sum(b["skipped"] for b in batches) == 2


def test_laion_style_text_string_or_list(tmp_path):
    urls, _ = write_shards(tmp_path, "laion", n_species=1, per_species=1, per_shard=100)
    audio = flac_bytes(synth_call("Field Cricket", 12.0, 44100), 44100)  # long and not at 48 kHz
    laion_sample(tmp_path / "laion-000000.tar", "s1", audio, "a single caption")
    laion_sample(tmp_path / "laion-000000.tar", "s2", audio, ["first caption", "second caption"])
    batch = next(iter(eval_loader(urls[0], batch_size=3, workers=0)))
    assert batch["text"][1:] == ["a single caption", "first caption"]
    assert batch["audio"].shape == (3, 480_000)
    long = batch["audio"][1].numpy()
    assert np.abs(long).max() > 0.05 and np.abs(long[-48000:]).max() > 0.05  # cropped, not zero padded


def test_eval_loader_is_complete_and_deterministic(shards):
    d, _, _ = shards
    one = [(b["key"], b["audio"]) for b in eval_loader(_pattern(d), batch_size=5, workers=2, clip_samples=CLIP)]
    two = [(b["key"], b["audio"]) for b in eval_loader(_pattern(d), batch_size=5, workers=2, clip_samples=CLIP)]
    keys = [k for ks, _ in one for k in ks]
    assert len(keys) == len(set(keys)) == 24
    for (k1, a1), (k2, a2) in zip(one, two):
        assert k1 == k2 and torch.equal(a1, a2)


def test_bad_shard_lists_fail_early_with_the_path(tmp_path):
    with pytest.raises(ShardError, match="not found: '.*missing-000.tar'"):
        check_shards(expand_shards(str(tmp_path / "missing-{000..003}.tar")))
    with pytest.raises(ShardError, match="empty"):
        check_shards(expand_shards(""))
    (tmp_path / "zero.tar").write_bytes(b"")
    with pytest.raises(ShardError, match="empty"):
        check_shards(expand_shards(str(tmp_path / "zero.tar")))
    import tarfile, io

    with tarfile.open(tmp_path / "textonly.tar", "w") as tar:
        info = tarfile.TarInfo("x.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ShardError, match="no audio"):
        check_shards(expand_shards(str(tmp_path / "textonly.tar")))
    with tarfile.open(tmp_path / "audioonly.tar", "w") as tar:
        data = flac_bytes(synth_call("Barred Owl", 0.5, RATE), RATE)
        info = tarfile.TarInfo("x.flac")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardError, match="no captions"):
        check_shards(expand_shards(str(tmp_path / "audioonly.tar")))
