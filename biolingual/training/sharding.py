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


def shard_model(model: nn.Module, device: torch.device, reshard_after_forward: bool = True) -> nn.Module:
    """Move ``model`` to ``device`` and shard it in place over the default process group; returns it.

    Each ``ClapTextLayer`` and ``ClapAudioStage`` is its own FSDP unit (gathered only while it runs);
    the embeddings, projections and norms form the root unit.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers.models.clap.modeling_clap import ClapAudioStage, ClapTextLayer

    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    ignored = set(replicated_parameters(model))
    for module in model.modules():
        if isinstance(module, (ClapTextLayer, ClapAudioStage)):
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward, ignored_params=ignored)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, ignored_params=ignored)
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
    """Clip the global gradient norm of a sharded model (DTensor shards plus whole replicated parameters).

    ``torch.nn.utils.clip_grad_norm_`` cannot stack the norms of DTensor and plain gradients together, so
    the squared norms are summed by hand: a shard's norm is completed over processes, a replicated
    parameter's (the same on every process) is counted once.
    """
    from torch.distributed.tensor import DTensor

    sharded_sq = torch.zeros((), dtype=torch.float32)
    plain_sq = torch.zeros((), dtype=torch.float32)
    grads = []
    for p in model.parameters():
        if p.grad is None:
            continue
        g = p.grad
        grads.append(g)
        if isinstance(g, DTensor):
            sharded_sq += g.to_local().detach().float().pow(2).sum().cpu()
        else:
            plain_sq += g.detach().float().pow(2).sum().cpu()
    if dist.is_initialized() and dist.get_world_size() > 1:
        device = next(model.parameters()).device
        total = sharded_sq.to(device if device.type != "cpu" else "cpu")
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        sharded_sq = total.cpu()
    norm = (sharded_sq + plain_sq).sqrt()
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        local = g.to_local() if isinstance(g, DTensor) else g
        local.mul_(scale.to(local.device, local.dtype))
    return norm
