#!/usr/bin/env python3
"""Set-up and tasks, with nothing but Python 3.11+ on the machine.

    python3 dev.py up [ARGS]       run the system on embedded defaults (`ledger up ARGS`)
    python3 dev.py test [ARGS]     ruff, mypy --strict, then pytest ARGS
    python3 dev.py bench NAME [ARGS]   run bench/NAME.py (installs the bench extra)

Each creates `.venv` beside this file on first use and reinstalls only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

root = Path(__file__).resolve().parent
venv_dir = root / ".venv"
bin_dir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
python = bin_dir / ("python.exe" if os.name == "nt" else "python")


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit("dev.py: Python 3.11 or newer is required")
    if not python.exists():
        say(f"creating {venv_dir.name} with Python {sys.version.split()[0]}")
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    stamp = venv_dir / f".installed-{extras.replace(',', '-')}"
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"installing the project and its [{extras}] dependencies (first run takes a minute)")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{root}[{extras}]"], check=True)
    stamp.write_text(digest)


def run(step: str, command: list[str]) -> int:
    say(step)
    return subprocess.run(command, cwd=root).returncode


def test(args: list[str]) -> int:
    ensure_venv("test")
    linted = [name for name in ("src", "tests", "bench", "dev.py") if (root / name).exists()]
    steps = [
        ("ruff check", [str(python), "-m", "ruff", "check", *linted]),
        ("ruff format --check", [str(python), "-m", "ruff", "format", "--check", *linted]),
        ("mypy --strict", [str(python), "-m", "mypy"]),
        ("schemas match the contract", [str(python), "-m", "ledger.schemas", "--check"]),
        ("pytest", [str(python), "-m", "pytest", *args]),
    ]
    for step, command in steps:
        code = run(step, command)
        if code == 5 and step == "pytest":
            say("pytest collected no tests: that is a failure")
            return 1
        if code != 0:
            say(f"FAILED: {step} (exit code {code})")
            return code
    say("all checks passed")
    return 0


def up(args: list[str]) -> int:
    ensure_venv("test")
    ledger = bin_dir / ("ledger.exe" if os.name == "nt" else "ledger")
    try:
        return subprocess.run([str(ledger), "up", *args], cwd=root).returncode
    except KeyboardInterrupt:
        return 130


def bench(args: list[str]) -> int:
    if not args:
        sys.exit("dev.py: bench needs a name, e.g. `python3 dev.py bench append`")
    ensure_venv("test,bench")
    return subprocess.run(
        [str(python), str(root / "bench" / f"{args[0]}.py"), *args[1:]], cwd=root
    ).returncode


def main() -> int:
    commands = {"test": test, "up": up, "bench": bench}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
