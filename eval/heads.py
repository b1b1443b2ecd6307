"""Supervised BEANS modes: a linear probe on frozen (cached) embeddings, and full fine-tuning of the
audio tower with a linear head. Both follow BEANS' protocol: Adam, a learning-rate grid, every lr x
epoch scored on the validation split, and the test score of the best one reported."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from biolingual.audio import repeat_pad
from biolingual.metrics import accuracy, detection_map

from .embedding_cache import load_segment
from .seeding import seed_everything
from .tasks import CLASSIFICATION, Task
from .types import Segment, Split

log = logging.getLogger(__name__)
SEED = 42
Metric = Callable[[torch.Tensor, np.ndarray], float]  # (logits [N, C], targets) -> the number a grid selects on
Details = Callable[[torch.Tensor], dict]  # test logits of the best model -> extra numbers for its report


def score(task: Task, logits: torch.Tensor, targets: np.ndarray) -> float:
    """The task's BEANS metric: accuracy (classification) or detection mAP on raw logits."""
    if task.type == CLASSIFICATION:
        return accuracy(targets, logits.argmax(1))
    return detection_map(logits, targets)


def _loss(task: Task) -> nn.Module:
    return nn.CrossEntropyLoss() if task.type == CLASSIFICATION else nn.BCEWithLogitsLoss()


def _target_tensor(task: Task, targets: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(targets, dtype=torch.int64 if task.type == CLASSIFICATION else torch.float32)


def _select(
    task: Task,
    lrs,
    epochs: int,
    make,
    train_epoch,
    predict,
    valid: Split,
    test: Split,
    desc: str,
    metric: Metric | None = None,
    details: Details | None = None,
) -> dict:
    """Grid over lrs; after each epoch score valid; keep the test score of the best (lr, epoch).

    ``metric(logits, targets)`` replaces the task's BEANS metric (:func:`score`) for both splits, and
    ``details(test_logits)`` adds more numbers about the best model's test predictions (``best["details"]``):
    a benchmark with its own metrics (BirdSet's cmAP, AUROC, top-1) selects and reports with them."""
    metric = metric or (lambda logits, targets: score(task, logits, targets))
    best = {"valid": -1.0}
    history = []
    for lr in lrs:
        seed_everything(SEED)
        state = make(lr)
        for epoch in tqdm(range(1, epochs + 1), desc=f"{desc} lr={lr:g}", unit="epoch", leave=False):
            loss = train_epoch(state)
            valid_score = metric(predict(state, "valid"), valid.targets)
            history.append({"lr": lr, "epoch": epoch, "train_loss": loss, "valid": valid_score})
            if valid_score > best["valid"]:
                test_logits = predict(state, "test")
                best = {"valid": valid_score, "test": metric(test_logits, test.targets), "lr": lr, "epoch": epoch}
                if details is not None:
                    best["details"] = details(test_logits)
    return {**best, "history": history}


def linear_probe(
    task: Task,
    features: dict[str, torch.Tensor],
    splits: dict[str, Split],
    lrs,
    epochs: int,
    batch_size: int = 32,
    metric: Metric | None = None,
    details: Details | None = None,
) -> dict:
    """A linear layer on frozen embeddings (``features[split]`` [N, D]) trained with Adam; ``metric`` and
    ``details`` as in :func:`_select`."""
    x_train, y_train = features["train"], _target_tensor(task, splits["train"].targets)
    loss_fn = _loss(task)

    def make(lr):
        head = linear_head(x_train.shape[1], task.num_labels)
        return head, torch.optim.Adam(head.parameters(), lr=lr), torch.Generator().manual_seed(SEED)

    def train_epoch(state):
        head, opt, gen = state
        total = 0.0
        head.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = loss_fn(head(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        recalibrate(head, [x_train])
        return total / len(x_train)

    def predict(state, split):
        state[0].eval()
        with torch.no_grad():
            return state[0](features[split])

    return _select(
        task,
        lrs,
        epochs,
        make,
        train_epoch,
        predict,
        splits["valid"],
        splits["test"],
        f"{task.name} probe",
        metric,
        details,
    )


class _Waves(torch.utils.data.Dataset):
    """Segments -> model-window waveforms (decoded with the library's loader, repeat-padded as at inference)."""

    def __init__(self, segments: list[Segment], rate: int, window: int):
        self.segments, self.rate, self.window = segments, rate, window

    def __len__(self):
        return len(self.segments)

    def __getitem__(self, i):
        return torch.from_numpy(repeat_pad(load_segment(self.segments[i], self.rate), self.window).copy()), i


def linear_head(dim: int, num_labels: int) -> nn.Module:
    """A linear classifier behind a BatchNorm without affine parameters, as MAE's linear probing: it only
    standardises the embedding (CLAP embeddings are unit vectors, often tightly clustered), so the
    head stays linear in the embedding."""
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_labels))


@torch.no_grad()
def recalibrate(module: nn.Module, batches) -> None:
    """Re-estimate every BatchNorm's statistics in ``module`` on the training data ("precise BatchNorm"):
    running statistics otherwise lag behind weights that change every step, and evaluating with stale
    statistics is wrong. ``batches`` yields the module's inputs; the rest of the module runs in eval mode."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    module.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches given
        bn.train()
    for batch in batches:
        module(batch)
    for bn in norms:
        bn.momentum = 0.1
    module.eval()


class _Tuned(nn.Module):
    def __init__(self, model, num_labels: int):
        super().__init__()
        self.model = model
        self.head = linear_head(model.embedding_dim, num_labels)

    def forward(self, waves):
        return self.head(self.model.encode_audio(waves))


def finetune(
    task: Task,
    model,
    splits: dict[str, Split],
    lrs,
    epochs: int,
    batch_size: int = 32,
    workers: int = 2,
    metric: Metric | None = None,
    details: Details | None = None,
) -> dict:
    """Full fine-tuning of the audio tower plus a linear head; the text tower is frozen (unused). ``metric``
    and ``details`` as in :func:`_select`."""
    loaders = {}
    for name, split in splits.items():
        data = _Waves(split.segments, model.sampling_rate, model.window_samples)
        loaders[name] = torch.utils.data.DataLoader(
            data,
            batch_size=batch_size,
            shuffle=name == "train",
            num_workers=workers,
            generator=torch.Generator().manual_seed(SEED),
            persistent_workers=False,
        )
    targets = {name: _target_tensor(task, s.targets) for name, s in splits.items()}
    loss_fn = _loss(task)
    original = copy.deepcopy(model.clap.state_dict())

    def make(lr):
        model.clap.load_state_dict(original)
        tuned = _Tuned(model, task.num_labels).to(model.device)
        for p in model.clap.text_model.parameters():
            p.requires_grad_(False)
        params = [p for p in tuned.parameters() if p.requires_grad]
        return tuned, torch.optim.Adam(params, lr=lr)

    def train_epoch(state):
        tuned, opt = state
        tuned.train()
        total, n = 0.0, 0
        for waves, idx in loaders["train"]:
            opt.zero_grad()
            loss = loss_fn(tuned(waves.to(model.device)), targets["train"][idx].to(model.device))
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        recalibrate(tuned, (waves.to(model.device) for waves, _ in loaders["train"]))
        return total / max(n, 1)

    def predict(state, split):
        tuned = state[0]
        tuned.eval()
        out = torch.zeros(len(splits[split].segments), task.num_labels)
        with torch.no_grad():
            for waves, idx in loaders[split]:
                out[idx] = tuned(waves.to(model.device)).float().cpu()
        return out

    try:
        return _select(
            task,
            lrs,
            epochs,
            make,
            train_epoch,
            predict,
            splits["valid"],
            splits["test"],
            f"{task.name} finetune",
            metric,
            details,
        )
    finally:
        model.clap.load_state_dict(original)  # the caller's model is left as it was given
        for p in model.clap.parameters():
            p.requires_grad_(True)
        model.eval()
