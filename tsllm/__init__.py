"""tsllm: tree search for language models, and training on what the search finds."""

__version__ = "0.1.0"
