"""The probe: a small MLP trained on one layer's pooled features (or a fusion of layers), with the protocol of
Sarkar & Magimai-Doss (ICASSP 2025): three [Linear, LayerNorm, ReLU] blocks (128, 64, 32) and a final Linear,
cross-entropy, Adam 1e-3 with a plateau schedule on validation loss, 30 epochs of batch 16, early stopping on
validation UAR, and the test scores of the best-UAR epoch."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from biolingual.metrics import accuracy, confusion_matrix, unweighted_average_recall

from ..seeding import seed_everything

FUSIONS = ("concat", "weighted")


@dataclass(frozen=True)
class ProbeConfig:
    hidden: tuple[int, ...] = (128, 64, 32)
    lr: float = 1e-3
    epochs: int = 30
    batch_size: int = 16
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    early_stop_patience: int = 10
    seed: int = 12345

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


class MLPProbe(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, hidden=(128, 64, 32)):
        super().__init__()
        layers, width = [], in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WeightedLayerSum(nn.Module):
    """Layer fusion by a learned convex combination: softmax(w) over layers weighs [B, layers, D] inputs
    (each layer standardised), and the MLP reads the [B, D] sum."""

    def __init__(self, num_layers: int, probe: nn.Module):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))
        self.probe = probe

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(torch.einsum("l,bld->bd", self.weights(), x))


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every feature to zero mean and unit variance with the training split's statistics: mean and the
    unbiased standard deviation (ddof 1, the paper's ``torch.std``). A feature constant on the training split
    is only centred (the paper divides by std + 1e-10, which turns it into huge values on other splits)."""
    mean, std = train.mean(0), train.std(0, ddof=1) if len(train) > 1 else np.zeros(train.shape[1:])
    std = np.where(std > 1e-8, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def train_probe(
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    num_classes: int,
    config: ProbeConfig = ProbeConfig(),
    fusion: str | None = None,
) -> dict:
    """Train on ``x["train"]`` and pick the epoch by validation UAR; report its test scores.

    ``x[split]`` is [N, D] standardised features, or [N, layers, D] with ``fusion`` "weighted".
    Returns test/valid UAR and accuracy, the best epoch, the test confusion matrix, the per-epoch history,
    and (weighted fusion) the learned layer weights.
    """
    seed_everything(config.seed)
    tensors = {s: torch.from_numpy(np.ascontiguousarray(v)).float() for s, v in x.items()}
    targets = {s: torch.from_numpy(np.asarray(v)).long() for s, v in y.items()}
    width = tensors["train"].shape[-1]
    model: nn.Module = MLPProbe(width, num_classes, config.hidden)
    if fusion == "weighted":
        model = WeightedLayerSum(tensors["train"].shape[1], model)
    elif tensors["train"].ndim != 2:
        raise ValueError("features must be [N, D] unless fusion is 'weighted'")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=config.plateau_factor, patience=config.plateau_patience
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)

    def evaluate(split: str) -> tuple[float, np.ndarray]:
        model.eval()
        with torch.no_grad():
            logits = model(tensors[split])
        return float(loss_fn(logits, targets[split])), logits.argmax(1).numpy()

    best, history, since_best = None, [], 0
    n = len(tensors["train"])
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            opt.zero_grad()
            loss = loss_fn(model(tensors["train"][idx]), targets["train"][idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        valid_loss, valid_pred = evaluate("valid")
        valid_uar = unweighted_average_recall(y["valid"], valid_pred)
        plateau.step(valid_loss)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / n,
                "valid_loss": valid_loss,
                "valid_uar": valid_uar,
                "lr": opt.param_groups[0]["lr"],
            }
        )
        if best is None or valid_uar > best["valid_uar"]:
            best = {
                "epoch": epoch,
                "valid_uar": valid_uar,
                "valid_accuracy": accuracy(y["valid"], valid_pred),
                "state": copy.deepcopy(model.state_dict()),
            }
            since_best = 0
        else:
            since_best += 1
            if since_best >= config.early_stop_patience:
                break
    model.load_state_dict(best.pop("state"))
    _, test_pred = evaluate("test")
    result = {
        **best,
        "test_uar": unweighted_average_recall(y["test"], test_pred),
        "test_accuracy": accuracy(y["test"], test_pred),
        "confusion": confusion_matrix(y["test"], test_pred, labels=list(range(num_classes))).tolist(),
        "epochs_run": len(history),
        "history": history,
    }
    if fusion == "weighted":
        result["layer_weights"] = model.weights().detach().tolist()
    return result
