"""Envs are pure Python: importing every task module must not pull in torch (or transformers,
or datasets), which the loaders and the reward model import lazily."""

import subprocess
import sys


def test_env_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import tsllm.envs.base, tsllm.envs.game24, tsllm.envs.gsm8k, tsllm.envs.prontoqa, tsllm.envs.rlhf\n"
        "import tsllm.envs.prontoqa_moves\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"
