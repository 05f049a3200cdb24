"""Which files make up the declared state: the integration files under the given paths.

What is declared is what is reviewed in the config directory, so discovery skips hidden
files and refuses links that lead out of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from reconciler.manifests.diagnostics import Diagnostic

EXTENSIONS = (".yaml", ".yml", ".json")


def discover(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Diagnostic]]:
    """The integration files under the given files and directories, in a stable order.

    Hidden files and directories (`.git`, editor swap files) are skipped. Paths are strings:
    the reconciler walks the tree on every pass, and pathlib objects cost more than the walk.
    """
    found: list[str] = []
    problems: list[Diagnostic] = []
    seen: set[str] = set()  # `validate dir dir/a.yaml` names a.yaml twice; read it once
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            top = os.path.realpath(path)
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in dirs:
                    # os.walk does not descend into linked directories; one leading out is said
                    outside = _links_outside(os.path.join(root, name), top)
                    if outside is not None:
                        problems.append(outside)
                for name in sorted(files):
                    if name.endswith(EXTENSIONS) and not name.startswith("."):
                        file = os.path.join(root, name)
                        outside = _links_outside(file, top)
                        if outside is None:
                            found.append(file)
                        else:
                            problems.append(outside)
        elif os.path.exists(path) and not os.path.isdir(path):
            found.append(path)
        else:
            problems.append(
                Diagnostic(str(path), 0, 0, "no such file or directory", hint="check the path", code="missing-path")
            )
    unique = []
    for path in found:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique, problems


def _links_outside(path: str, top: str) -> Diagnostic | None:
    """A diagnostic when `path` is a symbolic link leading out of the directory `top` (real
    path): what is declared is what is reviewed in that directory, and a link to a file
    elsewhere (/etc/shadow) would be read, and its lines shown in errors."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    if target == top or target.startswith(top.rstrip(os.sep) + os.sep):
        return None
    return Diagnostic(
        path,
        0,
        0,
        f"is a symbolic link to {target}, outside {top}; it is not read",
        hint="copy the file into the config directory, or link to a file inside it",
        code="symlink-outside",
    )
