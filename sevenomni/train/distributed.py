"""torchrun awareness: rank, world size, device, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sevenomni.core.devices import resolve_device


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def check_device(self, tensor: torch.Tensor, collective: str) -> None:
        """A collective's tensor must live on this process's training device (NCCL takes GPU tensors only)."""
        if not same_device(tensor.device, self.device):
            raise RuntimeError(
                f"{collective}: got a tensor on {tensor.device}, but this process trains on {self.device}; "
                "create it on the training device"
            )

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place); identity in a single process."""
        if self.enabled:
            self.check_device(tensor, "all_sum")
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_gradients(self, parameters) -> None:
        """Sum the gradients of ``parameters`` over ranks, with one flat buffer per call.

        Every rank passes the same parameters, whichever have a gradient here (a rank whose batch
        is empty, or that used no stress, has fewer): a missing gradient counts as zero, and a
        parameter that no rank has a gradient for keeps ``grad = None`` (as in one process, so the
        optimizer skips it there too).
        """
        if not self.enabled:
            return
        parameters = list(parameters)
        if not parameters:
            return
        for parameter in parameters:
            self.check_device(parameter if parameter.grad is None else parameter.grad, "sum_gradients")
        pieces = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in parameters]
        present = torch.tensor([p.grad is not None for p in parameters], dtype=pieces[0].dtype, device=self.device)
        flat = torch.cat([*pieces, present])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        anywhere = flat[-len(parameters) :] > 0
        offset = 0
        for parameter, used in zip(parameters, anywhere.tolist()):
            summed = flat[offset : offset + parameter.numel()].view_as(parameter)
            offset += parameter.numel()
            if not used:
                parameter.grad = None
            elif parameter.grad is None:
                parameter.grad = summed.clone()
            else:
                parameter.grad.copy_(summed)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the torchrun process group if launched by torchrun (nccl on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank if world_size > 1 else (chosen.index or 0))
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, chosen)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, an index-less CUDA device counting as the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
