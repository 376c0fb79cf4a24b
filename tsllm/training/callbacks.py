"""Trainer callbacks both trainers use (transformers' TrainerCallback)."""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback


class StopAfterSeconds(TrainerCallback):
    """Stop once `seconds` of training have passed. Rank 0's clock decides and every rank follows,
    since a rank that stopped alone would leave the others waiting in the gradient all-reduce."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        stop = torch.tensor([float(time.perf_counter() - self.started > self.seconds)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(stop, src=0)
        if stop.item():
            control.should_training_stop = True
