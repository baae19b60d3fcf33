"""Data-parallel training: collectives get tensors on the training device, ranks with nothing to do
still step, and N processes take the same steps as one process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.overrides import TorchFunctionMode
from training_helpers import make_run, write_config

from sevenomni.train.config import load_config
from sevenomni.train.data import stage_loader, stage_sampler
from sevenomni.train.distributed import DistributedContext
from sevenomni.train.trainer import Trainer


@pytest.fixture
def recorded_all_reduce(monkeypatch):
    """``dist.all_reduce`` replaced by a recorder that sums as if 2 ranks had sent the same tensor."""
    received: list[torch.Tensor] = []

    def all_reduce(tensor, op=None):
        received.append(tensor)
        tensor.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return received


def test_collectives_refuse_tensors_off_the_training_device(recorded_all_reduce):
    ctx = DistributedContext(rank=0, world_size=2, device=torch.device("meta"))
    with pytest.raises(RuntimeError, match="all_sum: got a tensor on cpu, but this process trains on meta"):
        ctx.all_sum(torch.zeros(1))
    ctx.all_sum(torch.zeros(1, device="meta"))
    parameter = torch.nn.Parameter(torch.zeros(3))
    parameter.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="sum_gradients: got a tensor on cpu"):
        ctx.sum_gradients([parameter])
    assert len(recorded_all_reduce) == 1


class DefaultDeviceTensors(TorchFunctionMode):
    """Remembers every tensor made by a factory call without ``device=``: on a GPU run it would sit on the CPU."""

    FACTORIES = (torch.tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange)

    def __init__(self):
        super().__init__()
        self.made: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func in self.FACTORIES and kwargs.get("device") is None and isinstance(result, torch.Tensor):
            self.made.append(result)
        return result


def test_the_training_step_gives_collectives_only_tensors_made_on_the_training_device(tmp_path, recorded_all_reduce):
    """Run real steps as rank 0 of 2; no tensor reaching a collective may come from a device-less factory."""
    trainer = Trainer(load_config(raw=make_run(tmp_path, count=8)))
    trainer.ctx = trainer.train_step.ctx = DistributedContext(rank=0, world_size=2, device=trainer.device)
    databases = list(trainer.databases)
    sampler = stage_sampler(databases, None, trainer.config.data.sampling)
    batch = next(iter(stage_loader(databases, sampler, trainer.ctx, 0)))
    mode = DefaultDeviceTensors()
    with mode:
        assert trainer.train_step(batch) is not None
        assert trainer.train_step(None) is not None  # a rank with an empty share steps too
    assert recorded_all_reduce, "the step ran no collective"
    for tensor in recorded_all_reduce:
        assert not any(tensor is made for made in mode.made), f"a collective got a device-less tensor {tensor}"
        assert tensor.device == trainer.device


def _sum_gradients_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
        a.grad = torch.full((2,), 1.0 + rank)
        if rank == 1:
            b.grad = torch.full((2,), 5.0)  # only rank 1 used b; nobody used c
        DistributedContext(rank, 2, torch.device("cpu")).sum_gradients([a, b, c])
        results[rank] = (a.grad.tolist(), None if b.grad is None else b.grad.tolist(), c.grad)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sum_gradients_when_ranks_have_different_gradients():
    """A gradient missing on one rank counts as zero; one missing everywhere stays None (as in one process)."""
    results = mp.Manager().dict()
    mp.spawn(_sum_gradients_worker, args=(free_port(), results), nprocs=2, join=True)
    for rank in (0, 1):
        assert results[rank] == ([3.0, 3.0], [5.0, 5.0], None)


@pytest.mark.parametrize(
    "processes,batch_size", [(2, 6), (3, 2)], ids=["2-ranks", "3-ranks-batch-of-2-leaves-one-rank-empty"]
)
def test_torchrun_matches_one_process_on_the_same_global_batch(tmp_path, processes, batch_size):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 3, "data.sampling.batch_size": batch_size})
    single_dir = tmp_path / "single"
    Trainer(load_config(raw={**raw, "train": {**raw["train"], "run_dir": str(single_dir)}})).run()
    config = write_config({**raw, "train": {**raw["train"], "run_dir": str(tmp_path / "ddp")}}, tmp_path / "ddp.yaml")
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    result = subprocess.run(
        [*torchrun.split(), "--standalone", f"--nproc_per_node={processes}", "-m", "sevenomni.cli", "train", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = torch.load(single_dir / "model.pt", weights_only=True)["state_dict"]
    parallel = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)["state_dict"]
    assert single.keys() == parallel.keys()
    for key in single:
        torch.testing.assert_close(single[key], parallel[key], atol=1e-10, rtol=0.0, msg=key)
