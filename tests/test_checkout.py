"""The first hour in a checkout: `make run` installs only what the daemon needs, the test and
lint jobs add their tools on top (either order works), and `bin/reconciler` runs the
checkout's command from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

RUN_INSTALL = "pip install --no-compile -e ."
DEV_INSTALL = "pip install --no-compile -e '.[dev]'"


def checkout(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml of this repository in a folder of their own."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def planned(folder: Path, target: str) -> str:
    """What `make TARGET` would run (make's dry run: nothing is executed)."""
    return subprocess.run(["make", "-n", target], cwd=folder, check=True, capture_output=True, text=True).stdout


def installed(folder: Path, *stamps: str) -> None:
    """A .venv as make leaves it after installing: the interpreter, then the stamps, newer than pyproject.toml."""
    (folder / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    (folder / ".venv" / "bin" / "python").touch()
    past = (folder / "pyproject.toml").stat().st_mtime - 60
    os.utime(folder / "pyproject.toml", (past, past))
    for stamp in stamps:
        (folder / ".venv" / stamp).touch()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_installs_the_daemon_alone_and_the_test_jobs_add_their_tools(tmp_path):
    folder = checkout(tmp_path)
    fresh_run = planned(folder, "run")
    assert RUN_INSTALL in fresh_run and ".[dev]" not in fresh_run
    assert "-m venv .venv" in fresh_run
    for job in ("test", "lint", "bench", "coverage"):
        assert RUN_INSTALL in planned(folder, job) and DEV_INSTALL in planned(folder, job), job

    installed(folder, ".installed-run")  # after `make run`
    assert "pip install" not in planned(folder, "run")
    after_run = planned(folder, "test")
    assert DEV_INSTALL in after_run and RUN_INSTALL not in after_run

    installed(folder, ".installed-run", ".installed-dev")  # after `make test`, in either order
    assert "pip install" not in planned(folder, "run") + planned(folder, "test")

    (folder / "pyproject.toml").touch()  # a dependency added: both are installed again
    assert RUN_INSTALL in planned(folder, "run") and DEV_INSTALL in planned(folder, "test")


def test_bin_reconciler_runs_the_checkouts_command_from_any_directory(tmp_path):
    folder = tmp_path / "checkout"
    (folder / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "bin" / "reconciler", folder / "bin" / "reconciler")
    (folder / ".venv" / "bin").mkdir(parents=True)
    command = Path(sys.executable).parent / "reconciler"
    assert command.exists(), "the reconciler command is installed beside this interpreter"
    (folder / ".venv" / "bin" / "reconciler").symlink_to(command)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    answer = subprocess.run(
        [str(folder / "bin" / "reconciler"), "--version"], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("reconciler ")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_bin_reconciler_installs_first_and_says_so_when_that_fails(tmp_path):
    folder = tmp_path / "checkout"
    (folder / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "bin" / "reconciler", folder / "bin" / "reconciler")
    (folder / "Makefile").write_text("install:\n\t@echo no package index here >&2; exit 1\n")
    answer = subprocess.run(
        [str(folder / "bin" / "reconciler"), "status"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 2
    assert "first use, installing" in answer.stderr and "no package index here" in answer.stderr
