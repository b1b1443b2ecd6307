"""The training losses of CLAP models, each exact on any number of processes: symmetric InfoNCE
(:class:`ContrastiveLoss`), the sigmoid loss of SigLIP (:class:`SigmoidLoss`) and distillation from a
teacher (:class:`DistillationLoss`).

``ContrastiveLoss()(audio_embeddings, text_embeddings, logit_scale)`` takes this process's L2-normalised
``[B, D]`` audio and text embeddings and the temperature multiplier (``logit_scale``, already
exponentiated, e.g. ``clap.logit_scale_a.exp()``) and returns the scalar loss::

    logits_per_audio = s * audio_embeddings @ all_text.T     # [B, world * B]
    logits_per_text  = s * text_embeddings  @ all_audio.T    # [B, world * B]
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

# SigLIP's initial bias (Zhai et al. 2023, section 3.2): with B - 1 negatives per positive, a start near
# log(1/B) keeps the first steps from spending themselves pushing every pair's probability down.
SIGMOID_BIAS_INIT = -10.0

__all__ = [
    "MAX_LOGIT_SCALE",
    "SIGMOID_BIAS_INIT",
    "ContrastiveLoss",
    "DistillationLoss",
    "SigmoidLoss",
    "clamp_logit_scale_",
    "gather_with_grad",
]


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
        self, audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_audio, logits_per_text), each float32 ``[B, world * B]``."""
        if audio_embeddings.ndim != 2 or audio_embeddings.shape != text_embeddings.shape:
            raise ValueError(
                f"audio_embeddings and text_embeddings must both be [B, D] with the same shape, "
                f"got {tuple(audio_embeddings.shape)} and {tuple(text_embeddings.shape)}"
            )
        device = audio_embeddings.device
        with torch.autocast(device_type=device.type, enabled=False):
            audio = audio_embeddings.float()
            text = text_embeddings.float()
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
        self, audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> torch.Tensor:
        logits_per_audio, logits_per_text = self.get_logits(audio_embeddings, text_embeddings, logit_scale)
        labels = self.get_labels(logits_per_audio.shape[0], logits_per_audio.device)
        with torch.autocast(device_type=logits_per_audio.device.type, enabled=False):
            return (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_text, labels)) / 2


class SigmoidLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023) over the global batch::

        logits = s * audio_embeddings @ all_text.T + b          # [B, world * B], this process's rows
        z = +1 on the matching pair (row i, column rank * B + i), -1 elsewhere
        loss = -sum(logsigmoid(z * logits)) / B

    ``s = min(logit_scale, 100)`` and ``b`` (``logit_bias``) are learnable scalars. Each pair is scored
    once (the loss is symmetric in audio and text), so only the texts are gathered, with gradient: the
    SigLIP paper's chunked exchange computes the same sum with less memory; this is its gathered form.
    Dividing each process's sum by its own ``B`` makes the mean over processes (what DDP averages)
    exactly the single-process loss on the whole batch, whose sum is divided by ``world * B``, and the
    same holds for the gradients (tests/test_loss.py). Every process must pass the same ``B``.
    Computed in float32 even under autocast.
    """

    def __init__(self, max_logit_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        self.max_logit_scale = float(max_logit_scale)

    def get_logits(
        self, audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale, logit_bias
    ) -> torch.Tensor:
        """This process's audio rows against every process's texts, float32 ``[B, world * B]``."""
        if audio_embeddings.ndim != 2 or audio_embeddings.shape != text_embeddings.shape:
            raise ValueError(
                f"audio_embeddings and text_embeddings must both be [B, D] with the same shape, "
                f"got {tuple(audio_embeddings.shape)} and {tuple(text_embeddings.shape)}"
            )
        device = audio_embeddings.device
        with torch.autocast(device_type=device.type, enabled=False):
            scale = torch.clamp(torch.as_tensor(logit_scale, device=device).float(), max=self.max_logit_scale)
            bias = torch.as_tensor(logit_bias, device=device).float()
            all_text = gather_with_grad(text_embeddings.float())
            return scale * audio_embeddings.float() @ all_text.T + bias

    def forward(
        self, audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale, logit_bias
    ) -> torch.Tensor:
        logits = self.get_logits(audio_embeddings, text_embeddings, logit_scale, logit_bias)
        b = logits.shape[0]
        rank = dist.get_rank() if _distributed() else 0
        with torch.autocast(device_type=logits.device.type, enabled=False):
            signs = -torch.ones_like(logits)
            signs[torch.arange(b, device=logits.device), torch.arange(b, device=logits.device) + rank * b] = 1.0
            return -F.logsigmoid(signs * logits).sum() / b


class DistillationLoss(nn.Module):
    """What a student learns from a teacher on one batch, returned as ``{name: scalar}``.

    * ``feature``: ``1 - cos(student, teacher)`` of each clip's audio embedding (and each caption's text
      embedding), averaged. For unit vectors this is half their squared distance, the feature
      distillation that CLIP-KD (Yang et al., CVPR 2024) found the strongest single signal; it needs the
      student to embed into the teacher's space, so both must have the same embedding size.
    * ``affinity``: the teacher's similarity matrix over the global batch, taught row by row:
      ``KL(softmax(teacher row) || softmax(student row))`` (TinyCLIP's affinity mimicking, CLIP-KD's
      relational term), audio->text and text->audio with captions, audio->audio without them (the
      diagonal, each clip against itself, is left out). It passes on what the teacher knows about which
      sounds resemble which, which a one-hot contrastive target does not, and needs no equal sizes. Each
      model's logits use its own temperature, so the student also learns the teacher's sharpness.

    Rows are this process's, columns are gathered from every process with gradient, and each term is a
    mean over this process's rows, so (as for the contrastive losses) the mean over processes is the
    single-process loss on the whole batch, gradients included. ``text`` and ``teacher_text`` are None for
    audio-only batches. Teacher tensors carry no gradient.
    """

    def __init__(self, max_logit_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        self.max_logit_scale = float(max_logit_scale)

    def forward(
        self,
        audio: torch.Tensor,
        teacher_audio: torch.Tensor,
        scale,
        teacher_scale,
        text: torch.Tensor | None = None,
        teacher_text: torch.Tensor | None = None,
        feature: bool = True,
    ) -> dict[str, torch.Tensor]:
        device = audio.device
        with torch.autocast(device_type=device.type, enabled=False):
            s = torch.clamp(torch.as_tensor(scale, device=device).float(), max=self.max_logit_scale)
            ts = torch.clamp(torch.as_tensor(teacher_scale, device=device).float(), max=self.max_logit_scale)
            audio, teacher_audio = audio.float(), teacher_audio.detach().float()
            out = {}
            if feature:
                terms = [1 - F.cosine_similarity(audio, teacher_audio, dim=-1).mean()]
                if text is not None:
                    terms.append(1 - F.cosine_similarity(text.float(), teacher_text.detach().float(), dim=-1).mean())
                out["feature"] = sum(terms) / len(terms)
            b = audio.shape[0]
            if text is not None:
                text, teacher_text = text.float(), teacher_text.detach().float()
                both = gather_with_grad(torch.cat([audio, text], dim=1))
                all_audio, all_text = both.split(audio.shape[1], dim=1)
                t_both = gather_with_grad(torch.cat([teacher_audio, teacher_text], dim=1))
                t_all_audio, t_all_text = t_both.split(teacher_audio.shape[1], dim=1)
                pairs = [
                    (s * audio @ all_text.T, ts * teacher_audio @ t_all_text.T),
                    (s * text @ all_audio.T, ts * teacher_text @ t_all_audio.T),
                ]
            else:
                all_audio = gather_with_grad(audio)
                t_all_audio = gather_with_grad(teacher_audio)
                rank = dist.get_rank() if _distributed() else 0
                self_pair = torch.zeros(b, all_audio.shape[0], dtype=torch.bool, device=device)
                self_pair[torch.arange(b, device=device), torch.arange(b, device=device) + rank * b] = True
                pairs = [
                    (
                        (s * audio @ all_audio.T).masked_fill(self_pair, -1e4),
                        (ts * teacher_audio @ t_all_audio.T).masked_fill(self_pair, -1e4),
                    )
                ]
            out["affinity"] = sum(
                F.kl_div(
                    F.log_softmax(student, dim=-1),
                    F.log_softmax(teacher, dim=-1),
                    log_target=True,
                    reduction="batchmean",
                )
                for student, teacher in pairs
            ) / len(pairs)
        return out
