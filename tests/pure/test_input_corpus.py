"""Replay every input that once crashed `twin`: each ends in exit 2 with a
finding naming the file, never a traceback.  Also: the limits that need a
generated file (size), and unreadable files named as such."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from clirun import commands, kind_of, run_cli
from twin.model import limits

pytestmark = pytest.mark.pure

CORPUS = Path(__file__).resolve().parent / "corpus"
FILES = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix == ".yaml")


def test_the_corpus_holds_the_known_crashers():
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_input_ends_in_its_documented_exit_without_a_traceback(path, tmp_path):
    """``ok-*``: a valid input that once crashed (exit 0 or 1); ``found-*``: saved by
    the fuzz test, not yet triaged (any clean exit); every other file is bad
    input: exit 2 and a finding that names the file."""
    for argv in commands(path, kind_of(path), tmp_path):
        o = run_cli(argv)
        assert o.clean(), f"{argv}: exit {o.code}\n{o.crash or o.text}"
        if path.name.startswith("ok-"):
            assert o.code in (0, 1), f"{argv}: exit {o.code}\n{o.text}"
        elif not path.name.startswith("found-") or o.code == 2:
            assert o.code == 2, f"{argv}: exit {o.code}, want 2\n{o.text}"
            assert f"{path}:" in o.text, f"no finding names {path}:\n{o.text}"


def test_a_file_larger_than_the_limit_is_refused_naming_the_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * limits.MAX_FILE_BYTES + "\n")
    o = run_cli(["validate", str(big)])
    assert o.clean() and o.code == 2
    assert "MAX_FILE_BYTES" in o.text and str(big) in o.text


def test_a_symlink_loop_is_named_as_such_not_as_a_missing_file(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    o = run_cli(["validate", str(loop)])
    assert o.clean() and o.code == 2
    assert "symlink loop" in o.text and "no such file" not in o.text


def test_an_unreadable_file_is_named_as_permission_denied(tmp_path, monkeypatch):
    f = tmp_path / "secret.yaml"
    f.write_text("apiVersion: v1\n")
    import builtins
    real_open = builtins.open

    def deny(path, *a, **kw):
        if str(path) == str(f):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", deny)  # tests run as root, where chmod 000 still reads
    o = run_cli(["validate", str(f)])
    assert o.clean() and o.code == 2
    assert "permission denied" in o.text and str(f) in o.text


def test_a_missing_file_is_named_as_missing(tmp_path):
    o = run_cli(["validate", str(tmp_path / "nope.yaml")])
    assert o.code == 2 and "no such file or directory" in o.text


def test_a_flat_file_with_more_nodes_than_the_limit_is_refused_before_it_is_composed(tmp_path):
    many = tmp_path / "many.yaml"
    many.write_text("a:\n" + "- 1\n" * (limits.MAX_YAML_NODES + 10))
    o = run_cli(["validate", str(many)])
    assert o.clean() and o.code == 2
    assert "MAX_YAML_NODES" in o.text
