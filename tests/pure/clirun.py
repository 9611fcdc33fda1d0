"""Run the `twin` CLI in-process on an input file and capture what it says."""
from __future__ import annotations

import contextlib
import io
import traceback
from dataclasses import dataclass
from pathlib import Path

from harness.cli import main

KINDS = ("manifest", "values", "scenario")
SEED_DIR = Path(__file__).resolve().parents[2] / "examples" / "seed"


@dataclass
class Outcome:
    argv: list
    code: object  # int exit code, or None when an exception escaped
    out: str
    err: str
    crash: str = ""  # the traceback of an exception that escaped main()

    @property
    def text(self) -> str:
        return self.out + self.err

    def clean(self) -> bool:
        """Exit 0, 1 or 2 and no traceback anywhere."""
        return not self.crash and self.code in (0, 1, 2) and "Traceback" not in self.text


def kind_of(path: Path) -> str:
    for k in KINDS:
        if path.name.endswith(f".{k}.yaml"):
            return k
    return "manifest"


def commands(path: Path, kind: str, out_dir: Path) -> list[list[str]]:
    if kind == "scenario":
        return [["run", str(path), "--backend", "twin", "--out", str(out_dir)]]
    if kind == "values":
        return [["validate", str(SEED_DIR), "--values", str(path)]]
    return [["validate", str(path)], ["show", str(path), "--json"]]


def run_cli(argv: list[str]) -> Outcome:
    """``harness.cli.main(argv)``; SystemExit is an exit code, any other exception a crash."""
    out, err = io.StringIO(), io.StringIO()
    code, crash = None, ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception:  # noqa: BLE001 - the point is to catch everything that escapes main()
        crash = traceback.format_exc()
    return Outcome(argv, code, out.getvalue(), err.getvalue(), crash)
