"""Rank, world size, barriers and shard merging for the loop under `torchrun` / `accelerate launch`.

    from tsllm import distributed as dist
    mine = dist.shard(problems)                 # [(index, problem)] for this rank: problems[rank::world]
    rows = dist.merge_parts(folder, "trajectories", [(i, row), ...])   # all rows, main process only
    dist.barrier()

Everything is a no-op in a single process (no process group is created, nothing is written twice),
so the loop reads the same either way. Under a launcher (WORLD_SIZE > 1) the process group comes
from accelerate's `PartialState`: gloo on CPU, NCCL with one GPU per rank on GPUs. The trainers'
own Accelerator/Trainer objects find and reuse that group.

All ranks must see the same file system (one machine, or a shared output dir across machines):
ranks hand their shards to the main process through files in the stage's temporary folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from tsllm.atomic import write_jsonl

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _state():
    """accelerate's process-wide state, created on first use (only when WORLD_SIZE > 1)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    """This process's rank, from the launcher's environment (torchrun and accelerate launch set it)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device() -> str:
    """Where this process runs models: its own GPU (by local rank) when there are GPUs, else the CPU."""
    import torch

    return f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"


def setup() -> None:
    """Join the launcher's process group now (and fail here, not mid-run, if it cannot)."""
    if world_size() > 1:
        _state()


def finish() -> None:
    """Leave the launcher's process group: every rank waits for the others, then the group is
    destroyed, so no rank exits while the group's threads are still live (a rank that did so
    aborted in C++ teardown, and the launcher then killed the rest of the job)."""
    if world_size() > 1:
        import torch.distributed

        barrier()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


def broadcast(value: T) -> T:
    """The main process's `value` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    import torch.distributed

    box = [value if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each of `values` summed over every rank, on every rank (as objects, like `broadcast`, so
    it needs no tensor on the backend's device: NCCL reduces CUDA tensors only)."""
    if world_size() == 1:
        return list(values)
    import torch.distributed

    gathered: list[list[float] | None] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, list(values))
    return [sum(column) for column in zip(*gathered)]


def shard(items: Sequence[T]) -> list[tuple[int, T]]:
    """This rank's share of `items` with their positions: items[rank::world]."""
    r, w = rank(), world_size()
    return [(i, item) for i, item in enumerate(items) if i % w == r]


def merge_parts(folder: Path, name: str, indexed: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]] | None:
    """Every rank's `(index, row)` pairs merged on the main process, ordered by index (rows of one
    index keep the order their rank gave them), so a sharded run writes its rows in the order a
    one-process run would. Each rank writes `<folder>/<name>.rank<r>-of-<w>.jsonl` first; the
    other ranks get None. In one process the rows come straight back."""
    if world_size() == 1:
        return [row for _, row in indexed]
    r, w = rank(), world_size()
    write_jsonl(({"index": i, "row": row} for i, row in indexed), folder / f"{name}.rank{r}-of-{w}.jsonl")
    barrier()
    if r != 0:
        return None
    pairs = []
    for part in range(w):
        path = folder / f"{name}.rank{part}-of-{w}.jsonl"
        pairs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs.sort(key=lambda p: p["index"])  # stable: a rank's rows of one index stay in order
    return [p["row"] for p in pairs]
