"""The architecture's layering, checked: import contracts and pure layers doing no I/O."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"os", "subprocess", "socket", "shutil", "pathlib", "tempfile", "io", "urllib", "http", "requests"}


def test_import_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        exe = shutil.which("lint-imports")
    if not exe:
        pytest.skip("import-linter is not installed in this environment (make test installs it)")
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("layer", ["twin/model", "twin/semantics"])
def test_pure_layers_import_no_io_modules_and_never_open_files(layer):
    offenders = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("open", "print", "input"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.func.id}()")
                continue
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n in IO_MODULES]
    assert not offenders, "\n".join(offenders)
