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


class ReportLogs(TrainerCallback):
    """Hand every number the Trainer logs (loss, learning rate, gradient norm, ...) to
    `report(values, step)` on the main process, at the optimizer step it was logged. The loop
    passes its tracker's series, so a trainer's curve reaches the loop's one W&B run; the trainers
    keep `report_to="none"` (a W&B run of their own per training would split the loop's run)."""

    def __init__(self, report) -> None:
        self.report = report

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = {k: float(v) for k, v in logs.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
        if values:
            self.report({**values, "epoch": logs.get("epoch")}, state.global_step)


def quiet_off_terminal(trainer):
    """Off a terminal, drop transformers' PrinterCallback and return `trainer`. With `disable_tqdm`
    (tsllm.progress: no bars off a terminal) the Trainer prints every logged dict instead, one line
    per `logging_steps` (hundreds in one loop run's log); the curves still reach the metrics
    (`train_loss_curve`) and, through ReportLogs, the loop's W&B run. Errors are raised as before."""
    from transformers.trainer_callback import PrinterCallback

    from tsllm.progress import show_progress

    if not show_progress():
        trainer.remove_callback(PrinterCallback)
    return trainer
