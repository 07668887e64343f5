"""One owner per file format or shared name: the owners agree with their users, and nobody else spells them.

The source checks read serkit's syntax trees (not its text), so a docstring or a comment that
mentions a name is no hit, and a second module that builds the path or spells the constant is.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from speechbrain.utils.checkpoints import METAFNAME

from serkit import expdir

PACKAGE = Path(expdir.__file__).resolve().parent


def modules() -> dict[str, ast.AST]:
    return {path.relative_to(PACKAGE.parent).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
            for path in sorted(PACKAGE.rglob("*.py"))}


def constants(tree: ast.AST) -> set:
    """Every string constant of a module, and every tuple of string constants (as a tuple)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
            found.add(tuple(e.value for e in node.elts))
    return found


@pytest.mark.parametrize("value, owner", [
    (expdir.CHECKPOINT_META_FILE, "serkit/expdir.py"),
    (expdir.AVERAGED_KEY, "serkit/expdir.py"),
])
def test_only_the_owner_spells_it(value, owner):
    spelled = sorted(name for name, tree in modules().items() if value in constants(tree))
    assert spelled == [owner], f"{value!r} is spelled outside its owner {owner}: use the owner's constant"


def test_the_checkpoint_meta_file_is_the_one_speechbrain_writes():
    assert expdir.CHECKPOINT_META_FILE == METAFNAME


def test_a_checkpoint_meta_that_one_reader_refuses_no_reader_takes(tmp_path):
    """Resume (serkit.checkpoints) and export/scoring (serkit.expdir) parse CKPT.yaml alike."""
    from serkit.checkpoints import SafeCheckpointer

    model = torch.nn.Linear(2, 2)
    checkpointer = SafeCheckpointer(tmp_path / expdir.SAVE_DIR, recoverables={"model": model})
    kept = checkpointer.save_checkpoint(meta={"UA": 0.5, "epoch": 1}).path
    cut = checkpointer.save_checkpoint(meta={"UA": 0.9, "epoch": 2}).path
    (cut / expdir.CHECKPOINT_META_FILE).write_text("UA: 0.9\nepoch: 2\n")  # no unixtime, no end-of-epoch
    assert [c.path for c in expdir.list_checkpoints(tmp_path)] == [kept]
    assert [c.path for c in checkpointer.list_checkpoints()] == [kept]
