"""The package structure (`make lint` runs this file too): imports only go down the pipeline,
and every public class says what it is.

A module may import from its own package and from any package on a lower layer; packages on
one layer are independent of each other. Every import counts, including those under
`TYPE_CHECKING` and those inside functions: a type-level cycle is still a cycle for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

# Bottom to top. Each entry: the packages (or top-level modules) of one layer.
LAYERS: list[tuple[str, ...]] = [
    ("reconciler", "reconciler.logs"),  # the version; log formatting
    ("reconciler.events",),  # the event vocabulary: catalog, schemas, patterns, filters, envelope, templates
    ("reconciler.manifests",),  # the declared format: models, loader, validation
    ("reconciler.store",),  # SQLite and PostgreSQL, the async facade
    ("reconciler.registry", "reconciler.metrics"),  # applied integrations and the snapshot; counters
    ("reconciler.reconcile", "reconciler.intake"),  # the loop that owns the snapshot; event intake and routing
    ("reconciler.sinks",),  # where deliveries go, each sink with what only it needs
    ("reconciler.delivery",),  # dispatcher, lanes, retries, outcomes, scheduled syncs
    ("reconciler.api",),  # the HTTP API
    ("reconciler.daemon", "reconciler.client"),  # `reconciler run`: every role in one process; its client
    ("reconciler.cli",),  # the command line
    ("reconciler.__main__",),  # python -m reconciler
]


def unit_of(module: str) -> str:
    """The layered unit a module belongs to: its package under reconciler, or the module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise LookupError(unit)


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a reconciler module in the file."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "reconciler" or name.startswith("reconciler.")]


def backwards_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = unit_of(module_name(path))
        for line, imported in imports_of(path):
            target = unit_of(imported)
            if target == importer:
                continue
            try:
                mine, theirs = layer_of(importer), layer_of(target)
            except LookupError as missing:
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {missing} is on no layer; "
                    "add it to LAYERS in tests/test_layers.py (and to docs/architecture.md)"
                )
                continue
            if theirs > mine or (theirs == mine and target != importer):
                why = "a higher layer" if theirs > mine else "a package beside it on the same layer"
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported}, {why}; "
                    "imports only go down (docs/architecture.md): move the shared code down, or pass it in"
                )
    return problems


def test_imports_only_go_down() -> None:
    problems = backwards_imports()
    assert not problems, "backwards imports:\n" + "\n".join(problems)


def test_every_package_is_on_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert units == {unit for layer in LAYERS for unit in layer}


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("reconciler.sinks.http.sink", "reconciler.delivery.engine", False),  # up: the old sinks <-> delivery cycle
        ("reconciler.manifests.checks", "reconciler.delivery.templates", False),
        ("reconciler.intake.committer", "reconciler.reconcile.loop", False),  # siblings on one layer
        ("reconciler.delivery.engine", "reconciler.sinks.http", True),
        ("reconciler.manifests.models", "reconciler.events.filters", True),
    ],
)
def test_the_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    mine, theirs = layer_of(unit_of(importer)), layer_of(unit_of(imported))
    same = unit_of(importer) == unit_of(imported)
    assert (same or theirs < mine) is allowed


def test_the_architecture_document_lists_every_layer_in_order() -> None:
    """docs/architecture.md's package table is the same layering as LAYERS, row by row."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`reconciler" in line]
    documented = [tuple(part.strip("` ") for part in row.split("|")[2].split(",")) for row in rows]
    assert documented == LAYERS


def test_every_public_class_says_what_it_is() -> None:
    """A docstring on every public class; the file format's models are exempt where a
    docstring would become a JSON Schema description (their fields are described instead)."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "manifests/models" in path.as_posix():
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: class {node.name}")
    assert not missing, "classes without a docstring:\n" + "\n".join(missing)
