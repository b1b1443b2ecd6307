"""What cached-feature gradient accumulation needs to give the gradient of one k-times larger batch.

``train.accum_steps = k`` embeds the k micro-batches of a step once without gradients (the cache), then
again one at a time with gradients, each against the cached embeddings of the others (GradCache, Gao
et al. 2021; open_clip's ``--accum-freq``). In training mode two things would make that differ from the
big batch, and this module removes both:

* **Randomness.** Dropout, stochastic depth and any augmentation draw new numbers on every forward, so
  the gradient pass of a micro-batch would see other masks than its cached pass: the loss mixes
  embeddings of two different networks. :func:`rng_state`/:func:`set_rng_state` save the generators
  before a micro-batch's cached pass and replay them before its gradient pass.
* **BatchNorm.** HTS-AT normalises its log-mel input with a ``BatchNorm2d`` whose training-mode
  statistics are those of the batch it is given: a micro-batch's, not the big batch's, and each of the
  2k forwards would update the running statistics again. :class:`WholeBatchNorm` computes the statistics
  of all k micro-batches together, normalises every forward with them, and updates the running
  statistics once, as the big batch's forward would. This is exact because nothing learnable comes
  before that layer (its input is the fixed front end's output), so treating the statistics as
  constants changes no parameter's gradient. A model with a BatchNorm deeper in the network (the
  fusion variant's attention blocks) keeps micro-batch statistics there, with a warning.

In: the model and the step's audio chunks. Out: contexts the trainer wraps its forwards in.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

log = logging.getLogger("biolingual.train")


def rng_state(device: torch.device) -> tuple:
    """The generators a forward may draw from: the CPU's and, on CUDA, the current device's."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def input_batch_norm(model: nn.Module) -> nn.BatchNorm2d | None:
    """The audio tower's input BatchNorm (over mel bins) of a BioLingual model, wrapped or not; None if it has none."""
    for name, module in model.named_modules():
        if name.endswith("audio_encoder.batch_norm") and isinstance(module, nn.BatchNorm2d):
            return module
    return None


_warned_deeper = False


class WholeBatchNorm(contextlib.AbstractContextManager):
    """Within the ``with`` body, the input BatchNorm of ``model`` normalises with the statistics of
    ``features`` (the front-end features of the whole step's batch, [B, 1, frames, mels]); on a clean
    exit its running statistics are updated once with them. Outside training mode it does nothing."""

    def __init__(self, model: nn.Module, features: torch.Tensor):
        self.norm = input_batch_norm(model) if model.training else None
        global _warned_deeper
        deeper = [
            n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m is not self.norm
        ]
        if deeper and model.training and not _warned_deeper:
            _warned_deeper = True
            log.warning(
                "train.accum_steps: %d BatchNorm layers besides the input one (e.g. %s) normalise with "
                "micro-batch statistics, so accumulation is not exactly one big batch",
                len(deeper),
                deeper[0],
            )
        if self.norm is None or not self.norm.training:
            self.norm = None
            return
        # the layer sees features.transpose(1, 3): channels are mel bins, statistics over (batch, frames)
        x = features.detach().float()
        self.count = x.numel() // x.shape[-1]
        self.mean = x.mean(dim=(0, 1, 2))
        self.var = x.var(dim=(0, 1, 2), unbiased=False)

    def __enter__(self):
        if self.norm is not None:
            norm, mean, var = self.norm, self.mean, self.var

            def forward(x: torch.Tensor) -> torch.Tensor:
                # eval-mode batch_norm with the whole batch's statistics: normalises, updates nothing
                return nn.functional.batch_norm(
                    x, mean.to(x.dtype), var.to(x.dtype), norm.weight, norm.bias, training=False, eps=norm.eps
                )

            norm.forward = forward  # an instance attribute: nn.Module.__call__ takes it over the class's
        return self

    def __exit__(self, kind, value, traceback):
        if self.norm is None:
            return None
        del self.norm.forward
        if kind is None and self.norm.track_running_stats:
            self._update_running_stats()
        return None

    @torch.no_grad()
    def _update_running_stats(self) -> None:
        """What one training-mode forward of the whole batch does to the running statistics."""
        norm = self.norm
        norm.num_batches_tracked += 1
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        unbiased = self.var * self.count / max(self.count - 1, 1)
        norm.running_mean.mul_(1 - momentum).add_(self.mean.to(norm.running_mean.dtype), alpha=momentum)
        norm.running_var.mul_(1 - momentum).add_(unbiased.to(norm.running_var.dtype), alpha=momentum)
