"""An exponential moving average (EMA) of a model's weights, for ``train.ema_decay``.

After every optimizer step ``ema = d * ema + (1 - d) * weights`` with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates (TensorFlow's ``ExponentialMovingAverage(num_updates=)`` rule): early on, when the
initial weights are still far from anything useful, the average follows the weights closely instead of
holding on to the random start for ~1/(1 - decay) steps.

Only parameters are averaged; buffers (the input BatchNorm's running statistics) are the model's own,
as in timm's ``ModelEmaV3`` default. The average is held beside each parameter as the parameter is held
on this process (whole under DDP, this process's shard under FSDP2), so it costs one more copy of the
process's weights and no communication. :meth:`EMA.applied` swaps it into the model for validation and
export; checkpoints store it as a whole state dict taken while it is applied, so a resume restores it
into any layout (:meth:`EMA.capture` after loading those weights).

In: the model (its parameters, in the order ``parameters()`` gives them) and the decay. Out: the average.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.updates = 0
        self.capture()

    @torch.no_grad()
    def capture(self) -> None:
        """Take the model's current weights as the average (at the start, and after loading a checkpoint's average)."""
        self.shadow = [p.detach().clone() for p in self.params]

    def rate(self) -> float:
        """The decay of the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after an optimizer step."""
        weight = 1.0 - self.rate()
        for avg, p in zip(self.shadow, self.params):
            avg.lerp_(p.detach(), weight)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """Within the ``with`` body the model's parameters hold the average; the trained weights come back on exit."""
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            for p, avg in zip(self.params, self.shadow):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(self.params, kept):
                    p.copy_(weights)
