"""Bad requests answer 4xx problem documents, never 500, over real HTTP: JSON nested too deep,
lone surrogates, times out of range, timestamps that are not real instants, NUL in event data,
and a sink's Retry-After that is not a number."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from reconciler.sinks.http.retry_after import parse_retry_after
from tests.api_server import app_routes, serve
from tests.peers import Peer, Reply
from tests.pipeline import Pipeline, partner_receiver, webhook_to

TRIGGER = "/api/integrations/webhooks/trigger"
RECEIVE = "/api/integrations/webhook/receive/"
PATH_SECRET = "in_" + uuid.uuid4().hex + uuid.uuid4().hex
USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}
BODY_METHODS = ("POST", "PUT", "DELETE")
MAX_JSON_DEPTH = 64  # the cap the issue asks for (reconciler.events.envelope.MAX_JSON_DEPTH)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def files(peer: Peer) -> dict[str, str]:
    hook = webhook_to(peer.url, events='["user.*", "custom.*"]')
    return {"hook.yaml": hook, "partner.yaml": partner_receiver()}


def pipeline(tmp_path: Path, peer: Peer) -> Pipeline:
    return Pipeline(tmp_path, files(peer), {"PARTNER_PATH": PATH_SECRET})


def nested(depth: int) -> bytes:
    """An object `depth` levels deep: {"a": {"a": ... 1 ...}}."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def refused(response: httpx.Response, *statuses: int) -> dict[str, object]:
    """The problem document of a 4xx answer (one of `statuses` when given)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, object] = response.json()
    assert body["status"] == response.status_code
    return body


def body_routes() -> list[tuple[str, str]]:
    """Every route that takes a body, with its path parameters filled in."""
    routes = []
    for method, template in app_routes():
        if method not in BODY_METHODS:
            continue
        path = template.replace("{id}", "hook").replace("{secret}", PATH_SECRET)
        assert "{" not in path, f"give {template} a value for its path parameter here"
        routes.append((method, path))
    return routes


def test_json_nested_deeper_than_the_cap_is_refused_on_every_route(tmp_path, peer):
    async def scenario() -> None:
        async with pipeline(tmp_path, peer) as p, serve(p) as api:
            for depth in (1000, 100, MAX_JSON_DEPTH + 1):
                for method, path in body_routes():
                    answer = await api.request(
                        method, path, content=nested(depth), headers={"content-type": "application/json"}
                    )
                    problem = refused(answer)
                    if answer.status_code in (400, 422):
                        assert str(MAX_JSON_DEPTH) in json.dumps(problem), (method, path, problem)
            # the trigger says where the data is too deep, and refuses before anything is stored
            deep_data = b'{"event":"custom.deep","data":' + nested(200) + b"}"
            answer = await api.post(TRIGGER, content=deep_data)
            assert "nested deeper than" in str(refused(answer, 400)["detail"])
            # within the cap, nesting is fine
            fine = b'{"event":"custom.deep","data":' + nested(MAX_JSON_DEPTH - 2) + b"}"
            assert (await api.post(TRIGGER, content=fine)).status_code == 202
            assert (await api.post(RECEIVE + PATH_SECRET, content=nested(MAX_JSON_DEPTH - 1))).status_code == 202

    run(scenario)


def test_lone_surrogates_in_keys_or_values_are_refused(tmp_path, peer):
    async def scenario() -> None:
        async with pipeline(tmp_path, peer) as p, serve(p) as api:
            key = rb'{"event":"custom.text","data":{"\ud800":"v"}}'
            value = rb'{"event":"custom.text","data":{"name":"a\udfffb"}}'
            for body in (key, value):
                problem = refused(await api.post(TRIGGER, content=body), 400)
                assert "surrogate" in str(problem["detail"])
                assert "/data/" in str(problem["detail"])
                # the inbound route refuses it as the sender's mistake
                payload = body.removeprefix(b'{"event":"custom.text","data":').removesuffix(b"}")
                inbound = refused(await api.post(RECEIVE + PATH_SECRET, content=payload), 400)
                assert "surrogate" in str(inbound["detail"])
            # every other route with a body refuses it the same way
            for method, path in body_routes():
                answer = await api.request(method, path, content=rb'{"reason":"\ud800","actor":"\udc00"}')
                refused(answer)
            # a surrogate pair is one character, and fine
            pair = rb'{"event":"custom.text","data":{"name":"\ud83d\ude00"}}'
            assert (await api.post(TRIGGER, content=pair)).status_code == 202
            # through the Python API (no JSON text), intake refuses it with the field named
            from reconciler.events.envelope import EventRejected

            try:
                await p.intake.emit("custom.text", {"name": "a\ud800"})
            except EventRejected as exc:
                assert [r["pointer"] for r in exc.reasons] == ["/data/name"]
            else:
                raise AssertionError("a lone surrogate in data was accepted")

    run(scenario)


def test_replay_and_log_times_out_of_range_are_refused(tmp_path, peer):
    async def scenario() -> None:
        async with pipeline(tmp_path, peer) as p, serve(p) as api:
            for since in ("99999999999d", "9" * 400 + "d", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"):
                answer = await api.post("/api/integrations/hook/replay", json={"since": since})
                assert "since" in str(refused(answer, 422)["detail"])
                logs = await api.get("/api/integrations/hook/logs", params={"since": since})
                assert "since" in str(refused(logs, 400)["detail"])
            assert (await api.post("/api/integrations/hook/replay", json={"since": "2h"})).status_code == 200

    run(scenario)


def test_timestamps_that_are_not_real_instants_are_refused_at_intake(tmp_path, peer):
    async def scenario() -> None:
        async with pipeline(tmp_path, peer) as p, serve(p) as api:
            for stamp in (
                "2024-13-45T99:99:99Z",
                "0000-01-01T00:00:00Z",
                "2024-02-30T10:00:00Z",
                "9999-12-31T23:59:59-23:59",  # no such instant in UTC
            ):
                answer = await api.post(TRIGGER, json={"event": "user.login", "data": USER, "timestamp": stamp})
                problem = refused(answer, 422)
                assert [e["pointer"] for e in problem["errors"]] == ["/timestamp"], problem  # type: ignore[union-attr]
            good = await api.post(
                TRIGGER, json={"event": "user.login", "data": USER, "timestamp": "2024-02-29T10:00:00.123Z"}
            )
            assert good.status_code == 202
            assert p.statuses("hook") in ({"pending": 1}, {"delivered": 1})

    run(scenario)


def test_nul_characters_in_event_data_are_refused_at_intake(tmp_path, peer):
    async def scenario() -> None:
        async with pipeline(tmp_path, peer) as p, serve(p) as api:
            answer = await api.post(
                TRIGGER, json={"event": "custom.text", "data": {"ok": "fine", "notes": {"line": "a\u0000b"}}}
            )
            problem = refused(answer, 422)
            assert [e["pointer"] for e in problem["errors"]] == ["/data/notes/line"], problem  # type: ignore[union-attr]
            in_key = await api.post(TRIGGER, json={"event": "custom.text", "data": {"k\u0000": 1}})
            assert refused(in_key, 422)["errors"]
            inbound = await api.post(RECEIVE + PATH_SECRET, json={"list": ["x", "\u0000"]})
            problem = refused(inbound, 422)
            assert [e["pointer"] for e in problem["errors"]] == ["/data/list/1"], problem  # type: ignore[union-attr]
            assert p.statuses("hook") == {}  # nothing was queued to dead-letter later

    run(scenario)


def test_retry_after_that_is_not_a_number_is_treated_as_absent(tmp_path, peer):
    async def scenario() -> None:
        async with pipeline(tmp_path, peer) as p, serve(p) as api:
            peer.script = lambda _seen: Reply(503, "busy", headers={"Retry-After": "²"})
            answer = await api.post("/api/integrations/hook/test")
            assert answer.status_code == 200, answer.text
            assert (answer.json()["ok"], answer.json()["status"]) == (False, 503)
            accepted = await api.post(TRIGGER, json={"event": "user.login", "data": USER})
            assert accepted.status_code == 202
            await p.until(lambda: p.statuses("hook") == {"dead": 1}, "the delivery dead-lettered")
            [attempt] = [a for a in p.store.attempts("hook") if a["trigger"] == "scheduled"]
            assert (attempt["status_code"], attempt["error"]) == (503, "HTTP 503"), attempt

    run(scenario)


def test_retry_after_accepts_only_ascii_digits_and_http_dates():
    assert parse_retry_after("²") is None
    assert parse_retry_after("٣") is None  # a digit, but not one HTTP knows
    assert parse_retry_after("-5") is None
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("9" * 400) == 600.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0) == 0.0


def test_odd_query_path_and_body_values_answer_4xx_on_both_stores(tmp_path, peer, store_url):
    """Values a store cannot compare (PostgreSQL refuses text with NUL) and numbers that are not
    ASCII digits are the client's mistake: 4xx on SQLite and PostgreSQL alike, never 500."""

    async def scenario() -> None:
        environ = {"PARTNER_PATH": PATH_SECRET}
        async with Pipeline(tmp_path, files(peer), environ, store_url=store_url) as p, serve(p) as api:
            for query in ("limit=%C2%B2", "status=%00", "event=%00", "since=%00", "cursor=%00", "kind=%00"):
                for route in ("logs", "deliveries"):
                    answer = await api.get(f"/api/integrations/hook/{route}?{query}")
                    if answer.status_code != 200:  # a filter a route does not take is ignored
                        refused(answer, 400)
            replay = await api.post("/api/integrations/hook/replay", json={"deliveryId": "dlv_\u0000"})
            refused(replay, 422)
            for value in ("%ED%A0%80", "%00", "%FF"):
                refused(await api.get(f"/api/integrations/{value}"), 404)
                refused(await api.post(RECEIVE + value, json={}), 404)
            # free text (a reason, an actor) is stored without its NUL characters
            answer = await api.post(
                "/api/integrations/hook/deactivate", json={"reason": "a\u0000b", "actor": "x\u0000"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["drift"]["reason"] == "a\ufffdb"

    run(scenario)
