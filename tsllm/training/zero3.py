"""Transformers and DeepSpeed ZeRO-3 in one process: while a ZeRO-3 config is registered,
Transformers partitions every model it builds (weights of shape (0,) on each rank). These two
helpers let a trainer build a whole model on purpose, and let the rest of the process (the loop
loads models for generation and scoring after training) build whole models again.
"""

from __future__ import annotations

import contextlib


def forget_zero3() -> None:
    """After a DeepSpeed run, stop Transformers from partitioning every model this process builds
    later (it does so while a ZeRO-3 config is registered, and Accelerate keeps it registered):
    the loop loads whole models for generation and scoring after training."""
    from transformers.integrations import deepspeed as hf_deepspeed

    hf_deepspeed.unset_hf_deepspeed_config()


@contextlib.contextmanager
def no_zero3_init():
    """Build models whole even under ZeRO-3: transformers partitions every model it creates while
    a DeepSpeed ZeRO-3 config is registered (Accelerate's own switch for this does not reach it)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    registered = ref() if ref is not None else None
    if registered is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(registered)
