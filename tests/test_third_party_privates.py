"""The private names of other projects we rely on, each pinned: it exists and does what we use it for. A new
release that moves one fails here, naming it, instead of somewhere deep in training or captioning.

Checked with: webdataset 1.0.2, accelerate 1.16.0, tokenizers 0.23.3, httpx2/httpcore2 2.17.0."""

import random

import pytest


def test_webdataset_filters_shuffle_takes_our_rng():
    """biolingual/data.py shuffles a stream with a seeded rng (resumable streams need it); the public
    ``wds.shuffle`` stage builds its own rng."""
    import webdataset as wds

    items = list(range(50))
    a = list(wds.filters._shuffle(iter(items), 10, 5, rng=random.Random(1)))
    b = list(wds.filters._shuffle(iter(items), 10, 5, rng=random.Random(1)))
    assert a == b and sorted(a) == items and a != items


def test_accelerate_state_can_be_reset_between_runs_in_one_process():
    """biolingual/training/loop.py resets accelerate's per-process state so a second Trainer in one process
    (a notebook, the tests) may ask for another precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    assert Accelerator(mixed_precision="no", cpu=True).mixed_precision == "no"
    AcceleratorState._reset_state()
    assert Accelerator(mixed_precision="bf16", cpu=True).mixed_precision == "bf16"
    AcceleratorState._reset_state()


def test_a_trained_byte_level_bpe_exposes_its_tokenizer_object():
    """biolingual/tokenizer.py hands a locally trained ByteLevelBPETokenizer's ``_tokenizer`` (a
    ``tokenizers.Tokenizer``) to transformers' RobertaTokenizer."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a barred owl calling", "a spring peeper"], vocab_size=300, show_progress=False)
    assert isinstance(bpe._tokenizer, Tokenizer)


def test_httpx2_transport_keeps_its_network_backend_where_the_caption_deadline_wraps_it():
    """data_pipeline/captioning/llm.py bounds every connect/read/write of the openai client by wrapping the
    transport's pool's network backend (httpx2 offers no public hook)."""
    httpx2 = pytest.importorskip("httpx2")
    httpcore2 = pytest.importorskip("httpcore2")
    transport = httpx2.HTTPTransport()
    assert isinstance(transport._pool._network_backend, httpcore2.NetworkBackend)
