#!/usr/bin/env python3
"""Set-up and tasks, with nothing but Python 3.11+ on the machine.

    python3 dev.py up [ARGS]           run the system on embedded defaults (`ledger up ARGS`)
    python3 dev.py test [ARGS]         ruff, mypy --strict, the schema check, then pytest ARGS
    python3 dev.py bench NAME [ARGS]   run bench/NAME.py (installs the bench extra)

Each creates `.venv` beside this file on first use (with the Python running dev.py) and installs
the project into it again only when pyproject.toml changed since the last install.
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

root = Path(__file__).resolve().parent
venv_dir = root / ".venv"
bin_dir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
python = bin_dir / ("python.exe" if os.name == "nt" else "python")
# pip's output is kept out of sight unless the install fails; then this many last lines show why.
pip_output_tail_lines = 40


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def venv_environment() -> dict[str, str]:
    """The environment of a process run in the venv: its bin folder first on PATH, so that the
    `ledger` command and tools that tests start are the venv's."""
    environment = dict(os.environ)
    environment["VIRTUAL_ENV"] = str(venv_dir)
    environment["PATH"] = os.pathsep.join([str(bin_dir), environment.get("PATH", "")])
    environment.pop("PYTHONHOME", None)
    return environment


def pip(*args: str) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(
        command, cwd=root, env=venv_environment(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        print("\n".join(output[-pip_output_tail_lines:]), file=sys.stderr)
        say(f"FAILED: pip {' '.join(args)} (exit code {result.returncode})")
        sys.exit(result.returncode)


def ensure_venv(extras: str) -> None:
    """Create .venv if missing and install the project with `extras` if pyproject.toml changed
    since the last install of those extras (a hash stamp per set of extras, kept in .venv)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit(f"dev.py: Python 3.11 or newer is required (this is {sys.version.split()[0]})")
    if not python.exists():
        if venv_dir.exists():
            say(f"{venv_dir.name} has no Python (a broken or foreign venv): recreating it")
            shutil.rmtree(venv_dir)
        say(f"creating {venv_dir.name} with Python {sys.version.split()[0]} ({sys.executable})")
        try:
            venv.EnvBuilder(with_pip=True).create(venv_dir)
        except (OSError, subprocess.CalledProcessError) as error:
            sys.exit(
                f"dev.py: could not create {venv_dir}: {error}\n"
                "(on Debian or Ubuntu: apt-get install python3-venv)"
            )
    stamp = venv_dir / f".installed-{extras.replace(',', '-')}"
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"installing the project with [{extras}] (pyproject.toml changed; first run: a minute)")
    pip("install", "--upgrade", "pip")
    pip("install", "-e", f"{root}[{extras}]")
    stamp.write_text(digest)
    say("installed")


def run(step: str, command: list[str]) -> int:
    say(step)
    return subprocess.run(command, cwd=root, env=venv_environment(), check=False).returncode


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
            say("FAILED: pytest collected no tests (exit code 5)")
            return 1
        if code != 0:
            say(f"FAILED: {step} (exit code {code})")
            return code
    say("all checks passed")
    return 0


def exec_in_venv(executable: Path, args: list[str]) -> int:
    """Replace this process (POSIX), so that signals and the exit code are the program's own."""
    command = [str(executable), *args]
    if os.name == "nt":
        try:
            return subprocess.run(command, cwd=root, env=venv_environment(), check=False).returncode
        except KeyboardInterrupt:
            return 130
    os.chdir(root)
    os.execve(executable, command, venv_environment())


def up(args: list[str]) -> int:
    ensure_venv("test")
    return exec_in_venv(bin_dir / ("ledger.exe" if os.name == "nt" else "ledger"), ["up", *args])


def bench(args: list[str]) -> int:
    scripts = sorted(path.stem for path in (root / "bench").glob("*.py"))
    if not args or args[0] not in scripts:
        say(f"usage: python3 dev.py bench NAME [ARGS]; NAME is one of: {', '.join(scripts) or '-'}")
        return 2
    ensure_venv("test,bench")
    return exec_in_venv(python, [str(root / "bench" / f"{args[0]}.py"), *args[1:]])


def main() -> int:
    commands = {"test": test, "up": up, "bench": bench}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
