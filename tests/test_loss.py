"""Training losses: InfoNCE's formula, symmetry, temperature clamp and fp32 under autocast; the sigmoid loss
and distillation against their formulas; and for all three, exact loss and gradient equivalence between 2
real gloo processes and one process on the concatenated batch (one spawn serves every 2-process test)."""

from __future__ import annotations

import math
import os
import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from biolingual.loss import (
    SIGMOID_BIAS_INIT,
    ContrastiveLoss,
    DistillationLoss,
    SigmoidLoss,
    clamp_logit_scale_,
    gather_with_grad,
)

WORLD = 2
LOCAL_B = 4
DIM = 16
SPAWN_TIMEOUT_S = 60


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _naive(audio, text, scale):
    """Independent reference: full similarity matrix, cross-entropy both ways."""
    sim = audio @ text.T * min(float(scale), 100.0)
    labels = torch.arange(len(audio))
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2


def _hf_clap_loss(audio, text, scale):
    """transformers ClapModel(return_loss=True): both terms use text queries."""
    logits_per_text = text @ audio.T * scale
    logits_per_audio = audio @ text.T * scale
    labels = torch.arange(len(audio))
    return (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_audio.T, labels)) / 2


# ---------------------------------------------------------------- single process


def test_matches_naive_formula_and_is_symmetric():
    audio, text = _unit(8, DIM, seed=1), _unit(8, DIM, seed=2)
    loss_fn = ContrastiveLoss()
    scale = torch.tensor(14.3)
    loss = loss_fn(audio, text, scale)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, _naive(audio, text, scale), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_fn(text, audio, scale), loss, rtol=1e-6, atol=1e-6)
    # a float scale works too
    torch.testing.assert_close(loss_fn(audio, text, 14.3), loss, rtol=1e-6, atol=1e-6)


def test_differs_from_transformers_asymmetric_clap_loss():
    audio, text = _unit(8, DIM, seed=3), _unit(8, DIM, seed=4)
    scale = torch.tensor(20.0)
    ours = ContrastiveLoss()(audio, text, scale)
    hf = _hf_clap_loss(audio, text, scale)
    assert abs(ours.item() - hf.item()) > 1e-3
    # HF's two terms are the same text->audio cross-entropy; ours averages text->audio and audio->text
    sim = audio @ text.T * scale
    labels = torch.arange(8)
    torch.testing.assert_close(hf, F.cross_entropy(sim.T, labels))
    torch.testing.assert_close(ours, (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2)


def test_aligned_is_near_zero_and_random_is_log_b():
    b = 32
    emb = _unit(b, 64, seed=5)
    assert ContrastiveLoss()(emb, emb.clone(), 100.0).item() < 1e-3
    # random unit vectors in high dimension: all logits ~0 at scale 1 -> loss ~ ln(B)
    audio, text = _unit(b, 4096, seed=6), _unit(b, 4096, seed=7)
    assert ContrastiveLoss()(audio, text, 1.0).item() == pytest.approx(math.log(b), abs=0.05)


def test_multiplier_above_100_behaves_as_100():
    audio, text = _unit(8, DIM, seed=8), _unit(8, DIM, seed=9)
    loss_fn = ContrastiveLoss()
    at_100 = loss_fn(audio, text, torch.tensor(100.0))
    torch.testing.assert_close(loss_fn(audio, text, torch.tensor(1e4)), at_100)
    torch.testing.assert_close(at_100, _naive(audio, text, 100.0), rtol=1e-6, atol=1e-6)
    # below the cap nothing is clamped, and the temperature gets a gradient
    log_scale = nn.Parameter(torch.tensor(math.log(50.0)))
    loss_fn(audio, text, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.abs().item() > 0
    # above the cap the clamp has zero gradient (expected: clamp_logit_scale_ keeps it in range)
    log_scale = nn.Parameter(torch.tensor(math.log(500.0)))
    loss_fn(audio, text, log_scale.exp()).backward()
    assert log_scale.grad.item() == 0.0


def test_clamp_logit_scale_clamps_parameter_in_place():
    p = nn.Parameter(torch.tensor(math.log(500.0)))
    out = clamp_logit_scale_(p)
    assert out is p and p.requires_grad
    assert p.exp().item() == pytest.approx(100.0, rel=1e-6)
    p.data.fill_(-3.0)
    clamp_logit_scale_(p)
    assert p.item() == 0.0
    p.data.fill_(math.log(14.3))
    clamp_logit_scale_(p)
    assert p.exp().item() == pytest.approx(14.3, rel=1e-6)
    clamp_logit_scale_(p, max_scale=10.0)
    assert p.exp().item() == pytest.approx(10.0, rel=1e-6)


def test_fp32_under_autocast():
    audio, text = _unit(8, DIM, seed=10), _unit(8, DIM, seed=11)
    ref = ContrastiveLoss()(audio, text, 30.0)
    loss_fn = ContrastiveLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(audio, text, torch.tensor(30.0))
        logits_a, logits_t = loss_fn.get_logits(audio.bfloat16(), text.bfloat16(), 30.0)
    assert loss.dtype == torch.float32 and logits_a.dtype == logits_t.dtype == torch.float32
    torch.testing.assert_close(loss, ref)


def test_get_logits_and_labels_single_process():
    audio, text = _unit(6, DIM, seed=12), _unit(6, DIM, seed=13)
    loss_fn = ContrastiveLoss()
    logits_a, logits_t = loss_fn.get_logits(audio, text, 10.0)
    torch.testing.assert_close(logits_a, 10.0 * audio @ text.T)
    torch.testing.assert_close(logits_t, 10.0 * text @ audio.T)
    labels = loss_fn.get_labels(6, "cpu")
    assert labels.tolist() == list(range(6))
    assert loss_fn.get_labels(6, "cpu") is labels  # cached
    assert gather_with_grad(audio) is audio  # no process group: identity
    with pytest.raises(ValueError):
        loss_fn(audio, text[:5], 10.0)


def _naive_sigmoid(audio, text, scale, bias):
    """SigLIP's definition written out pair by pair."""
    n, total = len(audio), 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total - math.log(1 / (1 + math.exp(-z * (min(scale, 100.0) * float(audio[i] @ text[j]) + bias))))
    return total / n


def test_sigmoid_loss_matches_its_definition():
    audio, text = _unit(6, DIM, seed=20), _unit(6, DIM, seed=21)
    loss = SigmoidLoss()(audio, text, torch.tensor(10.0), torch.tensor(SIGMOID_BIAS_INIT))
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_naive_sigmoid(audio, text, 10.0, SIGMOID_BIAS_INIT), rel=1e-5)
    # each pair is scored once, so swapping the modalities transposes the matrix and keeps the loss
    torch.testing.assert_close(SigmoidLoss()(text, audio, 10.0, -10.0), loss)
    assert SigmoidLoss()(audio, text, 1e4, 0.0).item() == pytest.approx(
        _naive_sigmoid(audio, text, 100.0, 0.0), rel=1e-5
    )
    # aligned pairs with a large scale and a bias between the positive and negative logits: loss near 0
    emb = _unit(8, 256, seed=22)
    assert SigmoidLoss()(emb, emb.clone(), 100.0, -50.0).item() < 1e-3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert SigmoidLoss()(audio.bfloat16(), text.bfloat16(), 10.0, -10.0).dtype == torch.float32
    with pytest.raises(ValueError):
        SigmoidLoss()(audio, text[:5], 10.0, -10.0)


def test_distillation_terms():
    audio, text = _unit(6, DIM, seed=23), _unit(6, DIM, seed=24)
    loss_fn = DistillationLoss()
    same = loss_fn(audio, audio.clone(), 20.0, 20.0, text, text.clone())
    assert same["feature"].item() == pytest.approx(0.0, abs=1e-6) and same["affinity"].item() == pytest.approx(
        0.0, abs=1e-6
    )
    t_audio, t_text = _unit(6, DIM, seed=25), _unit(6, DIM, seed=26)
    out = loss_fn(audio, t_audio, 20.0, 30.0, text, t_text)
    cos = ((audio * t_audio).sum(-1).mean() + (text * t_text).sum(-1).mean()) / 2
    assert out["feature"].item() == pytest.approx(1 - cos.item(), rel=1e-5)

    def kl(student, teacher):
        p = teacher.softmax(-1)
        return (p * (p.log() - student.log_softmax(-1))).sum(-1).mean()

    expected = (kl(20 * audio @ text.T, 30 * t_audio @ t_text.T) + kl(20 * text @ audio.T, 30 * t_text @ t_audio.T)) / 2
    assert out["affinity"].item() == pytest.approx(expected.item(), rel=1e-5)
    # audio only: audio->audio similarities without each clip against itself
    alone = loss_fn(audio, t_audio, 20.0, 30.0, feature=False)
    assert set(alone) == {"affinity"}
    off = ~torch.eye(6, dtype=torch.bool)
    student, teacher = (20 * audio @ audio.T)[off].view(6, 5), (30 * t_audio @ t_audio.T)[off].view(6, 5)
    assert alone["affinity"].item() == pytest.approx(kl(student, teacher).item(), rel=1e-5)


# ---------------------------------------------------------------- two real processes (gloo)


class _Tiny(nn.Module):
    """Two projection towers and a learnable log temperature, like a CLAP model's trainable head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1234)
        self.audio_proj = nn.Linear(12, DIM)
        self.text_proj = nn.Linear(10, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, xa, xt):
        return F.normalize(self.audio_proj(xa), dim=-1), F.normalize(self.text_proj(xt), dim=-1)


class _TinySigmoid(_Tiny):
    """With the sigmoid loss's learnable bias."""

    def __init__(self):
        super().__init__()
        self.logit_bias = nn.Parameter(torch.tensor(SIGMOID_BIAS_INIT))


def _teacher_embeddings(xa, xt):
    """A fixed 'teacher': other projections of the same inputs."""
    g = torch.Generator().manual_seed(7)
    return F.normalize(xa @ torch.randn(12, DIM, generator=g), dim=-1), F.normalize(
        xt @ torch.randn(10, DIM, generator=g), dim=-1
    )


def _losses(model, xa, xt, kind):
    """The loss of one of the 2-process cases on these inputs (one process's share or the whole batch)."""
    audio, text = model(xa, xt)
    scale = model.logit_scale.exp()
    if kind == "sigmoid":
        return SigmoidLoss()(audio, text, scale, model.logit_bias)
    t_audio, t_text = _teacher_embeddings(xa, xt)
    if kind == "distill":
        return sum(DistillationLoss()(audio, t_audio, scale, 25.0, text, t_text).values())
    return sum(DistillationLoss()(audio, t_audio, scale, 25.0).values())


OTHER_KINDS = ("sigmoid", "distill", "distill_audio_only")


def _global_inputs():
    g = torch.Generator().manual_seed(99)
    return torch.randn(WORLD * LOCAL_B, 12, generator=g), torch.randn(WORLD * LOCAL_B, 10, generator=g)


def _worker(rank: int, world: int, store_path: str, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    from datetime import timedelta

    dist.init_process_group(
        "gloo", init_method=f"file://{store_path}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )
    try:
        model = _Tiny()
        xa, xt = _global_inputs()
        local = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        loss_fn = ContrastiveLoss()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio, text = model(xa[local], xt[local])
            gathered = gather_with_grad(audio.detach())
            loss = loss_fn(audio, text, model.logit_scale.exp())
            loss.backward()
            logits_a, _ = loss_fn.get_logits(audio.detach(), text.detach(), model.logit_scale.exp().detach())
        local_grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
        for p in model.parameters():  # what DDP does: average gradients over processes
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world
        loss_sum = loss.detach().clone()
        dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
        others = {}
        for kind in OTHER_KINDS:  # the other losses, each on a fresh model, in the same processes
            other = _TinySigmoid() if kind == "sigmoid" else _Tiny()
            other_loss = _losses(other, xa[local], xt[local], kind)
            other_loss.backward()
            grads = {}
            for n, p in other.named_parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    grads[n] = p.grad / world
            total = other_loss.detach().clone()
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            others[kind] = {"loss": total / world, "grads": grads}
        torch.save(
            {
                "others": others,
                "local_grads": local_grads,
                "avg_grads": {n: p.grad.clone() for n, p in model.named_parameters()},
                "mean_loss": loss_sum / world,
                "gathered": gathered,
                "logits_shape": tuple(logits_a.shape),
                "labels": loss_fn.get_labels(LOCAL_B, "cpu").tolist(),
                "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    """One 2-process run computing every loss (spawning is the expensive part), shared by the tests below."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _run_two_processes(tmp_path_factory.mktemp("two_processes"), monkeypatch)


def _run_two_processes(tmp_path, monkeypatch) -> list[dict]:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned children
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    store = tmp_path / "filestore"  # rendezvous through a file: no port to find or race for
    ctx = mp.start_processes(
        _worker, args=(WORLD, str(store), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=0.5):
            if time.monotonic() > deadline:
                pytest.fail(f"2-process run did not finish within {SPAWN_TIMEOUT_S} s")
    finally:
        for proc in ctx.processes:  # only the two processes started above
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    assert [p.exitcode for p in ctx.processes] == [0] * WORLD
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_two_process_gradient_equals_single_process_on_concatenated_batch(two_processes):
    results = two_processes

    model = _Tiny()
    xa, xt = _global_inputs()
    audio, text = model(xa, xt)
    loss = ContrastiveLoss()(audio, text, model.logit_scale.exp())
    loss.backward()
    ref = {n: p.grad for n, p in model.named_parameters()}

    for r, res in enumerate(results):
        assert res["warnings"] == [], res["warnings"]  # no deprecation warnings from the gather
        assert res["logits_shape"] == (LOCAL_B, WORLD * LOCAL_B)
        assert res["labels"] == [r * LOCAL_B + i for i in range(LOCAL_B)]
        torch.testing.assert_close(res["gathered"], audio.detach(), rtol=0, atol=0)
        for name, g in res["local_grads"].items():
            assert g is not None and g.abs().sum() > 0, f"rank {r}: {name} has no gradient"
        torch.testing.assert_close(res["mean_loss"], loss.detach(), rtol=1e-6, atol=1e-6)

    errors = {n: _rel_err(results[0]["avg_grads"][n], g) for n, g in ref.items()}
    print("relative gradient errors (2 processes vs 1):", {n: f"{e:.2e}" for n, e in errors.items()})
    assert set(errors) == {"audio_proj.weight", "audio_proj.bias", "text_proj.weight", "text_proj.bias", "logit_scale"}
    for name, g in ref.items():
        assert g is not None and g.abs().sum() > 0
        assert errors[name] < 1e-5, (name, errors[name])
        torch.testing.assert_close(results[1]["avg_grads"][name], results[0]["avg_grads"][name], rtol=0, atol=0)


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_two_process_sigmoid_and_distillation_equal_one_process(two_processes, kind):
    """N processes give the loss and the gradient of one process on the whole batch (the sigmoid loss's
    bias and temperature included; distillation with captions and audio-only)."""
    model = _TinySigmoid() if kind == "sigmoid" else _Tiny()
    xa, xt = _global_inputs()
    loss = _losses(model, xa, xt, kind)
    loss.backward()
    ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    expected = {"audio_proj.weight", "audio_proj.bias", "logit_scale"}
    if kind != "distill_audio_only":
        expected |= {"text_proj.weight", "text_proj.bias"}
    if kind == "sigmoid":
        expected |= {"logit_bias"}
    assert set(ref) == expected
    for res in two_processes:
        other = res["others"][kind]
        torch.testing.assert_close(other["loss"], loss.detach(), rtol=1e-6, atol=1e-6)
        assert set(other["grads"]) == expected
        for name, g in ref.items():
            assert g.abs().sum() > 0
            assert _rel_err(other["grads"][name], g) < 1e-5, (kind, name, _rel_err(other["grads"][name], g))
