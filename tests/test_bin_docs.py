"""A command's docstring shows only options its parser takes: the usage a user copies must run."""
from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest

import serkit.bin

BIN = Path(serkit.bin.__file__).resolve().parent
#: Placeholders in serkit.bin.train's usage for any hyperparameter / SpeechBrain run option.
PLACEHOLDERS = {"--any_hparam", "--speechbrain_run_option"}


def usage_options(module: str) -> set[str]:
    """The ``--options`` of the docstring's ``python -m <module> ...`` lines (with their continuations)."""
    lines = (ast.get_docstring(ast.parse((BIN / f"{module.rpartition('.')[2]}.py").read_text())) or "").splitlines()
    options, command = set(), f"python -m {module}"
    for index, line in enumerate(lines):
        if command not in line or not re.search(re.escape(command) + r"(\s|$)", line):
            continue
        block = line.split(command, 1)[1]
        while block.rstrip().endswith("\\") and index + 1 < len(lines):
            index += 1
            block += " " + lines[index]
        options |= set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", block))
    return options - PLACEHOLDERS


def help_text(module: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    return out.getvalue()


MODULES = [f"serkit.bin.{path.stem}" for path in sorted(BIN.glob("*.py")) if usage_options(f"serkit.bin.{path.stem}")]


def test_the_commands_that_show_a_usage_are_found():
    assert {"serkit.bin.compare", "serkit.bin.score", "serkit.bin.train"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_every_option_in_the_usage_is_one_the_command_takes(module):
    offered = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", help_text(module)))
    assert usage_options(module) <= offered, f"{module}'s docstring shows options it does not take"
