"""Every command the README shows still runs as written, so the README cannot drift from the code.

Each shell line in the README's ```bash blocks is checked the cheapest way that would catch
drift: loop runs (`tsllm run`, `recipes/iterate.py` under any launcher) resolve their config with
`--print-config` (every key and value checked, nothing trained); other commands have each of their
`--flags` checked against the command's own parser; `tsllm demo` runs for real, shrunk in its
counts only. The install and test lines are what `.ci/run` itself runs. Python blocks run and
must print what their `# ...` comment says.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tsllm.cli import main as tsllm_main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LAUNCHERS = ("torchrun", "accelerate")


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == language]


def shell_commands() -> list[str]:
    """Each command of the README's bash blocks: continuations joined, comments dropped, `&&`
    chains split."""
    commands = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s|^#", line)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def run_tsllm(argv: list[str]) -> tuple[int, str]:
    """`tsllm argv` in this process (imports once): exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = tsllm_main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code or 0, out.getvalue()


def help_flags(text: str) -> set[str]:
    return set(re.findall(r"(--[\w-]+)", text))


def flags_of(argv: list[str]) -> set[str]:
    return {a.split("=")[0] for a in argv if a.startswith("--")}


def loop_argv(words: list[str]) -> list[str] | None:
    """The `tsllm run` arguments of a loop command (tsllm run / iterate.py under any launcher)."""
    if words[:2] == ["tsllm", "run"]:
        return words[2:]
    for i, word in enumerate(words):
        if word.endswith("recipes/iterate.py"):
            return words[i + 1:]
    return None


def config_text(argv: list[str]) -> str:
    return (REPO / argv[argv.index("--config") + 1]).read_text() if "--config" in argv else ""


COMMANDS = shell_commands()


def test_the_readme_shows_its_install_and_test_commands():
    assert any(c.startswith("pip install") or "pip install -e" in c for c in COMMANDS)
    assert any(c.startswith("python -m pytest") for c in COMMANDS)
    assert any(loop_argv(shlex.split(c)) is not None for c in COMMANDS), "the README shows no loop run"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(command, tmp_path):
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_][A-Z_0-9]*=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words[:2] in (["pip", "install"], ["pip", "uninstall"]) or words[:3] == ["python", "-m", "pytest"]:
        return  # .ci/run runs these itself
    if (argv := loop_argv(words)) is not None:
        argv = [a for a in argv if a not in ("--resume", "--overwrite", "--no-progress")]
        code, out = run_tsllm(["run", "--print-config", *argv])
        # a GPU config ships with /path/to/ placeholders for the user's checkpoints: it must stop
        # naming one (tests/test_loop_tasks.py checks it validates once they are real paths)
        placeholder = "is a placeholder" in out and "/path/to/" in config_text(argv)
        assert code == 0 or (code == 2 and placeholder), f"{command!r} stops at its config:\n{out[-2000:]}"
        return
    if words[:2] == ["tsllm", "demo"]:
        code, out = run_tsllm(["demo", *words[2:], "--roots", "4", "--json", str(tmp_path / "demo.json")])
        assert code == 0 and "greedy" in out, out[-2000:]
        return
    if words[0] == "tsllm":
        subcommand = [w for w in words[1:] if not w.startswith("-")][:2]
        subcommand = subcommand[:2] if subcommand[:1] == ["bench"] else subcommand[:1]
        _, help_text = run_tsllm([*subcommand, "--help"])
    elif words[:2] == ["python", "-m"]:
        help_text = subprocess.run([sys.executable, "-m", words[2], "--help"], capture_output=True,
                                   text=True, cwd=REPO, timeout=300).stdout
    elif words[0] in ("python", *LAUNCHERS) and any(w.endswith(".py") for w in words):
        script = next(w for w in words if w.endswith(".py"))
        assert (REPO / script).is_file(), f"{command!r}: {script} does not exist"
        help_text = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True,
                                   text=True, cwd=REPO, timeout=300).stdout
        words = words[words.index(script):]
    else:
        pytest.fail(f"README command {command!r} is of a kind this test does not check; teach it how")
    unknown = flags_of(words) - help_flags(help_text)
    assert not unknown, f"{command!r} uses flags its parser does not have: {sorted(unknown)}"


@pytest.mark.parametrize("code", blocks("python"))
def test_readme_python_block_prints_what_it_says(code):
    expected = [line.split("#", 1)[1].strip() for line in code.splitlines() if line.startswith("print(")]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[: len(expected)] == expected


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated title numbered (-1, -2, ...)."""
    found: dict[str, int] = {}
    for title in re.findall(r"^#{1,6} (.+?)\s*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        found[slug] = found.get(slug, -1) + 1
        if found[slug]:
            found[f"{slug}-{found[slug]}"] = 0
    return set(found)


def test_readme_links_resolve():
    """Every relative link of the README names a file of the repository and, with `#anchor`, a
    heading of that markdown file."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", README)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        file = REPO / path if path else REPO / "README.md"
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: {file.name} has no heading #{anchor}")
    assert not broken, broken
