"""YAML that cannot run code: what serkit reads from option values, override files and configs.

Three kinds of YAML reach serkit, trusted to different degrees (docs/security.md):

- **command-line values** (``--data_dir X``, ``--lr_heads 1e-3``) are data. They are never joined into
  YAML text (SpeechBrain's ``parse_arguments`` does that, so a value holding a newline could add
  keys and a value holding a tag could build objects): :func:`cli_overrides` turns the
  ``--name value`` words into a mapping, each value typed on its own as YAML 1.2 reads a *plain*
  number, boolean or null, and any other text kept as the literal string it is;
- **override files** (``--overrides`` / ``run.sh --train_overrides``, a recipe's ``conf/<family>.yaml``)
  may hold only plain values (:func:`load_plain_mapping`): numbers, strings, booleans, null, lists
  and mappings of them, with no tag at all. A recipe changes settings with them; building objects
  is the shared config's job;
- **configs** (``conf/<family>.yaml``) are HyperPyYAML: code, which ``!new:``/``!apply:``/``!name:``
  run on purpose. They are trusted like serkit's own source, but a ``!!python/...`` tag (ruamel's
  unsafe constructors, which HyperPyYAML leaves enabled) has no place in one and is refused with
  the file and line (:func:`refuse_python_tags`): a config copied from elsewhere must not get a
  second, hidden way to run code.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import ruamel.yaml

from serkit.errors import Refused

# The tags a plain YAML document may carry (the YAML 1.2 core schema and what the safe loader builds).
PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in
              ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "binary")}
PYTHON_TAG = "tag:yaml.org,2002:python/"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class YamlRefused(Refused):
    """A YAML file or option value was refused: it is not plain data where only data is allowed."""


def _nodes(node) -> Iterator:
    """Every node of a composed YAML document, each once (aliases point to nodes already seen)."""
    seen, stack = set(), [node]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node.value, list):
            for child in node.value:
                stack.extend(child if isinstance(child, tuple) else (child,))


def _tag(node) -> str:
    return str(getattr(node.tag, "value", node.tag))


def _compose(text: str, source: str):
    try:
        return ruamel.yaml.YAML().compose(text)
    except ruamel.yaml.YAMLError as error:
        raise YamlRefused(f"{source}: not valid YAML ({error})") from None


def refuse_python_tags(text: str, source: str) -> None:
    """Raise :class:`YamlRefused` if ``text`` has a ``!!python/...`` tag, naming ``source``, the line and the tag."""
    for node in _nodes(_compose(text, source)):
        tag = _tag(node)
        if tag.startswith(PYTHON_TAG):
            raise YamlRefused(f"{source}, line {node.start_mark.line + 1}: the tag !!{tag.split(':', 2)[2]} would run "
                              "Python code while the file is read; serkit refuses it. Configs build objects with "
                              "HyperPyYAML's !new: / !apply: / !name: (docs/formats.md)")


def load_plain_mapping(path: str | Path, what: str = "overrides file") -> dict:
    """A YAML file of plain values (no tag of any kind) that must be a mapping of names to values.

    Refused, naming the file (and line): a tag (``!!python/...``, HyperPyYAML's ``!new:`` / ``!ref``),
    a document that is not a mapping (a list, a single value), a key that is not a name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlRefused(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise YamlRefused(f"{path}: cannot read the {what} ({error})") from None
    root = _compose(text, str(path))
    for node in _nodes(root):
        tag = _tag(node)
        if tag not in PLAIN_TAGS:
            shown = f"!!{tag.split(':', 2)[2]}" if tag.startswith("tag:yaml.org,2002:") else tag
            raise YamlRefused(f"{path}, line {node.start_mark.line + 1}: the tag {shown} is not allowed in an {what}: "
                              "it may hold only plain values (numbers, strings, true/false, null, lists, mappings). "
                              "Put anything that builds objects or refers to other keys in a config "
                              "(conf/<family>.yaml) instead (docs/formats.md)")
    if root is None:
        return {}
    if _tag(root) != "tag:yaml.org,2002:map":
        kind = "a list" if _tag(root) == "tag:yaml.org,2002:seq" else "a single value"
        raise YamlRefused(f"{path}: the {what} is {kind}; it must be a mapping of 'hyperparameter: value' lines, "
                          "e.g. 'batch_size: 8'")
    data = ruamel.yaml.YAML(typ="safe", pure=True).load(text)
    bad = [repr(key) for key in data if not (isinstance(key, str) and NAME.match(key))]
    if bad:
        raise YamlRefused(f"{path}: key(s) {', '.join(bad)} are not hyperparameter names (letters, digits, _)")
    return data


def typed_value(text: str):
    """An option value as data: a number, boolean or null when the whole text is one plain YAML 1.2
    scalar of that type (``4``, ``1e-3``, ``true``, ``null``, empty), else the text itself.

    Lists, mappings, tags, anchors and several lines are never parsed: the value stays one string.
    """
    if "\n" in text or "\r" in text:
        return text
    try:
        value = ruamel.yaml.YAML(typ="safe", pure=True).load(text)
    except ruamel.yaml.YAMLError:
        return text
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return text


def cli_overrides(words: Sequence[str]) -> dict:
    """``--name value`` / ``--name=value`` words as a mapping ``{name: typed_value(value)}``.

    Every word is a name or a value, never YAML text; a name must be a hyperparameter name and
    must have a value.
    """
    overrides: dict = {}
    words = list(words)
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("--"):
            raise YamlRefused(f"unexpected argument {word!r}: hyperparameters are given as --name value")
        if "=" in word:
            name, value = word[2:].split("=", 1)
            index += 1
        else:
            name = word[2:]
            if index + 1 >= len(words) or (words[index + 1].startswith("--") and len(words[index + 1]) > 2):
                raise YamlRefused(f"--{name} needs a value")
            value = words[index + 1]
            index += 2
        if not NAME.match(name):
            raise YamlRefused(f"--{name}: not a hyperparameter name (letters, digits and _ only)")
        overrides[name] = typed_value(value)
    return overrides
