"""Models: loading any HF causal LM (local folder or hub id), LoRA adapters, the value/ORM model,
and a tiny-model factory (`tsllm.models.tiny`) for the embedded default and for tests.

Nothing is imported here on purpose: torch and transformers load only when a submodule is used,
so `import tsllm.models` stays cheap. Import what you need from the submodules.
"""
