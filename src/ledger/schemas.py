"""Write, or check, the published JSON Schemas: one file per v1 event type, from the models.

    python -m ledger.schemas [--check] [DIR]

DIR defaults to the `schemas/` folder of the repository that holds the current directory (the
nearest parent with a `pyproject.toml`). Without `--check` the files are (re)written and stale
`ledger.*.json` files are removed; with `--check` nothing is written and the exit status is 1 when
any file differs, is missing or is extra, so CI fails when `schemas/` drifts from `ledger.contract`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ledger.contract import json_schema, payload_models, type_name

schema_file_glob = "ledger.*.json"


def rendered_schemas() -> dict[str, str]:
    """File name -> file text for every v1 type: sorted keys, two-space indent, final newline."""
    return {
        f"{type_name(kind)}.json": json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"
        for kind in payload_models
    }


def default_directory(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "schemas"
    return here / "schemas"


def drift(directory: Path) -> list[str]:
    """One line per file that differs from the models, is missing or should not be there."""
    expected = rendered_schemas()
    present = {path.name for path in directory.glob(schema_file_glob)}
    problems = [f"extra: {name}" for name in sorted(present - expected.keys())]
    for name, text in sorted(expected.items()):
        path = directory / name
        if name not in present:
            problems.append(f"missing: {name}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"differs: {name}")
    return problems


def write(directory: Path) -> None:
    expected = rendered_schemas()
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob(schema_file_glob):
        if path.name not in expected:
            path.unlink()
    for name, text in expected.items():
        (directory / name).write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.schemas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    parser.add_argument("directory", nargs="?", type=Path, help="default: <repo>/schemas")
    args = parser.parse_args(argv)
    directory: Path = args.directory or default_directory()
    if not args.check:
        write(directory)
        return 0
    problems = drift(directory)
    for problem in problems:
        print(f"{directory}: {problem}", file=sys.stderr)
    if problems:
        print("regenerate with: python -m ledger.schemas", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
