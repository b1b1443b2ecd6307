"""biolingual.data: resampled training streams and deterministic validation streams over real shards."""

import itertools
import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from biolingual.data import ShardError, check_shards, eval_loader, expand_shards, train_loader
from biolingual.synthetic import synth_call
from data_pipeline.shards import flac_bytes

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

    def make(**kw):
        return _batches(train_loader(_pattern(d), batch_size=4, steps_per_epoch=4, workers=2, clip_samples=CLIP, **kw))

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
    loader = train_loader(
        f"{tmp_path}/a-000000.tar::{tmp_path}/b-000000.tar",
        weights=[1.0, 0.0],
        batch_size=4,
        steps_per_epoch=4,
        workers=0,
        clip_samples=CLIP,
        shuffle_buffer=10,
    )
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
    import io
    import tarfile

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
    loader = train_loader(
        f"{good[0]}::{tmp_path}/allbad-000000.tar",
        weights=[0.0, 1.0],
        batch_size=2,
        steps_per_epoch=4,
        workers=workers,
        clip_samples=CLIP,
        shuffle_buffer=10,
        max_bad_in_row=30,
    )
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
    loader = train_loader(
        f"{good[0]}::{tmp_path}/junk-{{000000..000001}}.tar",
        weights=[0.0, 1.0],
        batch_size=2,
        steps_per_epoch=2,
        workers=0,
        clip_samples=CLIP,
        max_bad_in_row=10,
    )
    with pytest.raises(ShardError, match=r"junk-000001\.tar' \(ReadError"):
        list(loader)


def test_check_usable_needs_one_sample_with_audio_and_a_caption(tmp_path):
    import tarfile

    from biolingual.data import check_usable

    with tarfile.open(tmp_path / "bad-000000.tar", "w"):
        pass
    _corrupt_shard(tmp_path / "bad-000000.tar", 3)
    with pytest.raises(
        ShardError, match=r"validation shards .*hold no usable sample.*bad-000000\.tar.*(decode|format|Error)"
    ):
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


# ---- issue 24: loader memory, build folders, mixing shards, persistent workers --------------------
def _raw_audio(shard_paths) -> dict:
    """key -> the FLAC bytes of every sample in the shards, read with tarfile (not through the loader)."""
    import tarfile

    found = {}
    for path in shard_paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".flac"):
                    found[member.name[: -len(".flac")]] = tar.extractfile(member).read()
    return found


def test_int16_pcm_crosses_the_worker_boundary_within_a_gib_and_batches_are_unchanged(shards):
    """Workers used to ship whole float32 batches, prefetch 4 per worker: at configs/base.yaml's settings
    (batch 170, 8 workers, 10 s at 48 kHz) 4 x 8 x 170 x 1.92 MB = 10.4 GB of /dev/shm per rank. Now each
    worker ships its share of a batch (170 / 8 -> at most 22 clips) as int16 PCM, prefetch 2."""
    from biolingual.audio import repeat_pad
    from biolingual.data import decode_audio_bytes

    d, urls, _ = shards
    loader = train_loader(_pattern(d), batch_size=6, steps_per_epoch=4, workers=2, clip_samples=CLIP)
    item = next(iter(loader.loader))  # what one worker hands the main process, as it crosses
    assert item["audio"].dtype == torch.int16
    assert len(item["text"]) == 6 // 2  # one worker's share of a batch, not a whole batch
    per_clip = item["audio"].element_size() * 480_000  # bytes of one 10 s clip across the boundary
    base_item = math.ceil(170 / 8)
    in_flight = loader.loader.prefetch_factor * 8 * base_item * per_clip  # items queued per worker x workers
    assert in_flight <= 2**30, f"{in_flight / 2**30:.2f} GiB of /dev/shm at base.yaml's settings"
    # The batches are the decoded float32 audio: for 16-bit FLAC at 48 kHz (what the pipeline writes),
    # int16 PCM holds every sample exactly (tolerance 0); see test_pcm16_round_trip for other audio.
    raw = _raw_audio(urls)
    for batch in loader:
        assert batch["audio"].dtype == torch.float32 and batch["audio"].shape == (6, CLIP)
        for key, audio in zip(batch["key"], batch["audio"]):
            expected = repeat_pad(decode_audio_bytes(raw[key], RATE), CLIP)  # 1 s clips: padded, never cropped
            torch.testing.assert_close(audio, torch.from_numpy(expected), atol=0, rtol=0)


def test_pcm16_round_trip():
    """Audio that is not 16-bit at 48 kHz (resampled, 24-bit, mixed to mono) is off by at most half an
    int16 step, 2**-16 (one step within half a step of +1); values outside [-1, 1) are clipped, as
    LAION-CLAP's int16 round trip does."""
    from biolingual.data import pcm16_to_float, to_pcm16

    rng = np.random.default_rng(0)
    audio = rng.uniform(-1, 1, 10_000).astype(np.float32)
    back = pcm16_to_float(torch.from_numpy(to_pcm16(audio))).numpy()
    error = np.abs(back - audio)
    assert error[audio < 1 - 2**-16].max() <= 2**-16 and error.max() <= 2**-15
    exact = (rng.integers(-32768, 32768, 1000) / 32768).astype(np.float32)  # what soundfile gives for PCM_16
    assert np.array_equal(pcm16_to_float(torch.from_numpy(to_pcm16(exact))).numpy(), exact)
    loud = pcm16_to_float(torch.from_numpy(to_pcm16(np.array([1.5, -2.0], np.float32)))).numpy()
    assert loud.tolist() == [32767 / 32768, -1.0]


def _partitioned_folder(folder):
    """A build folder as two --partition parts leave it: train shards 0, 2 (part 1), 1, 4 (part 2), so
    number 3 is missing; 1 and 4 are the parts' short tail shards (3 and 5 samples against 8)."""
    made = {}
    for number, (prefix, n_species, per_species) in {
        0: ("pa", 4, 2),
        2: ("pb", 4, 2),
        1: ("pc", 3, 1),
        4: ("pd", 5, 1),
    }.items():
        urls, _ = write_shards(
            folder / "parts",
            prefix,
            n_species=n_species,
            per_species=per_species,
            per_shard=8,
            seed=number,
            seconds=0.3,
        )
        target = folder / f"train-{number:06d}.tar"
        Path(urls[0]).rename(target)
        made[target.name] = n_species * per_species
    valid, _ = write_shards(folder / "parts", "valid", n_species=4, per_species=1, per_shard=8, seed=7)
    Path(valid[0]).rename(folder / "valid-000000.tar")
    made["valid-000000.tar"] = 4
    (folder / "sizes.json").write_text(json.dumps(made))
    return {name: n for name, n in made.items() if name.startswith("train")}


def test_a_partitioned_build_folder_is_read_through_its_sizes_and_each_sample_drawn_equally(tmp_path):
    """A brace pattern cannot name shards 0, 1, 2, 4; the folder can. Shards are drawn with equal
    weight and each draw reads its whole shard, so every sample is equally frequent: a tail shard's
    samples no more than a full one's (weighting the draws by size would make a 3-sample shard's samples
    3/8 as frequent). Measured on the stream's own shard choices and on the samples it yields."""
    from biolingual.data import TrainStream

    sizes = _partitioned_folder(tmp_path)
    sources = expand_shards(str(tmp_path))
    assert [Path(u).name for u in sources[0]] == sorted(sizes)
    assert [Path(u).name for u in expand_shards(str(tmp_path), split="valid")[0]] == ["valid-000000.tar"]
    stream = train_loader(str(tmp_path), batch_size=4, steps_per_epoch=1, workers=0, clip_samples=CLIP).stream
    draws = Counter(Path(u["url"]).name for u in itertools.islice(stream._shard_urls(random.Random(0)), 40_000))
    for name in sizes:
        assert abs(draws[name] / 40_000 - 1 / len(sizes)) < 0.01, draws
    loader = train_loader(
        str(tmp_path), batch_size=4, steps_per_epoch=150, workers=0, clip_samples=RATE // 10, shuffle_buffer=8, seed=1
    )
    shard_of = {key: name for name in sizes for key in _raw_audio([tmp_path / name])}
    seen = Counter(shard_of[k] for batch in loader for k in batch["key"])
    total = sum(seen.values())
    for name, n in sizes.items():  # each sample's share of the stream, per shard (600 samples, 24 in the set)
        assert abs(seen[name] / total / n - 1 / sum(sizes.values())) < 0.5 / sum(sizes.values()), (seen, sizes)
    assert isinstance(stream, TrainStream)


def test_a_batch_draws_from_many_shards(tmp_path):
    """Shards of one species each, as large as the shuffle buffer (base.yaml: 2,000 and 2,000): a batch
    used to come from one worker's buffer, one or two shards; now each worker reads several shards at
    once and a batch is the share of every worker."""
    for k in range(12):
        write_shards(tmp_path, f"s{k:02d}", n_species=1, per_species=8, per_shard=8, seed=k, seconds=0.2)
    loader = train_loader(
        str(tmp_path / "s{00..11}-000000.tar"),
        batch_size=16,
        steps_per_epoch=6,
        workers=2,
        clip_samples=RATE // 10,
        shuffle_buffer=8,
        seed=2,
    )
    shards_per_batch = [len({key.split("_")[0] for key in batch["key"]}) for batch in loader]
    assert min(shards_per_batch) >= 6, shards_per_batch


def test_loader_workers_live_across_epochs_and_give_the_same_batches(shards):
    """Each epoch used to start its loader's worker processes again; the next epoch's loader now keeps
    them (persistent workers told the epoch through shared memory), with the batches of a fresh loader."""
    d, _, _ = shards
    kw = dict(batch_size=4, steps_per_epoch=3, workers=2, clip_samples=CLIP, seed=4)
    first = train_loader(_pattern(d), epoch=0, **kw)
    pids_before = {pid for batch in first for pid in batch["worker_pids"]}
    second = train_loader(_pattern(d), epoch=1, previous=first, **kw)
    kept = [(b["audio"].clone(), b["text"], set(b["worker_pids"])) for b in second]
    assert {pid for _, _, pids in kept for pid in pids} == pids_before and len(pids_before) == 2
    fresh = _batches(train_loader(_pattern(d), epoch=1, **kw))
    assert len(fresh) == len(kept) == 3
    for (a1, t1), (a2, t2, _) in zip(fresh, kept):
        torch.testing.assert_close(a1, a2, atol=0, rtol=0)
        assert t1 == t2
    resumed = train_loader(_pattern(d), epoch=1, start_step=1, previous=second, **kw)  # mid-epoch, same workers
    for (a1, t1), b in zip(fresh[1:], resumed):
        torch.testing.assert_close(a1, b["audio"], atol=0, rtol=0)
        assert t1 == b["text"] and set(b["worker_pids"]) <= pids_before
