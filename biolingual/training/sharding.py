"""FSDP2 for a BioLingual model: shard each text layer and audio stage, then the rest, over every process.

The trainer shards the model itself (``torch.distributed.fsdp.fully_shard``) rather than through
``accelerator.prepare``, so that one code path runs on a GPU node under ``accelerate launch`` with
``configs/accelerate/fsdp.yaml`` and on CPU processes (gloo) under ``torchrun`` with
``--train.fsdp true``: accelerate only knows FSDP on accelerators, and the CPU path is what the tests
can run (tests/test_training_distributed.py).

``ClapModel``'s temperatures (``logit_scale_a``/``logit_scale_t``) are 0-dimensional, which
``fully_shard`` cannot split. Reshaping them would change the checkpoint format that transformers
reads, so they stay whole on every process (``ignored_params``), and their gradients are averaged by
:func:`average_replicated_grads`, as DDP would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters FSDP cannot shard (0-dimensional ones), which every process keeps whole."""
    return [p for p in model.parameters() if p.ndim == 0]


def shard_model(
    model: nn.Module, device: torch.device, reshard_after_forward: bool = True, param_dtype: torch.dtype | None = None
) -> nn.Module:
    """Move ``model`` to ``device`` and shard it in place over the default process group; returns it.

    Each ``ClapTextLayer`` and ``ClapAudioStage`` is its own FSDP unit (gathered only while it runs);
    the embeddings, projections and norms form the root unit. ``param_dtype`` (bf16 training) gathers
    and computes with parameters in that dtype, which halves the all-gather traffic, while gradients are
    reduced and the sharded master weights kept in float32 (FSDP2's ``MixedPrecisionPolicy``).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers.models.clap.modeling_clap import ClapAudioStage, ClapTextLayer

    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    ignored = set(replicated_parameters(model))
    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward, "ignored_params": ignored}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for module in model.modules():
        if isinstance(module, (ClapTextLayer, ClapAudioStage)):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def average_replicated_grads(model: nn.Module) -> None:
    """Average the gradients of the unsharded parameters over processes (FSDP reduces only the sharded ones)."""
    grads = [p.grad for p in replicated_parameters(model) if p.grad is not None]
    if not grads or dist.get_world_size() == 1:
        return
    flat = torch.stack([g.reshape(()) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for g, value in zip(grads, flat):
        g.copy_(value)


def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of a sharded model (DTensor shards plus whole replicated parameters);
    returns the norm before clipping, as a tensor on the gradients' device.

    ``torch.nn.utils.clip_grad_norm_`` cannot stack the norms of DTensor and plain gradients together, so
    the squared norms are summed by hand: a shard's norm is completed over processes, a replicated
    parameter's (the same on every process) is counted once. Everything stays on the device, with no
    ``.item()`` or ``.cpu()`` per parameter: on a GPU each of those would wait for the step's kernels.
    """
    from torch.distributed.tensor import DTensor

    sharded, plain = [], []
    for p in model.parameters():
        if p.grad is not None:
            (sharded if isinstance(p.grad, DTensor) else plain).append(p.grad)
    local = [g.to_local() for g in sharded]
    device = (local or plain)[0].device if (local or plain) else torch.device("cpu")

    def squared(grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads:
            return torch.zeros((), dtype=torch.float32, device=device)
        return torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float32) for g in grads]).square().sum()

    sharded_sq = squared(local)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sharded_sq, op=dist.ReduceOp.SUM)
    norm = (sharded_sq + squared(plain)).sqrt()
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in local + plain:
        g.mul_(scale.to(g.dtype))
    return norm
