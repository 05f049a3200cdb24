"""Property-based tests of the loader and the validator: whatever bytes or YAML a pull request
holds, the answer is diagnostics or models, never an exception.

Example counts are bounded so the suite stays quick; a failure prints the smallest input
hypothesis found.
"""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifests.loader import load_bytes
from reconciler.manifests.validate import TreeValidator

EXAMPLES = 150
FIELDS = ["apiVersion", "kind", "id", "name", "type", "authType", "authConfig", "config", "webhooks", "receive"]
FIELDS += ["endpoint", "events", "filter", "template", "retry", "syncFrequency", "batchSize", "url", "secret"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["cms.integrations/v1", "Integration", "EventType", "webhook", "api", "database", "file"]),
    st.sampled_from(["${env:X}", "${file:/run/secrets/x}", "http://127.0.0.1:1/x", "user.*", "10s", "bearer"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(alphabet=string.ascii_letters + "_-.", min_size=1, max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)),
    max_leaves=30,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(raw=st.binary(max_size=400))
def test_any_bytes_load_to_documents_or_diagnostics(raw: bytes) -> None:
    loaded = load_bytes(raw, "fuzz.yaml")
    assert all(p.file == "fuzz.yaml" and p.line >= 0 and p.column >= 0 for p in loaded.problems)


@settings(max_examples=EXAMPLES, deadline=None)
@given(text=st.text(alphabet=string.printable + "\u00e9\u3002\ufeff\x85", max_size=300))
def test_any_text_loads_to_documents_or_diagnostics(text: str) -> None:
    load_bytes(text.encode("utf-8", "surrogatepass"), "fuzz.yaml")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_any_yaml_document_validates_to_models_or_diagnostics(tmp_path: Path, document: object) -> None:
    folder = tmp_path / "integrations.d"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / "fuzz.yaml").write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = TreeValidator().validate_paths([folder], root=folder)
    for problem in result.diagnostics:
        assert problem.file.endswith("fuzz.yaml") and problem.message, problem
    assert result.integrations or result.event_types or result.diagnostics or document is None or document == {}
