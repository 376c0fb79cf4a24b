"""Checks of what a user points the CLI at, run before any model loads or any decoding starts.

Each returns None when the input is fine, else one sentence saying what is wrong and how to fix
it, so the CLI can stop with `tsllm: <flag>: <sentence>` and exit 2 instead of a traceback (or an
evaluation whose results are lost at the end).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# the head a saved model folder's config.json must name for each role (transformers architectures)
MODEL_KINDS = {
    "policy": ("ForCausalLM", "a causal-LM folder (a policy: e.g. runs/<run>/round_<k>/policy/model)"),
    "value": ("ForTokenClassification", "a value model folder (e.g. runs/<run>/round_<k>/value/model)"),
    "reward": ("ForSequenceClassification", "a sequence-classification reward model folder (num_labels=1)"),
}


def model_folder_problem(path: str, kind: str) -> str | None:
    """Whether `path` is a saved model of `kind` (policy / value / reward) with safetensors weights."""
    suffix, what = MODEL_KINDS[kind]
    folder = Path(path)
    if not folder.exists():
        return f"{path} does not exist; give {what}"
    if not folder.is_dir():
        return f"{path} is not a folder; give {what}"
    config = folder / "config.json"
    if not config.is_file():
        return f"{path} has no config.json, so it is not a saved model; give {what}"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return f"{config} is not a readable model config; give {what}"
    if architectures and not any(a.endswith(suffix) for a in architectures):
        return f"{path} holds a {architectures[0]}, not a *{suffix} model; give {what}"
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json",
                                                      "adapter_model.safetensors")):
        return f"{path} has no safetensors weights (model.safetensors); only safetensors checkpoints are loaded"
    return None


def data_file_problem(path: str) -> str | None:
    """Whether a local `--data` path is a non-empty text file (hub ids are not local paths)."""
    file = Path(path)
    if not file.exists():
        return None  # not local: the task's own check decides whether it is a hub id
    if file.is_dir():
        return f"{path} is a folder; give a problems file"
    try:
        head = file.open("rb").read(1 << 16)
    except OSError as error:
        return f"{path} cannot be read ({error.strerror})"
    if not head.strip():
        return f"{path} is empty; give a file with at least one problem"
    if b"\0" in head:
        return f"{path} is a binary file, not a text problems file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a multi-byte character cut at the end of the chunk
            return f"{path} is not UTF-8 text (byte {error.start})"
    return None


def writable_problem(path: str, is_dir: bool = False) -> str | None:
    """Whether `path` (a file to write, or a folder to create and fill) can be written now."""
    target = Path(path)
    if is_dir and target.exists() and not target.is_dir():
        return f"{path} exists and is not a folder"
    if not is_dir and target.is_dir():
        return f"{path} is a folder; give a file name"
    folder = target if is_dir else target.parent
    existing = folder
    while not existing.exists():  # the first ancestor that exists must let us create the rest
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder, so {path} cannot be created"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tsllm-write-check-"):
            pass
    except OSError as error:
        return f"{path} cannot be written ({error.strerror or error})"
    if not is_dir and target.exists() and not os.access(target, os.W_OK):
        return f"{path} exists and cannot be overwritten"
    return None
