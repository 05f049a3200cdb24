"""The SSRF guard: an integration reaches only public addresses unless `allowPrivateNetwork`.

A host is judged as the HTTP client reads it (yarl: IDNA/NFKC), so loopback written with
ideographic full stops, fullwidth or circled digits is loopback. These tests send requests
only to loopback, in those disguises, to prove they are refused; private ranges and cloud
metadata are judged by the pure decision, never contacted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from reconciler.manifests.models import OAuth2Auth
from reconciler.registry import Resolved
from reconciler.sinks.http import HttpSink
from reconciler.sinks.ssrf import is_public
from tests.peers import DISGUISED_LOOPBACK, Peer, Reply
from tests.pipeline import Pipeline, integration


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def disguised(peer: Peer, form: str, path: str) -> str:
    return f"http://{form}:{peer.port}{path}"


# --- the decision ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "192.0.0.1",  # IETF protocol assignments
        "192.0.0.100",
        "192.88.99.1",  # 6to4 relay anycast
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00::1",
        "fe80::1%eth0",
        "2002::1",  # 6to4
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "::ffff:127.0.0.1",  # IPv4-mapped: the kernel connects to the IPv4 address
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_non_public_addresses(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14", "64:ff9b::808:808"])
def test_public_addresses(address):
    assert is_public(address)


# --- at connect time: the HTTP sink, syncs, token endpoints ---------------------------------------


def hook_from(env: str) -> str:
    return integration(f"""
        name: Target
        type: webhook
        config:
          endpoint: ${{env:{env}}}
        retry: {{maxAttempts: 1}}
        webhooks:
          - events: ["user.*"]
        """)


@pytest.mark.parametrize("form", DISGUISED_LOOPBACK)
def test_an_endpoint_written_as_disguised_loopback_is_refused_when_sending(tmp_path, peer, form):
    """A reference resolves at apply time, where validation cannot see it: the sink refuses."""

    async def scenario() -> None:
        environ = {"HOOK_URL": disguised(peer, form, "/hook")}
        async with Pipeline(tmp_path, {"t.yaml": hook_from("HOOK_URL")}, environ=environ) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"dead": 1})
            [attempt] = p.store.attempts("t")
            assert "allowPrivateNetwork" in attempt["error"] and "127.0.0.1" in attempt["error"], attempt

    run(scenario)
    assert not peer.seen, "loopback was never contacted"


@pytest.mark.parametrize("form", DISGUISED_LOOPBACK[:1])
def test_a_sync_endpoint_written_as_disguised_loopback_is_not_fetched(tmp_path, peer, form):
    """A sync's answer is emitted as integration.synced: fetching loopback would publish it."""
    peer.script = lambda seen: Reply(200, '{"admin": "secret"}')

    async def scenario() -> None:
        source = integration("""
            name: SIS
            type: webhook
            config:
              endpoint: ${env:HOOK_URL}
              syncEndpoint: ${env:SYNC_URL}
            syncFrequency: 1
            webhooks:
              - events: [grade.published]
            """)
        listener = integration(f"""
            name: Listener
            type: webhook
            config:
              endpoint: {peer.url}/listener
              allowPrivateNetwork: true
            webhooks:
              - events: [integration.synced]
            """)
        environ = {"HOOK_URL": disguised(peer, form, "/hook"), "SYNC_URL": disguised(peer, form, "/changes")}
        async with Pipeline(tmp_path, {"sis.yaml": source, "listener.yaml": listener}, environ=environ) as p:
            await p.until(lambda: [a for a in p.store.attempts("sis") if a["trigger"] == "sync"], "a sync attempt")
            [attempt, *_] = [a for a in p.store.attempts("sis") if a["trigger"] == "sync"]
            assert "allowPrivateNetwork" in attempt["error"], attempt
            assert not p.store.attempts("listener"), "nothing was synced, so nothing was emitted"

    run(scenario)
    assert not peer.requests("/changes")


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/direct", "http://[::ffff:127.0.0.1]:{port}/direct"])
def test_the_connector_refuses_an_ip_literal_the_resolver_never_sees(peer, url):
    """aiohttp does not ask its resolver about a host that is already an IP address: the
    connection itself is checked, whatever path a URL took to the session."""
    import aiohttp

    async def scenario() -> None:
        sink = HttpSink()
        try:
            with pytest.raises(aiohttp.ClientConnectorError) as refused:
                async with sink.session(False).get(url.format(port=peer.port)):
                    pass
            assert "allowPrivateNetwork" in str(refused.value.os_error)
            async with sink.session(True).get(f"{peer.url}/allowed") as response:
                assert response.status == 200
        finally:
            await sink.close()

    run(scenario)
    assert [s.path for s in peer.seen] == ["/allowed"]


@pytest.mark.parametrize("form", ["127.0.0.1", *DISGUISED_LOOPBACK])
def test_a_token_endpoint_on_loopback_is_refused_by_the_delivery_session(peer, form):
    """OAuth2 token requests go through the delivery session: its connections are checked."""
    from reconciler.sinks.http.auth import AuthError

    # a reference, as validation cannot judge it: the resolved URL reaches the sink unchecked
    auth = OAuth2Auth.model_validate(
        {"tokenUrl": "${env:TOKEN_URL}", "clientId": "client-id", "clientSecret": "${env:SECRET}"}
    )
    values = {"${env:SECRET}": "client-secret", "${env:TOKEN_URL}": disguised(peer, form, "/token")}
    resolved = Resolved(values, uuid.uuid4().hex)

    async def scenario() -> None:
        sink = HttpSink()
        try:
            with pytest.raises(AuthError, match="allowPrivateNetwork"):
                await sink.auth.token(("t", 1), auth, resolved, sink.session(False))
        finally:
            await sink.close()

    run(scenario)
    assert not peer.token_requests


# --- attachments --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", DISGUISED_LOOPBACK)
def test_an_attachment_on_disguised_loopback_is_not_fetched(tmp_path, peer, form):
    peer.script = lambda seen: Reply(body="internal")
    spec = integration(f"""
        name: Notes
        type: file
        config:
          url: file://{tmp_path / "exports"}
          copyAttachments: true
        retry: {{maxAttempts: 1}}
        webhooks:
          - events: [note.uploaded]
        """)
    data: dict[str, Any] = {
        "noteId": 1,
        "moduleId": 2,
        "fileUrl": disguised(peer, form, "/admin.pdf"),
        "fileName": "admin.pdf",
    }

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"notes.yaml": spec}) as p:
            await p.emit("note.uploaded", data)
            await p.until(lambda: p.statuses("notes") == {"dead": 1})
            [attempt] = p.store.attempts("notes")
            assert "allowPrivateNetwork" in attempt["error"], attempt

    run(scenario)
    assert not peer.seen
    assert not (tmp_path / "exports").exists()
