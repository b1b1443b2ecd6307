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


def _corrupt_shard(path, n: int, start: int = 0) -> None:
    """``n`` samples whose audio is not audio (each with a caption)."""
    for i in range(start, start + n):
        laion_sample(path, f"corrupt{i:04d}", b"not flac at all " + bytes([i % 256]), f"broken clip {i}")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_set_where_nothing_decodes_stops_with_the_shards_named(tmp_path, workers):
    """It used to skip forever (an endless resampled stream of corrupt samples); now it stops after
    max_bad_in_row failures in a row, naming the shard."""
    good, _ = write_shards(tmp_path, "good", n_species=2, per_species=2, per_shard=100)
    import tarfile

    with tarfile.open(tmp_path / "allbad-000000.tar", "w"):
        pass
    _corrupt_shard(tmp_path / "allbad-000000.tar", 12)
    loader = train_loader(f"{good[0]}::{tmp_path}/allbad-000000.tar", weights=[0.0, 1.0], batch_size=2,
                          steps_per_epoch=4, workers=workers, clip_samples=CLIP, shuffle_buffer=10, max_bad_in_row=30)
    with pytest.raises(ShardError, match=r"30 samples in a row could not be used.*allbad-000000\.tar"):
        list(loader)
    with pytest.raises(ShardError, match=r"allbad-000000\.tar"):
        list(eval_loader(str(tmp_path / "allbad-000000.tar"), batch_size=2, workers=0, max_bad_in_row=5))


def test_unreadable_shard_files_stop_the_stream_too(tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "junk-000000.tar", "w"):  # the first shard is what check_shards opens
        pass
    _corrupt_shard(tmp_path / "junk-000000.tar", 1)
    (tmp_path / "junk-000001.tar").write_bytes(b"this is not a tar file" * 100)
    good, _ = write_shards(tmp_path, "good", n_species=2, per_species=2, per_shard=100)
    loader = train_loader(f"{good[0]}::{tmp_path}/junk-{{000000..000001}}.tar", weights=[0.0, 1.0], batch_size=2,
                          steps_per_epoch=2, workers=0, clip_samples=CLIP, max_bad_in_row=10)
    with pytest.raises(ShardError, match=r"junk-000001\.tar' \(ReadError"):
        list(loader)


def test_check_usable_needs_one_sample_with_audio_and_a_caption(tmp_path):
    from biolingual.data import check_usable

    import tarfile

    with tarfile.open(tmp_path / "bad-000000.tar", "w"):
        pass
    _corrupt_shard(tmp_path / "bad-000000.tar", 3)
    with pytest.raises(ShardError, match=r"validation shards .*hold no usable sample.*bad-000000\.tar.*(decode|format|Error)"):
        check_usable(str(tmp_path / "bad-000000.tar"), "validation")
    nocap = tmp_path / "nocap-000000.tar"
    with tarfile.open(nocap, "w"):
        pass
    laion_sample(nocap, "x", flac_bytes(synth_call("Barred Owl", 1.0, RATE), RATE), [])
    with pytest.raises(ShardError, match="no caption"):
        check_usable(str(nocap), "train")
    good, _ = write_shards(tmp_path, "good", n_species=2, per_species=1, per_shard=100)
    check_usable(f"{tmp_path}/bad-000000.tar::{good[0]}", "train")  # one good sample anywhere is enough


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_skips_the_raw_samples_consumed_even_when_some_failed(tmp_path, workers):
    """Corrupt samples before the resume point made batches take more than batch_size raw samples; skipping
    batches x batch_size then replayed some. With the loader's positions the rest of the epoch is exact."""
    urls, _ = write_shards(tmp_path, "mixed", n_species=4, per_species=6, per_shard=100)
    _corrupt_shard(tmp_path / "mixed-000000.tar", 10)
    kw = dict(batch_size=3, steps_per_epoch=8, workers=workers, clip_samples=CLIP, shuffle_buffer=40, seed=3)
    first = train_loader(urls[0], **kw)
    full = []
    for step, b in enumerate(first):
        full.append((b["audio"].clone(), list(b["text"]), b["skipped"]))
        if step == 4:
            positions = list(first.positions)  # what a checkpoint after step 5 stores
    assert sum(s for _, _, s in full[:5]) > 0, "the test needs failures before the resume point"
    rest = [(b["audio"], list(b["text"])) for b in train_loader(urls[0], start_step=5, consumed=positions, **kw)]
    assert len(rest) == 3
    for (a1, t1, _), (a2, t2) in zip(full[5:], rest):
        assert t1 == t2
        torch.testing.assert_close(a1, a2, atol=0, rtol=0)
