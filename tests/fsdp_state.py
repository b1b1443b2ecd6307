"""Run under ``torchrun --nproc_per_node 2`` (CPU, gloo): FSDP2-sharded training checkpointed with
``full_state`` and resumed with ``load_full_state`` continues exactly, and the same checkpoint loads into an
unsharded single-process model (checked by tests/test_training.py, in its own process, from the files this writes
to the folder given as argv[1]).""" 
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from biolingual.training.checkpoint import full_state, load_full_state


def make(mesh=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.LayerNorm(32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    if mesh is not None:
        for layer in (model[0], model[3]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    decay = [p for p in model.parameters() if p.ndim == 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return model, torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2)


def batch(step: int, rank: int, world: int):
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(4 * world, 6, generator=g), torch.randint(0, 3, (4 * world,), generator=g)
    return x[4 * rank : 4 * (rank + 1)], y[4 * rank : 4 * (rank + 1)]


def train(model, opt, steps, rank, world):
    for step in steps:
        x, y = batch(step, rank, world)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    model, opt = make(mesh)
    train(model, opt, range(3), rank, world)
    state = full_state(model, opt)
    if rank == 0:
        torch.save(state, out / "step3.pt")
        assert all(not hasattr(v, "placements") for v in state[0].values()), "full state holds plain tensors"
    dist.barrier()
    train(model, opt, range(3, 5), rank, world)
    straight = full_state(model, opt)[0]

    model, opt = make(mesh)
    saved_model, saved_opt = torch.load(out / "step3.pt", weights_only=False)
    load_full_state(model, opt, saved_model, saved_opt)
    train(model, opt, range(3, 5), rank, world)
    resumed = full_state(model, opt)[0]
    if rank == 0:
        torch.save({"straight": straight, "resumed": resumed}, out / "result.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
