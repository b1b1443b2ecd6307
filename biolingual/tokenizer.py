"""A byte-level BPE tokenizer trained locally from captions, in RoBERTa's format.

A model trained from scratch needs a tokenizer without downloading one; this trains the same kind
RoBERTa uses (byte-level BPE, <s> ... </s>), so the result loads with transformers' AutoTokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import RobertaTokenizer

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
MAX_TEXT_TOKENS = 77  # CLAP pads/truncates captions to 77 tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int = 50265, min_frequency: int = 1) -> RobertaTokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` (at most ``vocab_size`` tokens)."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("tokenizer_texts is empty: give the captions (or label names) the model will read")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return RobertaTokenizer(tokenizer_object=bpe._tokenizer, model_max_length=MAX_TEXT_TOKENS)
