"""Running the loop from a test: a multi-process launcher (torchrun), the library's default config."""

import os
import signal
import subprocess
import sys
from pathlib import Path

TORCHRUN = Path(sys.executable).with_name("torchrun")
# `tsllm run` without --config runs the main job; these arguments give LoopConfig's own defaults
LIBRARY_DEFAULTS = ["--config", str(Path(__file__).with_name("library_defaults.yaml"))]


def run_launcher(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 400) -> tuple[str, str]:
    """(stdout, stderr) of `command`, which must exit 0. It runs in a session of its own, so a hung
    run is killed with its workers instead of leaving them behind."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr
