"""Delivery against real HTTP servers on loopback: auth, signatures, templates, batching,
cadence, pacing, Retry-After, 410, circuit breaker, dead letters and replay."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable

import pytest
import standardwebhooks

from reconciler.events.envelope import EventRejected
from reconciler.store import EndpointRow
from tests.peers import Peer, Reply, Seen
from tests.pipeline import Pipeline, integration

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def hook(peer: Peer, extra_config: str = "", extra: str = "", events: str = '["user.*"]', auth: str = "") -> str:
    return integration(f"""
        name: Target
        type: webhook
        {auth}
        config:
          endpoint: {peer.url}/hook
          allowPrivateNetwork: true
        {extra_config}
        webhooks:
          - events: {events}
        {extra}
        """)


def with_config(text: str, lines: str) -> str:
    """Insert indented config lines after `allowPrivateNetwork`."""
    indented = "".join(f"  {line}\n" for line in lines.strip().splitlines())
    return text.replace("  allowPrivateNetwork: true\n", "  allowPrivateNetwork: true\n" + indented)


def due_times(p: Pipeline, integration_id: str) -> dict[str, float]:
    """Event id -> when its delivery to the integration was (first) due, from the store."""
    import sqlalchemy as sa

    from reconciler.store import schema

    c = schema.deliveries.c
    query = sa.select(c.event_id, c.next_attempt_at).where(c.integration_id == integration_id)
    with p.store.engine.connect() as connection:
        return {event_id: at for event_id, at in connection.execute(query)}


def holding(p: Pipeline, integration_id: str) -> int:
    """How many deliveries the integration's lane holds (queued, waiting for a turn, in flight)."""
    lane = p.engine._lanes.get(integration_id)
    return len(lane.held()) if lane is not None else 0


def waiting_for_turn(p: Pipeline, integration_id: str) -> int:
    """Deliveries the lane has taken from its queue and not yet started sending (pacing)."""
    lane = p.engine._lanes.get(integration_id)
    return 0 if lane is None or lane.queue else len(lane.held()) - lane.inflight


def breakers(p: Pipeline) -> dict[str, EndpointRow]:
    """The circuit breakers as the engine knows them, by endpoint."""
    return p.engine.endpoints.rows("breaker")


async def breaker_of(p: Pipeline) -> EndpointRow:
    """The engine's one circuit breaker, once it is open."""
    await p.until(lambda: any(b.open_until is not None for b in breakers(p).values()), "the breaker open")
    [breaker] = breakers(p).values()
    return breaker


# --- basics ---------------------------------------------------------------------------------------


def test_event_is_delivered_as_the_guides_envelope(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}) as p:
            accepted = await p.emit("user.registered", USER)
            assert accepted.deliveries == 1
            await p.until(lambda: peer.requests("/hook"))
            [seen] = peer.requests("/hook")
            body = seen.json()
            assert body == {
                "id": accepted.id,
                "event": "user.registered",
                "timestamp": accepted.timestamp,
                "data": USER,
            }
            assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 24
            assert seen.headers["Content-Type"] == "application/json"
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            [attempt] = p.store.attempts("t")
            assert (attempt["status_code"], attempt["outcome"], attempt["attempt"]) == (200, "delivered", 1)
            assert attempt["response_excerpt"] == "ok" and attempt["latency_ms"] > 0

    run(scenario)


def test_events_are_checked_against_the_catalog_with_every_reason(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}) as p:
            with pytest.raises(EventRejected) as refused:
                await p.emit("user.registered", {"userId": [], "name": 3})
            pointers = sorted(r["pointer"] for r in refused.value.reasons)
            assert pointers == ["/data", "/data/name", "/data/userId"]
            with pytest.raises(EventRejected, match=re.escape("unknown event type 'user.deleted'")):
                await p.emit("user.deleted", {})
            with pytest.raises(EventRejected, match="larger than 256 KiB"):
                await p.emit("user.login", {"userId": 1, "blob": "x" * 300_000})
            accepted = await p.emit("custom.anything", {"free": "form"})
            assert accepted.deliveries == 0  # no subscriber for custom.* here, still stored

    run(scenario)


def test_filters_route_only_matching_events_and_inactive_integrations_get_nothing(tmp_path, peer):
    urgent = hook(peer, events='["system.error"]').replace(
        'webhooks:\n  - events: ["system.error"]',
        'webhooks:\n  - events: ["system.error"]\n    filter: \'data.priority == "high"\'',
    )
    sleeping = hook(peer).replace("name: Target", "name: Sleeping\nactive: false")

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"urgent.yaml": urgent, "sleeping.yaml": sleeping}) as p:
            low = await p.emit("system.error", {"message": "disk", "priority": "low"})
            unset = await p.emit("system.error", {"message": "no priority"})
            high = await p.emit("system.error", {"message": "db down", "priority": "high"})
            assert (low.deliveries, unset.deliveries, high.deliveries) == (0, 0, 1)
            assert (await p.emit("user.login", {"userId": 1})).deliveries == 0
            await p.until(lambda: peer.requests("/hook"))
            assert [s.json()["data"]["message"] for s in peer.requests("/hook")] == ["db down"]

    run(scenario)


def test_nested_filter_on_an_event_with_many_tags_is_no_match_and_delivery_goes_on(tmp_path, peer, caplog):
    # two nested comprehensions are within the static budget, but over 20,000 tags they would be
    # 400 million steps in an evaluator that holds the GIL: the event's size is checked first
    nested = hook(peer, events='["custom.tagged"]').replace(
        'webhooks:\n  - events: ["custom.tagged"]',
        'webhooks:\n  - events: ["custom.tagged"]\n    filter: "data.tags.exists(a, data.tags.exists(b, a * b == 6))"',
    )
    other = hook(peer).replace("name: Target", "name: Other").replace("/hook", "/other")

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"nested.yaml": nested, "other.yaml": other}) as p:
            many = await p.emit("custom.tagged", {"tags": list(range(10, 20_010))})  # no two make 6
            assert many.deliveries == 0
            [why] = [r.fields["error"] for r in caplog.records if r.name == "reconciler.routing"]
            assert "more than 316 list items" in why
            few = await p.emit("custom.tagged", {"tags": [2, 3]})
            assert few.deliveries == 1
            assert (await p.emit("user.login", {"userId": 1})).deliveries == 1
            await p.until(lambda: peer.requests("/hook") and peer.requests("/other"))
            assert [s.json()["data"]["tags"] for s in peer.requests("/hook")] == [[2, 3]]

    run(scenario)


def test_template_over_its_render_budget_fails_that_delivery_with_the_reason(tmp_path, peer):
    # within the static budget (two loops), but a million iterations over this event's tags
    loops = "{% for a in data.tags %}{% for b in data.tags %}{% endfor %}{% endfor %}done"
    target = hook(peer, events='["custom.tagged"]').replace(
        'webhooks:\n  - events: ["custom.tagged"]',
        f"retry: {{maxAttempts: 1}}\nwebhooks:\n  - events: [custom.tagged]\n    template: {{text: '{loops}'}}",
    )

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": target}) as p:
            await p.emit("custom.tagged", {"tags": list(range(1000))})
            await p.emit("custom.tagged", {"tags": [1, 2]})
            await p.until(lambda: len(p.store.attempts("t")) == 2, "both attempts logged")
            by_outcome = {a["outcome"]: a for a in p.store.attempts("t")}
            assert set(by_outcome) == {"dead", "delivered"}
            assert "over its render budget" in by_outcome["dead"]["error"]
            assert [s.json() for s in peer.requests("/hook")] == [{"text": "done"}]

    run(scenario)


# --- auth -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth, check",
    [
        (
            "authType: api_key\nauthConfig: {header: X-API-Key, key: '${env:KEY}'}",
            lambda s: s.headers.get("X-API-Key") == "k3y",
        ),
        (
            "authType: api_key\nauthConfig: {query: api_key, key: '${env:KEY}'}",
            lambda s: s.query.get("api_key") == "k3y" and "X-API-Key" not in s.headers,
        ),
        (
            "authType: bearer\nauthConfig: {token: '${env:KEY}'}",
            lambda s: s.headers.get("Authorization") == "Bearer k3y",
        ),
        (
            "authType: basic\nauthConfig: {username: cms, password: '${env:KEY}'}",
            lambda s: s.headers.get("Authorization") == "Basic " + base64.b64encode(b"cms:k3y").decode(),
        ),
    ],
    ids=["api_key-header", "api_key-query", "bearer", "basic"],
)
def test_static_auth_types_as_the_server_sees_them(tmp_path, peer, auth, check):
    async def scenario() -> None:
        async with Pipeline(
            tmp_path, {"t.yaml": hook(peer, auth=auth.replace("\n", "\n        "))}, environ={"KEY": "k3y"}
        ) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: peer.requests("/hook"))
            assert check(peer.requests("/hook")[0])
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            assert "k3y" not in json.dumps(p.store.attempts("t")), "credentials never reach the attempt log"

    run(scenario)


@pytest.mark.parametrize(
    "auth",
    [
        "authType: api_key\nauthConfig: {header: X-API-Key, key: '${env:KEY}'}",
        "authType: api_key\nauthConfig: {query: api_key, key: '${env:KEY}'}",
        "authType: bearer\nauthConfig: {token: '${env:KEY}'}",
        "authType: basic\nauthConfig: {username: cms, password: '${env:KEY}'}",
    ],
    ids=["api_key-header", "api_key-query", "bearer", "basic"],
)
def test_a_response_echoing_the_request_keeps_its_secrets_out_of_the_attempt_log(tmp_path, peer, auth):
    """Endpoints echo requests back (debugging proxies, error pages): the excerpt is stored."""
    peer.script = lambda seen: Reply(500, json.dumps({"headers": seen.headers, "query": seen.query}))
    basic = base64.b64encode(b"cms:k3y-secret-value").decode()

    async def scenario() -> None:
        async with Pipeline(
            tmp_path,
            {
                "t.yaml": with_config(
                    hook(peer, auth=auth.replace("\n", "\n        ")), "headers:\n  X-Tenant: '${env:TENANT}'"
                )
            },
            environ={"KEY": "k3y-secret-value", "TENANT": "tenant-secret-value"},
        ) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: len(p.store.attempts("t")) >= 1)
            logged = json.dumps(p.store.attempts("t"))
            assert "headers" in logged  # the excerpt is there, without the secrets
            for secret in ("k3y-secret-value", "tenant-secret-value", basic):
                assert secret not in logged

    run(scenario)


def oauth(peer: Peer, grant: str, method: str = "client_secret_basic") -> str:
    secret_line = "refreshToken: '${env:REFRESH}'" if grant == "refresh_token" else ""
    return (
        f"authType: oauth2\nauthConfig:\n  grantType: {grant}\n  tokenUrl: {peer.url}/token\n"
        f"  clientId: client-id\n  clientSecret: '${{env:CLIENT_SECRET}}'\n  clientAuthMethod: {method}\n"
        f"  {secret_line}"
    ).replace("\n", "\n        ")


def test_oauth2_client_credentials_token_is_cached_and_renewed_when_it_expires(tmp_path, peer):
    peer.token_lifetime = 2  # seconds: the token expires while the test runs
    peer.script = lambda seen: Reply() if peer.bearer_valid(seen) else Reply(401, "expired")

    async def scenario() -> None:
        async with Pipeline(
            tmp_path,
            {"t.yaml": hook(peer, auth=oauth(peer, "client_credentials"))},
            environ={"CLIENT_SECRET": "client-secret"},
        ) as p:
            for _ in range(3):
                await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"delivered": 3})
            # one token serves requests while it is valid: a new one is asked for only once the
            # one before is due for renewal (after 90% of its lifetime), however long sending took
            issued = [expiry - 2 for expiry in peer.tokens.values()]  # in the order they were issued
            assert all(b - a >= 2 * 0.9 - 0.001 for a, b in itertools.pairwise(issued)), issued
            used = {s.headers["Authorization"] for s in peer.requests("/hook")}
            assert len(used) == len(peer.token_requests), "each token asked for is used"
            # once the cached token has run out, the next request first renews it
            expired = p.engine.http.auth.expiries()["t"]
            await p.until(lambda: time.time() > expired, "the cached token expired")
            renewals = len(peer.token_requests)
            before = time.time()
            await p.emit("user.login", {"userId": 2})
            await p.until(lambda: p.statuses("t") == {"delivered": 4})
            assert len(peer.token_requests) == renewals + 1, "an expiring token is renewed before use"
            assert all(s.headers["Authorization"].startswith("Bearer ") for s in peer.requests("/hook"))
            assert all(a["status_code"] == 200 for a in p.store.attempts("t")), "no request went out expired"
            assert peer.token_requests[0]["grant_type"] == "client_credentials"
            expiry = p.engine.http.auth.expiries()["t"]
            assert before < expiry - 2 <= time.time(), "the renewed token's lifetime counts from when it came"

    run(scenario)


def test_oauth2_refresh_token_grant_with_rotation_and_client_secret_post(tmp_path, peer):
    peer.token_lifetime = 1
    peer.rotate_refresh = True
    # any token it issued: whether the client renews in time is what the grant count shows
    peer.script = lambda seen: Reply() if seen.headers.get("Authorization", "")[7:] in peer.tokens else Reply(401)

    async def scenario() -> None:
        async with Pipeline(
            tmp_path,
            {"t.yaml": hook(peer, auth=oauth(peer, "refresh_token", "client_secret_post"))},
            environ={"CLIENT_SECRET": "client-secret", "REFRESH": "refresh-1"},
        ) as p:
            for n in range(3):
                await p.emit("user.login", {"userId": n})
                await p.until(lambda n=n: p.statuses("t").get("delivered") == n + 1)
                # the next event needs a new token: wait until this one has expired
                expiry = p.engine.http.auth.expiries()["t"]
                await p.until(lambda expiry=expiry: time.time() > expiry, "the token expired")
            grants = peer.token_requests
            assert len(grants) == 3 and all(g["grant_type"] == "refresh_token" for g in grants)
            assert grants[0]["refresh_token"] == "refresh-1"
            assert grants[1]["refresh_token"] != "refresh-1", "the rotated refresh token is used next"
            assert grants[0]["client_secret"] == "client-secret"

    run(scenario)


def test_oauth2_refused_token_is_a_clear_attempt_error(tmp_path, peer):
    async def scenario() -> None:
        spec = hook(peer, auth=oauth(peer, "client_credentials"), extra="retry: {maxAttempts: 1}")
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ={"CLIENT_SECRET": "wrong"}) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"dead": 1})
            [attempt] = p.store.attempts("t")
            assert attempt["error"] == "token endpoint answered 401: invalid_client"
            assert not peer.requests("/hook")

    run(scenario)


# --- signatures ---------------------------------------------------------------------------------------

SECRET_A = "whsec_" + base64.b64encode(b"first-secret-32-bytes-long......").decode()
SECRET_B = "whsec_" + base64.b64encode(b"second-secret-32-bytes-long.....").decode()


def test_standard_webhooks_signature_verifies_with_the_official_library(tmp_path, peer):
    async def scenario() -> None:
        spec = with_config(hook(peer), "signingSecret: ${env:SIGNING}")
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ={"SIGNING": f"{SECRET_A} {SECRET_B}"}) as p:
            accepted = await p.emit("user.login", {"userId": 1})
            await p.until(lambda: peer.requests("/hook"))
            seen = peer.requests("/hook")[0]
            assert seen.headers["webhook-id"] == accepted.id
            assert len(seen.headers["webhook-signature"].split(" ")) == 2, "one signature per secret in rotation"
            for secret in (SECRET_A, SECRET_B):  # a receiver with either secret accepts it
                verified = standardwebhooks.Webhook(secret).verify(seen.body, seen.headers)
                assert verified["id"] == accepted.id
            with pytest.raises(standardwebhooks.WebhookVerificationError):
                standardwebhooks.Webhook(SECRET_A).verify(seen.body + b" ", seen.headers)

    run(scenario)


def test_retries_keep_the_same_webhook_id(tmp_path, peer):
    replies = iter([Reply(500), Reply(500), Reply(200)])
    peer.script = lambda seen: next(replies)

    async def scenario() -> None:
        spec = with_config(
            hook(peer, extra="retry: {maxAttempts: 5, schedule: [0s, 100ms]}"), "signingSecret: ${env:SIGNING}"
        )
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ={"SIGNING": SECRET_A}) as p:
            accepted = await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            ids = {s.headers["webhook-id"] for s in peer.requests("/hook")}
            assert ids == {accepted.id} and len(peer.requests("/hook")) == 3
            for seen in peer.requests("/hook"):
                standardwebhooks.Webhook(SECRET_A).verify(seen.body, seen.headers)

    run(scenario)


# --- templates against what each service requires ----------------------------------------------------


def slack_like(seen: Seen) -> Reply:
    """Slack incoming webhooks: 400 no_text without a non-empty `text` (or blocks)."""
    body = seen.json()
    return Reply() if isinstance(body, dict) and (body.get("text") or body.get("blocks")) else Reply(400, "no_text")


def teams_like(seen: Seen) -> Reply:
    body = seen.json()
    try:
        [attachment] = body["attachments"]
        ok = (
            body["type"] == "message"
            and attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            and attachment["content"]["type"] == "AdaptiveCard"
            and attachment["content"]["body"]
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    return Reply() if ok else Reply(400, "Bad payload")


def discord_like(seen: Seen) -> Reply:
    body = seen.json()
    content = body.get("content") if isinstance(body, dict) else None
    if not content and not (isinstance(body, dict) and body.get("embeds")):
        return Reply(400, '{"message": "Cannot send an empty message", "code": 50006}')
    return Reply(204, "") if len(content or "") <= 2000 else Reply(400, "content too long")


def sheets_like(seen: Seen) -> Reply:
    body = seen.json()
    values = body.get("values") if isinstance(body, dict) else None
    ok = isinstance(values, list) and values and all(isinstance(row, list) for row in values)
    return (
        Reply(200, json.dumps({"updates": {"updatedRows": len(values or [])}})) if ok else Reply(400, "Invalid values")
    )


@pytest.mark.parametrize(
    "template, script",
    [
        ("slack", slack_like),
        ("teams", teams_like),
        ("discord", discord_like),
        ("sheets", sheets_like),
    ],
)
def test_builtin_templates_are_accepted_by_the_targets_rules(tmp_path, peer, template, script):
    peer.script = script

    async def scenario() -> None:
        spec = with_config(hook(peer, extra="retry: {maxAttempts: 1}"), f"template: {template}")
        raw = hook(peer, extra="retry: {maxAttempts: 1}").replace("name: Target", "name: Raw")
        async with Pipeline(tmp_path, {"t.yaml": spec, "raw.yaml": raw}) as p:
            await p.emit("user.registered", USER)
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            await p.until(lambda: p.statuses("raw") == {"dead": 1})
            assert p.store.attempts("raw")[0]["status_code"] == 400, "the raw envelope is what the service refuses"

    run(scenario)


# --- batching and cadence ---------------------------------------------------------------------------


def test_batches_are_arrays_of_envelopes_spaced_by_batch_delay(tmp_path, peer):
    async def scenario() -> None:
        spec = with_config(
            hook(peer), "batchSize: 3\nbatchDelay: 300\nrateLimit: {concurrency: 1}\nsigningSecret: ${env:SIGNING}"
        )
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ={"SIGNING": SECRET_A}) as p:
            # emitted together, they are committed together and claimed together
            accepted = await asyncio.gather(*(p.emit("user.login", {"userId": n}) for n in range(7)))
            ids = [a.id for a in accepted]
            await p.until(lambda: p.statuses("t") == {"delivered": 7})
            requests = peer.requests("/hook")
            assert [len(r.json()) for r in requests] == [3, 3, 1]
            assert [e["id"] for r in requests for e in r.json()] == ids
            batch_ids = [r.headers["webhook-id"] for r in requests]
            assert len(set(batch_ids)) == 3 and all(b.startswith("bat_") for b in batch_ids)
            assert set(batch_ids).isdisjoint(ids), "a batch has its own webhook-id"
            # one request at a time, in order; batchDelay spaces the starts of batch requests, and
            # a request starts only after the one before it ended, so the third cannot come within
            # batchDelay of the first one's end (arrivals jitter; these bounds hold on any machine)
            assert all(b.at >= a.finished_at for a, b in itertools.pairwise(requests))
            assert requests[2].at - requests[0].finished_at >= 0.3 * 0.99

    run(scenario)


def test_sync_frequency_flushes_pending_events_together_on_schedule(tmp_path, peer):
    async def scenario() -> None:
        spec = with_config(hook(peer, extra="syncFrequency: 2"), "batchSize: 10")
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            ids = [(await p.emit("user.login", {"userId": n})).id for n in range(4)]
            await p.until(lambda: p.statuses("t") == {"delivered": 4})
            # each event is due at the first 2-second boundary after it came (the emits usually
            # fall in one window, but may straddle a boundary on a busy machine)
            due = due_times(p, "t")
            assert all(at % 2 == 0 for at in due.values()), due
            windows: dict[float, list[str]] = {}
            for event_id in ids:
                windows.setdefault(due[event_id], []).append(event_id)
            # the events that waited for a boundary go out together, as one batch, not before it
            requests = peer.requests("/hook")
            batches = [frozenset(e["id"] for e in r.json()) for r in requests]
            assert len(batches) == len(windows), "one batch per window"
            assert set(batches) == {frozenset(w) for w in windows.values()}, "events that waited go out together"
            assert all(r.at >= due[r.json()[0]["id"]] for r in requests), "flushed at the boundary, not before"

    run(scenario)


# --- pacing and failures ----------------------------------------------------------------------------


def test_rate_limit_spaces_requests_and_caps_concurrency(tmp_path, peer):
    peer.script = lambda seen: Reply(delay=0.05)

    async def scenario() -> None:
        spec = with_config(hook(peer), "rateLimit: {perSecond: 10, concurrency: 1}")
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            for n in range(8):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: p.statuses("t") == {"delivered": 8})
            seen = sorted(peer.requests("/hook"), key=lambda s: s.at)
            starts = [s.at for s in seen]
            assert all(b.at >= a.finished_at - 0.005 for a, b in itertools.pairwise(seen)), "one at a time"
            # Arrival times jitter on a busy machine, so the bounds are ones pacing guarantees
            # whatever the latency: the second request starts after the first one's reply, and
            # each of the six after it at least 0.1 s after the one before.
            assert starts[-1] - seen[0].finished_at >= 6 * 0.1 * 0.99, "at most 10 per second"
            assert all(b - a >= 0.05 * 0.99 for a, b in itertools.pairwise(starts)), "no bursts"

    run(scenario)


def test_retry_after_is_honoured_on_429(tmp_path, peer):
    replies = iter([Reply(429, "slow down", {"Retry-After": "1"}), Reply(200)])
    peer.script = lambda seen: next(replies)

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer, extra="retry: {schedule: [0s, 50ms]}")}) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            first, second = peer.requests("/hook")
            assert second.at - first.at >= 0.95, "waited as long as Retry-After said, not the 50 ms schedule"

    run(scenario)


def test_retry_after_holds_every_request_to_the_endpoint(tmp_path, peer):
    """A partner that says "429, come back in 2 s" means all of our requests, not only the
    one it answered: the rest of the queue waits too, and nothing is dropped."""
    told = []

    def script(seen: Seen) -> Reply:
        if not told:
            told.append(seen.at)
            return Reply(429, "slow down", {"Retry-After": "2"})
        return Reply(200)

    peer.script = script

    async def scenario() -> None:
        spec = with_config(hook(peer, extra="retry: {schedule: [0s, 50ms]}"), "rateLimit: {concurrency: 1}")
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            for n in range(4):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: p.statuses("t") == {"delivered": 4})
            later = [s.at for s in peer.requests("/hook")][1:]
            assert len(later) == 4 and min(later) - told[0] >= 1.95, "nothing was sent during the pause"

    run(scenario)


def test_retry_after_holds_the_url_it_answered_for_not_the_whole_host(tmp_path, peer):
    """A 429 on one path of a partner says nothing about its other paths: an integration posting
    to another path of the same host goes on while the first one waits."""
    told: list[float] = []

    def script(seen: Seen) -> Reply:
        if seen.path == "/a":
            told.append(seen.at)
            return Reply(429, "slow down", {"Retry-After": "30"})
        return Reply(200)

    peer.script = script

    async def scenario() -> None:
        files = {
            "a.yaml": hook(peer).replace("/hook", "/a"),
            "b.yaml": hook(peer).replace("/hook", "/b").replace("name: Target", "name: Other"),
        }
        async with Pipeline(tmp_path, files) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: told and p.statuses("b") == {"delivered": 1}, "b delivered, a told to wait")
            for n in range(2, 5):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: p.statuses("b") == {"delivered": 4}, "b goes on during a's pause")
            assert len(told) == 1, "nothing more went to /a during its pause"
            assert all(s.at - told[0] < 25 for s in peer.requests("/b")), "b was not held by a's pause"
            due = [d for d in p.store.attempts("a")]
            assert due and due[0]["outcome"] == "failed"

    run(scenario)


def test_a_huge_retry_after_pauses_the_endpoint_for_at_most_the_bound(tmp_path, peer):
    """A partner answering "come back tomorrow" (or in 11 days, by mistake) holds its queue
    for the bound (10 minutes by default, `run --max-retry-after`), not for as long as it says."""
    import time as clock

    from reconciler.sinks.http.sink import HttpSink

    peer.script = lambda seen: Reply(429, "slow down", {"Retry-After": "999999"})

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: len(p.store.attempts("t")) >= 1)
            await p.until(lambda: p.statuses("t") == {"failed": 1})
            [due] = due_times(p, "t").values()
            assert due <= clock.time() + 600, "paused beyond the default bound of 10 minutes"
            applied = p.reconciler.snapshot.applied["t"]
            assert (await p.engine.http.send(applied, b"{}", "msg_1")).retry_after == 600.0
            bounded = HttpSink(max_retry_after=5.0)
            try:
                assert (await bounded.send(applied, b"{}", "msg_2")).retry_after == 5.0
            finally:
                await bounded.close()

    run(scenario)


def test_gone_suspends_the_integration_and_keeps_its_queue(tmp_path, peer):
    peer.script = lambda seen: Reply(410, "this webhook was deleted")

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.reconciler.snapshot.overrides.get("t") is not None)
            override = p.reconciler.snapshot.overrides["t"]
            assert override.actor == "delivery" and "410 Gone" in override.reason
            await p.emit("user.login", {"userId": 2})
            # nothing more is sent to a gone endpoint: the engine does not even claim its work
            assert (await p.engine._claim_round())[0] == 0
            assert len(peer.requests("/hook")) == 1, "nothing more is sent to a gone endpoint"
            assert sum(p.statuses("t").values()) == 2, "its deliveries are kept"
            peer.script = lambda seen: Reply()
            await p.reconciler.resume("t", "alice", "new endpoint deployed")
            p.engine.wake()
            await p.until(lambda: p.statuses("t") == {"delivered": 2})

    run(scenario)


def test_circuit_breaker_stops_hammering_a_failing_endpoint(tmp_path, peer):
    peer.script = lambda seen: Reply(503, "down")

    async def scenario() -> None:
        spec = with_config(
            hook(peer, extra="retry: {maxAttempts: 10, schedule: [0s, 50ms]}"), "rateLimit: {concurrency: 1}"
        )
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            for n in range(20):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: len(peer.requests("/hook")) >= 5)
            breaker = await breaker_of(p)
            # every delivery, tried or not, waits in the store until the breaker lets a trial
            # through (5 s after it opened): none is due before then, so none is sent
            await p.until(
                lambda: all(at >= breaker.open_until for at in due_times(p, "t").values()) and not holding(p, "t"),
                "every delivery put back until the breaker closes",
            )
            assert len(peer.requests("/hook")) == 5, "the breaker opened after 5 consecutive failures"
            assert breakers(p)[breaker.key].open_until is not None, "still open"
            assert all(a["outcome"] == "failed" for a in p.store.attempts("t"))

    run(scenario)


def test_dead_letter_after_the_last_attempt_then_replay(tmp_path, peer):
    peer.script = lambda seen: Reply(500, "boom")

    async def scenario() -> None:
        spec = hook(peer, extra="retry: {maxAttempts: 3, schedule: [0s, 50ms]}")
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            accepted = await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"dead": 1})
            attempts = sorted(p.store.attempts("t"), key=lambda a: a["attempt"])
            assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "dead")]
            assert all(a["error"] == "HTTP 500" and a["response_excerpt"] == "boom" for a in attempts)
            peer.script = lambda seen: Reply()
            [delivery], _ = p.store.delivery_page("t", ["dead"])
            assert p.store.replay(delivery_id=delivery["id"]) == 1
            p.engine.wake()
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            assert peer.requests("/hook")[-1].json()["id"] == accepted.id

    run(scenario)


def test_replay_everything_failed_since_a_time(tmp_path, peer):
    peer.script = lambda seen: Reply(500)

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer, extra="retry: {maxAttempts: 1}")}) as p:
            since = time.time()
            for n in range(3):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: p.statuses("t") == {"dead": 3})
            peer.script = lambda seen: Reply()
            assert p.store.replay(integration_id="t", since=since) == 3
            p.engine.wake()
            await p.until(lambda: p.statuses("t") == {"delivered": 3})

    run(scenario)


def test_private_addresses_are_refused_unless_allowed(tmp_path, peer):
    async def scenario() -> None:
        # validation refuses a literal loopback endpoint; one behind a reference reaches the sink
        spec = hook(peer, extra="retry: {maxAttempts: 1}").replace("  allowPrivateNetwork: true\n", "")
        spec = spec.replace(f"endpoint: {peer.url}/hook", "endpoint: ${env:HOOK_URL}")
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ={"HOOK_URL": f"{peer.url}/hook"}) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"dead": 1})
            assert "allowPrivateNetwork" in p.store.attempts("t")[0]["error"]
            assert not peer.requests("/hook")

    run(scenario)


def test_response_excerpt_is_capped(tmp_path, peer):
    peer.script = lambda seen: Reply(200, "x" * 10_000)

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            assert len(p.store.attempts("t")[0]["response_excerpt"]) == 1024

    run(scenario)


def test_removing_the_file_lets_in_flight_work_finish_and_keeps_the_queue(tmp_path, peer):
    peer.script = lambda seen: Reply(delay=0.5)

    async def scenario() -> None:
        spec = with_config(hook(peer), "rateLimit: {concurrency: 1}")
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            for n in range(5):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: peer.requests("/hook"))
            (p.config / "t.yaml").unlink()
            await p.reconciler.reconcile_once("test")
            assert "t" not in p.reconciler.snapshot.registry
            statuses = p.statuses("t")
            assert statuses.get("delivered") == 1, "the request in flight finished and was recorded"
            assert statuses.get("pending") == 4, "the rest stays queued"
            assert (await p.engine._claim_round())[0] == 0, "nothing of a removed integration is claimed"
            assert len(peer.requests("/hook")) == 1
            (p.config / "t.yaml").write_text(spec)  # it comes back: the queue resumes
            await p.reconciler.reconcile_once("test")
            p.engine.wake()
            await p.until(lambda: p.statuses("t") == {"delivered": 5})

    run(scenario)


def test_both_store_backends_deliver(tmp_path, peer, store_url):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}, store_url=store_url) as p:
            ids = [(await p.emit("user.login", {"userId": n})).id for n in range(5)]
            await p.until(lambda: p.statuses("t") == {"delivered": 5})
            assert sorted(s.json()["id"] for s in peer.requests("/hook")) == sorted(ids)

    run(scenario)


def test_sync_endpoint_is_fetched_on_schedule_and_its_result_emitted(tmp_path, peer):
    peer.script = lambda seen: Reply(200, '{"changed": 3}') if seen.path == "/changes" else Reply()

    async def scenario() -> None:
        source = hook(
            peer,
            events='["grade.published"]',
            extra="syncFrequency: 1",
            auth="authType: bearer\n        authConfig: {token: '${env:KEY}'}",
        ).replace("  allowPrivateNetwork: true\n", f"  allowPrivateNetwork: true\n  syncEndpoint: {peer.url}/changes\n")
        listener = hook(peer, events='["integration.synced"]').replace("name: Target", "name: Listener")
        started = time.time()
        async with Pipeline(tmp_path, {"sis.yaml": source, "listener.yaml": listener}, environ={"KEY": "k"}) as p:
            await p.until(lambda: len(peer.requests("/changes")) >= 2)
            fetches = peer.requests("/changes")
            checked = time.time()
            assert all(s.method == "GET" and s.headers["Authorization"] == "Bearer k" for s in fetches)
            # once per syncFrequency: each run is due at a whole second after the one before, so
            # there are no more runs than whole seconds since the start (however late each ran)
            assert len(fetches) <= math.floor(checked) - math.ceil(started) + 1, "once per syncFrequency"
            await p.until(lambda: peer.requests("/hook"))
            synced = peer.requests("/hook")[0].json()
            assert synced["event"] == "integration.synced"
            assert synced["data"]["integrationId"] == "sis" and synced["data"]["body"] == {"changed": 3}
            logged = [a for a in p.store.attempts("sis") if a["trigger"] == "sync"]
            assert logged and logged[0]["delivery_id"] == "sync:sis" and logged[0]["status_code"] == 200

    run(scenario)


def test_a_failed_batch_is_retried_whole_with_its_id(tmp_path, peer):
    replies = iter([Reply(500), Reply(200)])
    peer.script = lambda seen: next(replies, Reply())

    async def scenario() -> None:
        spec = with_config(
            hook(peer, extra="retry: {maxAttempts: 5, schedule: [0s, 1s]}"),
            "batchSize: 6\nsigningSecret: ${env:SIGNING}",
        )
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ={"SIGNING": SECRET_A}) as p:
            await asyncio.gather(*(p.emit("user.login", {"userId": n}) for n in range(6)))
            await p.until(lambda: p.statuses("t") == {"delivered": 6})
            first, second = peer.requests("/hook")
            assert first.headers["webhook-id"] == second.headers["webhook-id"]
            assert [e["id"] for e in first.json()] == [e["id"] for e in second.json()], "same members, same order"

    run(scenario)


def test_a_trial_request_that_says_nothing_about_the_endpoint_does_not_stall_the_breaker(tmp_path, peer):
    replies = iter([Reply(503)] * 5 + [Reply(400, "bad payload")])
    peer.script = lambda seen: next(replies, Reply())

    async def scenario() -> None:
        spec = with_config(
            hook(peer, extra="retry: {maxAttempts: 20, schedule: [0s, 50ms]}"), "rateLimit: {concurrency: 1}"
        )
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            for n in range(3):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: len(peer.requests("/hook")) >= 5)
            breaker = await breaker_of(p)  # opened by the fifth failure, once the engine has seen it
            # skip the cool-down (in the store, which every replica follows): the next request is the trial
            p.store.change_endpoint(
                "breaker", breaker.key, lambda row: dataclasses.replace(row, open_until=time.time())
            )
            await p.until(lambda: p.statuses("t") == {"delivered": 3})
            assert breakers(p)[breaker.key].open_until is None, "closed by the trial's successor"

    run(scenario)


def test_token_endpoint_on_a_private_address_is_refused_unless_allowed(tmp_path, peer):
    async def scenario() -> None:
        # Both on loopback behind references (validation refuses literal loopback URLs), with no
        # allowPrivateNetwork: the token request is refused first, and nothing reaches the peer.
        spec = hook(peer, auth=oauth(peer, "client_credentials"), extra="retry: {maxAttempts: 1}").replace(
            "  endpoint: " + peer.url + "/hook\n  allowPrivateNetwork: true\n",
            "  endpoint: ${env:HOOK_URL}\n",
        )
        spec = spec.replace(f"tokenUrl: {peer.url}/token", "tokenUrl: ${env:TOKEN_URL}")
        environ = {"CLIENT_SECRET": "client-secret", "TOKEN_URL": f"{peer.url}/token", "HOOK_URL": f"{peer.url}/hook"}
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ=environ) as p:
            await p.emit("user.login", {"userId": 1})
            await p.until(lambda: p.statuses("t") == {"dead": 1})
            assert "allowPrivateNetwork" in p.store.attempts("t")[0]["error"]
            assert not peer.token_requests, "the token endpoint on loopback was never called"
            assert not peer.requests("/hook")

    run(scenario)


def test_data_that_is_not_json_is_refused(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}) as p:
            with pytest.raises(EventRejected, match="no NaN"):
                await p.emit("user.login", {"userId": float("nan")})

    run(scenario)


def test_committed_deliveries_go_straight_to_their_lane_and_are_sent_once(tmp_path, peer, store_url):
    """The intake leases new deliveries to the local engine in the same commit; the claim
    query must not take them a second time, on either store."""

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": hook(peer)}, store_url=store_url) as p:
            claims: list[int] = []
            claim = p.store.claim

            def counting_claim(*args, **kwargs):  # the real claim, counted
                found = claim(*args, **kwargs)
                claims.append(len(found))
                return found

            p.store.claim = counting_claim  # type: ignore[method-assign]
            accepted = await asyncio.gather(*(p.emit("user.registered", {**USER, "userId": n}) for n in range(200)))
            await p.until(lambda: p.statuses("t") == {"delivered": 200})
            ids = [seen.json()["id"] for seen in peer.requests("/hook")]
            assert sorted(ids) == sorted(a.id for a in accepted)  # each once
            assert sum(claims) == 0  # none needed the claim query
            rows, _ = p.store.delivery_page("t", ["delivered"], limit=500)
            assert len(rows) == 200

    run(scenario)


def test_a_paced_integration_is_left_to_the_claim_query(tmp_path, peer):
    """rateLimit pacing budgets what a lane holds by its lease: those deliveries are claimed."""

    async def scenario() -> None:
        text = with_config(hook(peer), "rateLimit: {perSecond: 50}")
        async with Pipeline(tmp_path, {"t.yaml": text}) as p:
            assert p.engine.lease("t", time.time()) is None
            await asyncio.gather(*(p.emit("user.registered", USER) for _ in range(5)))
            await p.until(lambda: p.statuses("t") == {"delivered": 5})

    run(scenario)


def test_removal_does_not_wait_for_a_paced_turn(tmp_path, peer):
    """A lane closing (removal, shutdown) lets requests in flight finish, but work still waiting
    for its turn under rateLimit goes back to the store at once instead of holding the close."""

    async def scenario() -> None:
        spec = with_config(hook(peer), "rateLimit: {perSecond: 0.1}")  # a turn every 10 s
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            for n in range(3):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: len(peer.requests("/hook")) == 1)
            # the others are taken from the queue and wait for their turn, 10 s away
            await p.until(lambda: waiting_for_turn(p, "t") == 2, "the other two waiting for their turn")
            (p.config / "t.yaml").unlink()
            await asyncio.wait_for(p.reconciler.reconcile_once("test"), timeout=5)
            assert p.statuses("t") == {"delivered": 1, "pending": 2}
            assert len(peer.requests("/hook")) == 1

    run(scenario)


def test_a_sync_answer_with_a_nul_byte_is_logged_and_syncing_goes_on(tmp_path, peer, postgres_url):
    """PostgreSQL text cannot hold NUL; a partner's answer can. The attempt is stored with the
    byte replaced, and the next sync still runs."""
    peer.script = lambda seen: Reply(200, '{"note": "a\x00b"}' if seen.path == "/changes" else "ok")

    async def scenario() -> None:
        source = hook(peer, events='["grade.published"]', extra="syncFrequency: 1")
        source = with_config(source, f"syncEndpoint: {peer.url}/changes")
        async with Pipeline(tmp_path, {"sis.yaml": source}, store_url=postgres_url) as p:
            await p.until(lambda: len(peer.requests("/changes")) >= 2, "a second sync after the first")
            await p.until(lambda: [a for a in p.store.attempts("sis") if a["trigger"] == "sync"], "the sync logged")
            logged = next(a for a in p.store.attempts("sis") if a["trigger"] == "sync")
            assert logged["response_excerpt"] == '{"note": "a\ufffdb"}'

    run(scenario)
