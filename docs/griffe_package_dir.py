"""Griffe extension for the API reference.

``pyproject.toml`` installs ``adapters/`` as ``fluxbase_receiver.adapters`` and ``sender/`` as
``fluxbase_receiver.sender`` (``[tool.setuptools] package-dir``). Griffe finds packages by
their folders, so this extension visits each mapped folder when the parent package is
visited and attaches it under its installed name, for any kind of install (or none).

The docstrings name objects with Sphinx roles (``:class:`Outcome```); they are shown as
code (``~a.b.C`` as ``C``), ``Usage::`` before an indented block as ``Usage:``, and
``>>>`` examples as ``pycon`` code blocks, since Markdown has none of these.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parent.parent
SPHINX_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"::$", re.MULTILINE)  # "Usage::" before an indented block


def mapped_folders() -> dict[str, Path]:
    """``{"fluxbase_receiver.adapters": <repo>/adapters, ...}`` from ``pyproject.toml``."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        package_dir: dict[str, str] = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in package_dir.items() if name != folder}


def as_code(match: re.Match[str]) -> str:
    """``:class:`~a.b.C``` as ```C```, ``:meth:`Receiver.on``` as ```Receiver.on```."""
    shortened, target = match.groups()
    return f"`{target.rpartition('.')[2] if shortened else target}`"


def fence_examples(text: str) -> str:
    """Wrap each run of ``>>>`` / ``...`` lines in a fenced ``pycon`` block."""
    lines: list[str] = []
    example: list[str] = []
    for line in [*text.splitlines(), ""]:
        stripped = line.lstrip()
        if stripped.startswith(">>>") or (example and stripped.startswith("...")):
            example.append(line)
            continue
        if example:
            indent = example[0][: len(example[0]) - len(example[0].lstrip())]
            lines += [f"{indent}```pycon", *example, f"{indent}```"]
            example = []
        lines.append(line)
    return "\n".join(lines[:-1])


class PackageDir(griffe.Extension):
    """Attach each mapped folder to its parent package, module by module; show roles as code."""

    def __init__(self) -> None:
        self.folders = mapped_folders()

    def on_instance(
        self, *, node: ast.AST | griffe.ObjectNode, obj: griffe.Object, agent: Any, **kwargs: Any
    ) -> None:
        if obj.docstring is not None:
            text = SPHINX_ROLE.sub(as_code, obj.docstring.value)
            obj.docstring.value = fence_examples(LITERAL_BLOCK.sub(":", text))

    def on_module_members(
        self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, agent: Any, **kwargs: Any
    ) -> None:
        for name, folder in self.folders.items():
            parent_name, _, child = name.rpartition(".")
            if mod.path == parent_name and child not in mod.members:
                package = self._visit(child, folder / "__init__.py", mod, agent)
                for path in sorted(folder.glob("*.py")):
                    if path.stem != "__init__":
                        package.set_member(path.stem, self._visit(path.stem, path, package, agent))

    @staticmethod
    def _visit(name: str, path: Path, parent: griffe.Module, agent: Any) -> griffe.Module:
        module = griffe.visit(
            name,
            filepath=path,
            code=path.read_text(encoding="utf-8"),
            extensions=agent.extensions,
            parent=parent,
            docstring_parser=agent.docstring_parser,
            docstring_options=agent.docstring_options,
            lines_collection=agent.lines_collection,
            modules_collection=agent.modules_collection,
        )
        parent.set_member(name, module)
        return module
