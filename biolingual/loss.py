"""Symmetric contrastive (InfoNCE) loss for training CLAP models, correct on any number of processes.

``ContrastiveLoss()(audio_embeds, text_embeds, logit_scale)`` takes this process's L2-normalised
``[B, D]`` audio and text embeddings and the temperature multiplier (``logit_scale``, already
exponentiated, e.g. ``clap.logit_scale_a.exp()``) and returns the scalar loss::

    logits_per_audio = s * audio_embeds @ all_text.T     # [B, world * B]
    logits_per_text  = s * text_embeds  @ all_audio.T    # [B, world * B]
    loss = (CE(logits_per_audio, labels) + CE(logits_per_text, labels)) / 2
    labels = arange(B) + rank * B

with ``s = min(logit_scale, 100)``. ``all_text`` / ``all_audio`` are the embeddings of every process,
gathered *with* gradient (:func:`gather_with_grad`), so negatives come from the global batch and the
gradient flows back to the process that computed each embedding. Each process's loss is the mean
over its own ``B`` rows; averaging parameter gradients over processes (what DDP and
``accelerator.backward`` do) then gives exactly the gradient of the single-process loss on the
concatenated global batch. Every process must pass the same ``B`` (use ``drop_last=True``).

Unlike ``ClapModel(return_loss=True)`` -- which averages ``CE(logits_per_text)`` and
``CE(logits_per_audio.T)``, two text-query losses -- this loss is truly symmetric: one term ranks
texts for each audio query, the other ranks audio for each text query.

Logits and cross-entropy are computed in float32 even under autocast. The forward clamp has zero
gradient once the multiplier exceeds 100, so also keep the learnable log-scale itself in range by
calling :func:`clamp_logit_scale_` after each ``optimizer.step()``.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = 100.0

__all__ = ["MAX_LOGIT_SCALE", "ContrastiveLoss", "clamp_logit_scale_", "gather_with_grad"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums the incoming gradients over processes and returns
    this process's slice (a reduce-scatter written as all_reduce + slice, which gloo supports)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.size = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.size
        return grad[start : start + ctx.size]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``[B, ...]``, same shape on every process) from all processes along dim 0,
    in rank order, keeping the autograd graph: the gradient reaching each process's slice is the sum
    of the gradients every process sends to it. Returns ``x`` unchanged on a single process or when
    ``torch.distributed`` is not initialised.

    This is the one place that picks the gather implementation. It uses only the long-stable
    ``dist.all_gather`` / ``dist.all_reduce`` (torch >= 2.1), not ``torch.distributed.nn`` or
    ``_functional_collectives``, whose autograd gathers are being renamed/deprecated, so it raises
    no deprecation warning and behaves the same across torch versions and backends (gloo, NCCL).
    """
    if not _distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def clamp_logit_scale_(log_scale_param: torch.Tensor, max_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """Clamp a learnable log temperature in place to ``[0, ln(max_scale)]`` (multiplier in
    ``[1, max_scale]``); call after ``optimizer.step()``. Returns the parameter."""
    return log_scale_param.clamp_(0.0, math.log(max_scale))


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over negatives from all processes; see the module docstring.

    ``forward`` returns the scalar loss; :meth:`get_logits` and :meth:`get_labels` give this
    process's logits (local rows, global columns) and targets, e.g. for accuracy logging.
    """

    def __init__(self, max_logit_scale: float = MAX_LOGIT_SCALE, cache_labels: bool = True):
        super().__init__()
        self.max_logit_scale = float(max_logit_scale)
        self.cache_labels = cache_labels
        self._labels: dict[tuple, torch.Tensor] = {}

    def get_labels(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        """Targets ``arange(B) + rank * B``: row ``i`` of this process matches global column
        ``rank * B + i``."""
        rank = dist.get_rank() if _distributed() else 0
        key = (torch.device(device), batch_size, rank)
        labels = self._labels.get(key) if self.cache_labels else None
        if labels is None:
            labels = torch.arange(batch_size, device=device) + rank * batch_size
            if self.cache_labels:
                self._labels[key] = labels
        return labels

    def get_logits(
        self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_audio, logits_per_text), each float32 ``[B, world * B]``."""
        if audio_embeds.ndim != 2 or audio_embeds.shape != text_embeds.shape:
            raise ValueError(
                f"audio_embeds and text_embeds must both be [B, D] with the same shape, "
                f"got {tuple(audio_embeds.shape)} and {tuple(text_embeds.shape)}"
            )
        device = audio_embeds.device
        with torch.autocast(device_type=device.type, enabled=False):
            audio = audio_embeds.float()
            text = text_embeds.float()
            scale = torch.as_tensor(logit_scale, device=device).float()
            scale = torch.clamp(scale, max=self.max_logit_scale)
            if _distributed():
                # one collective for both modalities (one all_gather forward, one all_reduce backward)
                both = gather_with_grad(torch.cat([audio, text], dim=1))
                all_audio, all_text = both.split(audio.shape[1], dim=1)
            else:
                all_audio, all_text = audio, text
            logits_per_audio = scale * audio @ all_text.T
            logits_per_text = scale * text @ all_audio.T
        return logits_per_audio, logits_per_text

    def forward(
        self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> torch.Tensor:
        logits_per_audio, logits_per_text = self.get_logits(audio_embeds, text_embeds, logit_scale)
        labels = self.get_labels(logits_per_audio.shape[0], logits_per_audio.device)
        with torch.autocast(device_type=logits_per_audio.device.type, enabled=False):
            return (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_text, labels)) / 2
