"""A commit's `src/`, exported, so that a benchmark runs two commits in turn on the same machine
and data (the working tree is shared and may hold half-edited files)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]


def export_src(revision: str, folder: Path) -> tuple[str, Path]:
    """`src/` of `revision` (git archive) under `folder`: (its short commit, the `src` folder)."""
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", revision],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", commit, "src"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return commit, folder / "src"
