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
from tests.conftest import HEADER
from tests.peers import DISGUISED_LOOPBACK, Peer, Reply, circled, fullwidth, ideographic
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


# --- validation ------------------------------------------------------------------------------------


def _api(endpoint: str, extra_config: str = "", auth: str = "") -> str:
    return (
        HEADER
        + f"name: SIS\ntype: api\n{auth}config:\n  endpoint: {endpoint}\n{extra_config}"
        + "webhooks:\n  - events: [user.registered]\n"
    )


OAUTH = "authType: oauth2\nauthConfig:\n  tokenUrl: {url}\n  clientId: c\n  clientSecret: ${{env:SECRET}}\n"


@pytest.mark.parametrize("form", [*DISGUISED_LOOPBACK, "127.0.0.1", "[::1]", fullwidth("localhost"), "2130706433"])
@pytest.mark.parametrize(
    "field, text, line",
    [
        ("config.endpoint", _api("https://{host}:8443/hook"), 6),
        ("config.syncEndpoint", _api("https://sis.example.edu/x", "  syncEndpoint: https://{host}/changes\n"), 7),
        ("authConfig.tokenUrl", _api("https://sis.example.edu/x", auth=OAUTH.format(url="https://{host}/token")), 7),
        (
            "storageOptions.endpoint_url",
            HEADER + "name: E\ntype: file\nconfig:\n  url: s3://bucket/x\n"
            "  storageOptions:\n    endpoint_url: https://{host}:9000\n",
            8,
        ),
        ("config.url", HEADER + "name: E\ntype: file\nconfig:\n  url: https://{host}/exports\n", 6),
    ],
    ids=["endpoint", "syncEndpoint", "tokenUrl", "endpoint_url", "file-url"],
)
def test_validate_refuses_loopback_however_it_is_written(write, validate, form, field, text, line):
    write("a.yaml", text.replace("{host}", form))
    result = validate()
    assert [(d.file, d.line) for d in result.diagnostics] == [("a.yaml", line)], [
        d.as_text() for d in result.diagnostics
    ]
    [diagnostic] = result.diagnostics
    assert field in diagnostic.message and "loopback" in diagnostic.message, diagnostic.as_text()
    assert "allowPrivateNetwork: true" in diagnostic.hint


@pytest.mark.parametrize(
    "host, kind",
    [
        ("169.254.169.254", "link-local"),
        ("[::ffff:169.254.169.254]", "link-local"),
        (fullwidth("169.254.169.254"), "link-local"),
        ("10.0.0.8", "private"),
        ("100.64.0.1", "private"),
        ("[fd00::1]", "private"),
    ],
)
def test_validate_refuses_private_and_metadata_addresses(write, validate, host, kind):
    write("a.yaml", _api(f"https://{host}/hook"))
    [diagnostic] = validate().diagnostics
    assert diagnostic.line == 6 and kind in diagnostic.message, diagnostic.as_text()


def test_allow_private_network_lets_validation_pass(write, validate):
    write("a.yaml", _api(f"http://{ideographic('127.0.0.1')}:8080/hook", "  allowPrivateNetwork: true\n"))
    assert validate().diagnostics == []
    write("b.yaml", _api("https://hooks.example.org/x", "  syncEndpoint: https://93.184.215.14/changes\n"))
    assert validate().diagnostics == []


def test_validate_check_env_judges_resolved_urls(write, validate):
    """With --check-env a reference is resolved: its host is judged too, without echoing it."""
    write("a.yaml", _api("${env:HOOK_URL}"))
    environ = {"HOOK_URL": f"https://{ideographic('127.0.0.1')}/hook"}
    [diagnostic] = validate(check_env=True, environ=environ).diagnostics
    assert diagnostic.line == 6 and "config.endpoint (resolved)" in diagnostic.message, diagnostic.as_text()
    assert "127" not in diagnostic.message, "the resolved value is a secret: not echoed"
    write("a.yaml", _api("https://sis.example.edu/x", auth=OAUTH.format(url="${env:TOKEN_URL}")))
    environ = {"SECRET": "s", "TOKEN_URL": "https://169.254.169.254/token"}
    [diagnostic] = validate(check_env=True, environ=environ).diagnostics
    assert diagnostic.line == 7 and "authConfig.tokenUrl (resolved)" in diagnostic.message, diagnostic.as_text()


# --- storage options -------------------------------------------------------------------------------


def _file(options: str, extra: str = "") -> str:
    return HEADER + f"name: E\ntype: file\nconfig:\n  url: s3://bucket/x\n{extra}  storageOptions:\n{options}"


@pytest.mark.parametrize(
    "options, key, line",
    [
        ("    config_kwargs:\n      proxies: {https: 'http://10.0.0.1:3128'}\n", "config_kwargs.proxies", 9),
        ("    client_kwargs:\n      proxies: {https: 'http://10.0.0.1:3128'}\n", "client_kwargs.proxies", 9),
        ("    config_kwargs:\n      connector_args: {force_close: true}\n", "config_kwargs.connector_args", 9),
        ("    skip_instance_cache: false\n", "skip_instance_cache", 8),
        ("    proxy: http://10.0.0.1:3128\n", "proxy", 8),
    ],
)
def test_storage_options_outside_the_allow_list_are_refused(write, validate, options, key, line):
    write("f.yaml", _file(options))
    [diagnostic] = validate().diagnostics
    assert f"storageOptions.{key} is not a supported storage option" in diagnostic.message, diagnostic.as_text()
    assert "endpoint_url" in diagnostic.hint and "client_kwargs.region_name" in diagnostic.hint
    assert (diagnostic.file, diagnostic.line) == ("f.yaml", line)


def test_supported_storage_options_pass(write, validate):
    write(
        "f.yaml",
        _file(
            "    key: ${env:KEY}\n    secret: ${env:SECRET}\n    token: ${env:TOKEN}\n"
            "    endpoint_url: https://minio.example.org:9000\n"
            "    client_kwargs: {region_name: eu-west-1}\n"
            "    config_kwargs: {connect_timeout: 5, read_timeout: 20, retries: {max_attempts: 3},"
            " signature_version: s3v4, s3: {addressing_style: path}}\n"
            "    s3_additional_kwargs: {ServerSideEncryption: 'aws:kms'}\n"
        ),
    )
    assert validate().diagnostics == []
    write("f.yaml", _file("    anon: true\n"))
    assert validate().diagnostics == []


def test_client_kwargs_endpoint_url_is_checked_like_an_endpoint(write, validate):
    write("f.yaml", _file(f"    client_kwargs:\n      endpoint_url: http://{circled('127.0.0.1')}:9000\n"))
    [diagnostic] = validate().diagnostics
    assert "client_kwargs.endpoint_url" in diagnostic.message and "loopback" in diagnostic.message
    write(
        "f.yaml",
        _file("    client_kwargs:\n      endpoint_url: http://127.0.0.1:9000\n", "  allowPrivateNetwork: true\n"),
    )
    assert validate().diagnostics == []


def test_a_file_source_must_stay_under_the_target(write, validate):
    write(
        "f.yaml",
        HEADER + "name: E\ntype: file\nconfig:\n  url: s3://bucket/x\n  source: http://127.0.0.1:9/inbox\n",
    )
    [diagnostic] = validate().diagnostics
    assert "source must be a prefix under the target URL" in diagnostic.message


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
