from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.spec.validate import ValidationResult, validate_paths

ROOT = Path(__file__).resolve().parent.parent
HEADER = "apiVersion: cms.integrations/v1\nkind: Integration\n"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(name, text) puts a dedented file under a fresh config directory."""

    def _write(name: str, text: str | bytes) -> Path:
        path = tmp_path / "integrations.d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def validate(tmp_path: Path) -> Callable[..., ValidationResult]:
    """validate() runs the validator over the config directory written by `write`."""

    def _validate(**kwargs: object) -> ValidationResult:
        return validate_paths([tmp_path / "integrations.d"], root=tmp_path / "integrations.d", **kwargs)  # type: ignore[arg-type]

    return _validate


def only(result: ValidationResult) -> tuple[str, int, int, str]:
    """The single diagnostic of a result, as (file, line, column, message)."""
    assert len(result.diagnostics) == 1, [d.as_text() for d in result.diagnostics]
    d = result.diagnostics[0]
    return d.file, d.line, d.column, d.message
