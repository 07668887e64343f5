"""One owner per file format or shared name: the owners agree with their users, and nobody else spells them.

The source checks read serkit's syntax trees (not its text), so a docstring or a comment that
mentions a name is no hit, and a second module that builds the path or spells the constant is.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from speechbrain.utils.checkpoints import METAFNAME

import serkit

from serkit.data import folds, inventory
from serkit.training import expdir
from serkit.labels.emophone import make_token_inventory, write_tokens
from serkit.model.ctc_head import ctc_greedy_decode, phoneme_ctc_loss

PACKAGE = Path(serkit.__file__).resolve().parent


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


def path_parts(tree: ast.AST) -> set[str]:
    """The string constants a module joins onto a path (``folder / "name"``)."""
    return {node.right.value for node in ast.walk(tree)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)}


@pytest.mark.parametrize("value, owner", [
    (inventory.BLANK, "serkit/data/inventory.py"),
    (expdir.CHECKPOINT_META_FILE, "serkit/training/expdir.py"),
    (expdir.AVERAGED_KEY, "serkit/training/expdir.py"),
    (folds.SPLITS, "serkit/data/folds.py"),
])
def test_only_the_owner_spells_it(value, owner):
    spelled = sorted(name for name, tree in modules().items() if value in constants(tree))
    assert spelled == [owner], f"{value!r} is spelled outside its owner {owner}: use the owner's constant"


def test_only_the_inventory_names_the_classes_file():
    joined = sorted(name for name, tree in modules().items() if inventory.CLASSES_FILE in path_parts(tree))
    assert joined == [], f"these modules build the path of the 'classes' file themselves: {joined}"
    assert inventory.CLASSES_FILE in constants(modules()["serkit/data/inventory.py"])


def test_the_checkpoint_meta_file_is_the_one_speechbrain_writes():
    assert expdir.CHECKPOINT_META_FILE == METAFNAME


def test_the_ctc_loss_and_decoder_use_the_blank_of_the_token_files(tmp_path):
    write_tokens(tmp_path / "tokens.txt", make_token_inventory(2))
    tokens = inventory.read_tokens(tmp_path / "tokens.txt")
    blank = tokens.index(inventory.BLANK)
    others = [index for index in range(len(tokens)) if index != blank]
    n_frames, targets = 7, torch.tensor([others[:3]])
    log_probs = torch.randn(1, n_frames, len(tokens), generator=torch.Generator().manual_seed(0)).log_softmax(-1)

    loss = phoneme_ctc_loss(log_probs, torch.tensor([n_frames]), targets, torch.tensor([3]))
    as_files_say = F.ctc_loss(log_probs.transpose(0, 1), targets, [n_frames], [3], blank=blank)
    another_blank = F.ctc_loss(log_probs.transpose(0, 1), targets, [n_frames], [3], blank=others[-1])
    torch.testing.assert_close(loss, as_files_say)
    assert not torch.isclose(loss, another_blank)

    path = torch.full((1, n_frames), blank)
    path[0, 2:4], path[0, 5] = others[0], others[1]  # blank blank a a blank b blank
    assert ctc_greedy_decode(F.one_hot(path, len(tokens)).float(), torch.tensor([n_frames])) == [others[:2]]


def test_a_checkpoint_meta_that_one_reader_refuses_no_reader_takes(tmp_path):
    """Resume (serkit.training.checkpoints) and export/scoring (serkit.training.expdir) parse CKPT.yaml alike."""
    from serkit.training.checkpoints import SafeCheckpointer

    model = torch.nn.Linear(2, 2)
    checkpointer = SafeCheckpointer(tmp_path / expdir.SAVE_DIR, recoverables={"model": model})
    kept = checkpointer.save_checkpoint(meta={"UA": 0.5, "epoch": 1}).path
    cut = checkpointer.save_checkpoint(meta={"UA": 0.9, "epoch": 2}).path
    (cut / expdir.CHECKPOINT_META_FILE).write_text("UA: 0.9\nepoch: 2\n")  # no unixtime, no end-of-epoch
    assert [c.path for c in expdir.list_checkpoints(tmp_path)] == [kept]
    assert [c.path for c in checkpointer.list_checkpoints()] == [kept]
