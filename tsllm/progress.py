"""Progress bars only where someone watches them: on a terminal.

A bar redrawn into a file or a CI log becomes one line per redraw (tens of thousands in a CI
run), so every bar of the project asks `show_progress` first, and the trainers pass its answer to
transformers/TRL as `disable_tqdm`. TSLLM_PROGRESS=0 turns the bars off on a terminal too.
"""

from __future__ import annotations

import os
import sys


def show_progress(wanted: bool = True) -> bool:
    """Whether to draw progress bars: `wanted`, stderr is a terminal, and TSLLM_PROGRESS is not 0."""
    return wanted and os.environ.get("TSLLM_PROGRESS", "1") != "0" and sys.stderr.isatty()


def quiet_library_bars() -> None:
    """Off a terminal, turn off the bars transformers and datasets draw on their own (weights
    loading, `Map`, `Tokenizing`), which `disable_tqdm` does not reach."""
    if show_progress():
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
