"""scripts/gsm8k_round_memory.py's parts: the rows it writes and its peak-memory measurement (the
round itself is measured by running the script; docs/RESULTS.md holds the figures)."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gsm8k_round_memory.py"
spec = importlib.util.spec_from_file_location("gsm8k_round_memory", SCRIPT)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def test_the_rows_are_the_shipped_ones_then_synthetic_in_gsm8ks_layout():
    shipped = [json.loads(line) for line in script.SAMPLE_ROWS.read_text().splitlines() if line.strip()]
    rows = script.rows(24)
    assert len(rows) == 24 and rows[:len(shipped)] == shipped
    assert len({r["question"] for r in rows}) == 24 and all("\n#### " in r["answer"] for r in rows)


def test_the_peak_counts_the_memory_of_the_childs_own_children():
    """A child that starts a process holding ~300 MiB and waits for it: the sampled peak over the
    process tree sees it, and the largest single process's peak too."""
    grandchild = "import time; block = b'x' * (300 * 2**20); time.sleep(1.5)"  # every page written
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    result = script.run_measured([sys.executable, "-c", child])
    assert result["exit_code"] == 0
    assert result["peak_tree_rss_gib"] * 1024 > 300 and result["peak_process_rss_gib"] * 1024 > 300
