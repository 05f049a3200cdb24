"""Scaffolding templates: `reconciler new TEMPLATE ID` and the bundled `integrations.d/`
examples come from the files in `scaffolds/`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

_DIR = "scaffolds"
_ID_LINE = re.compile(r"^id: .*$", re.MULTILINE)
_NAME_LINE = re.compile(r"^name: .*$", re.MULTILINE)


@dataclass(frozen=True)
class Scaffold:
    """A template of `reconciler new`: one bundled YAML file with its comments."""

    name: str  # the template's name, as given to `reconciler new`
    text: str  # the YAML file, comments included

    @property
    def data(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.text)
        assert isinstance(loaded, dict)
        return loaded

    @property
    def default_id(self) -> str:
        data = self.data
        return str(data.get("id") or data.get("name"))

    @property
    def description(self) -> str:
        for line in self.text.splitlines():
            if line.startswith("# ") and "yaml-language-server" not in line:
                return line[2:].strip()
        return ""

    def render(self, ident: str) -> str:
        """The template with its id (an EventType's name) replaced by `ident`."""
        if self.data.get("kind") == "EventType":
            return _NAME_LINE.sub(f"name: {ident}", self.text, count=1)
        return _ID_LINE.sub(f"id: {ident}", self.text, count=1)


def scaffolds() -> dict[str, Scaffold]:
    folder = resources.files("reconciler.manifests").joinpath(_DIR)
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            found[name] = Scaffold(name, entry.read_text(encoding="utf-8"))
    return found
