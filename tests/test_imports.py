"""The search and env layers, and the task registry over them, stay free of torch (docs/ARCHITECTURE.md
section 2): they must import fast and run where no deep-learning stack is installed (a task loads
its models only when it is built)."""

import subprocess
import sys


def test_search_envs_and_tasks_do_not_import_torch():
    code = (
        "import sys, pkgutil, importlib, tsllm.search, tsllm.envs\n"
        "for pkg in (tsllm.search, tsllm.envs):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "import tsllm.types, tsllm.tasks\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers', 'vllm')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
