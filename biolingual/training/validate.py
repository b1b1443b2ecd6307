"""Validation: embed held-out shards and score retrieval both ways.

:func:`validate` embeds with a whole model in one process (:func:`biolingual.embedding.embed_shards`).
:func:`embed_across_ranks` is the trainer's: every process of a job embeds its share of the validation
shards with the training model as it is (DDP or FSDP-sharded) and the main process gathers the
embeddings. No process waits idle while another embeds everything (a long validation on GPU 0 alone
trips NCCL's 10-minute collective timeout on the others), and no second whole copy of the model is
made on GPU 0. Under FSDP each forward is a collective, so the processes embed in lockstep: one that
has run out of shards embeds a repeat of its last batch, which it throws away, until all have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..data import eval_loader, expand_shards
from ..embedding import embed_shards
from ..metrics import relevance_key, retrieval_metrics
from ..model import BioLingual

log = logging.getLogger("biolingual.train")


def validate(model: BioLingual, pattern: str, batch_size: int = 64, workers: int = 2, max_samples: int = 0) -> dict:
    """Retrieval metrics (R@1/5/10, P@k, mAP@10, both directions), with eval.retrieval's caption rule:
    items whose captions are equal once the "The sound of a(n) " template is stripped are matches."""
    audio, text, captions, _, _ = embed_shards(model, pattern, batch_size, workers, max_samples)
    return retrieval_metrics(audio, text, captions=[relevance_key(c) for c in captions])


def scores(audio: np.ndarray, text: np.ndarray, captions: list[str]) -> dict:
    """:func:`validate`'s metrics of embeddings already made."""
    return retrieval_metrics(audio, text, captions=[relevance_key(c) for c in captions])


def embed_across_ranks(
    encode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    model: BioLingual,
    pattern: str,
    *,
    batch_size: int,
    workers: int,
    max_samples: int = 0,
    rank: int = 0,
    world: int = 1,
    lockstep: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(audio [N, D], text [N, D], captions) of the validation shards on rank 0 (None on the others).

    Shard ``i`` of ``pattern`` is embedded by rank ``i % world`` with ``encode(audio, input_ids,
    attention_mask) -> (audio embeddings, text embeddings)`` (the training model's forward, run by the
    caller's no-grad and precision context); ``model`` gives the tokenizer, rate and window. With
    ``lockstep`` (FSDP) every rank calls ``encode`` the same number of times. ``max_samples`` (0: all)
    keeps the first that many of the gathered set, each rank embedding at most its share of them."""
    urls = [u for source in expand_shards(pattern, "valid") for u in source]
    mine = urls[rank::world]
    batches = (
        iter(
            eval_loader(
                mine,
                batch_size=batch_size,
                workers=workers,
                sampling_rate=model.sampling_rate,
                clip_samples=model.window_samples,
            )
        )
        if mine
        else iter(())
    )
    limit = math.ceil(max_samples / world) if max_samples else 0
    audio, text, captions, seen, last = [], [], [], 0, None
    device = model.device
    while True:
        batch = None if limit and seen >= limit else next(batches, None)
        while batch is not None and not batch["text"]:  # a batch of only undecodable samples
            batch = next(batches, None)
        if lockstep and world > 1:
            going = torch.tensor([0 if batch is None else 1], device=device)
            dist.all_reduce(going, op=dist.ReduceOp.MAX)
            if not going.item():
                break
            if batch is None and last is None:  # no batch of its own yet: a one-clip stand-in
                last = {"audio": torch.zeros(1, model.window_samples), "text": ["silence"]}
        elif batch is None:
            break
        current = batch if batch is not None else last
        tokens = model.tokenize(current["text"])
        a, t = encode(current["audio"].to(device, non_blocking=True), tokens["input_ids"], tokens["attention_mask"])
        if batch is None:
            continue  # a lockstep repeat: its embeddings are not part of the set
        last = batch
        audio.append(a.float().cpu().numpy())
        text.append(t.float().cpu().numpy())
        captions.extend(batch["text"])
        seen += len(batch["text"])
    if world > 1:
        log.info("validation: rank %d of %d embedded %d samples of %d shards", rank, world, seen, len(mine))
    dim = model.embedding_dim
    share = (
        np.concatenate(audio) if audio else np.zeros((0, dim), np.float32),
        np.concatenate(text) if text else np.zeros((0, dim), np.float32),
        captions,
    )
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(share, gathered, dst=0)
        if rank != 0:
            return None
        # back in shard order is not needed (retrieval metrics do not depend on the order), rank order is kept
        share = (
            np.concatenate([g[0] for g in gathered]),
            np.concatenate([g[1] for g in gathered]),
            [c for g in gathered for c in g[2]],
        )
    if not share[2]:
        raise ValueError(f"the validation shards '{pattern}' gave no usable sample")
    n = min(len(share[2]), max_samples) if max_samples else len(share[2])
    return share[0][:n], share[1][:n], share[2][:n]
