"""schemathesis against the running daemon: generated requests for every operation of the
OpenAPI document; no 5xx, and every response matches the document (status, content type,
body schema, headers). Bounded per operation so the suite stays quick."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from reconciler.api.openapi import document
from tests.peers import Peer
from tests.test_daemon import Daemon

SECRET = "conformance-admin-secret-0123456789"
EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    peer = Peer()
    workdir: Path = tmp_path_factory.mktemp("conformance")
    config = workdir / "integrations.d"
    config.mkdir()
    (config / "hook.yaml").write_text(
        "apiVersion: cms.integrations/v1\nkind: Integration\nid: hook\nname: Hook\ntype: webhook\n"
        f"config: {{endpoint: '{peer.url}/hook', allowPrivateNetwork: true}}\n"
        "retry: {schedule: [1s], maxAttempts: 1}\n"
        "webhooks: [{events: ['*']}]\n"
    )
    try:
        with Daemon(workdir, env={"ADMIN_SECRET": SECRET}) as daemon:
            yield daemon
    finally:
        peer.close()


# The document the daemon serves (test_served_document_is_this_one checks they are the same).
schema = schemathesis.openapi.from_dict(document())


def test_served_document_is_this_one(live_daemon: Daemon) -> None:
    assert httpx.get(f"{live_daemon.url}/api/openapi.json", timeout=10).json() == json.loads(json.dumps(document()))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_matches_its_document(case: schemathesis.Case, live_daemon: Daemon) -> None:
    if case.query and str(case.query.get("follow", "")).lower() in ("true", "1"):
        case.query["follow"] = "false"  # a stream never ends; following is tested on its own
    # Documented, schema-valid input may still be refused for what a schema cannot say (an
    # unknown event type, an id that is not there, a write route that answers 405 by design):
    # the check that every such request succeeds does not apply; everything else does.
    excluded = [schemathesis.checks.positive_data_acceptance]
    case.call_and_validate(base_url=live_daemon.url, headers={"x-admin-secret": SECRET}, excluded_checks=excluded)
