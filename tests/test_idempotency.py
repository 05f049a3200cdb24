"""Idempotent intake: the trigger route takes an `Idempotency-Key` header (or the sender's own
event `id`), so a sender that never saw the 202 (the connection dropped after the daemon
committed) can send again and get the first answer, with no second event and no second
delivery. Same key and a different body: 422. Race-safe on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from reconciler.store import schema as t
from tests.answer_dropper import AnswerDropper
from tests.api_server import SECRET, serve
from tests.peers import Peer
from tests.pipeline import Pipeline, webhook_to

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}
TRIGGER = "/api/integrations/webhooks/trigger"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def events_stored(p: Pipeline) -> int:
    with p.store.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(t.events)).scalar_one())


def deliveries_stored(p: Pipeline) -> int:
    return sum(p.statuses("hook").values())


def test_a_retry_after_a_lost_answer_yields_one_event_and_one_delivery(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            body = {"event": "user.registered", "data": USER}
            headers = {"x-admin-secret": SECRET, "idempotency-key": "registration-7-f3a1"}
            dropper = AnswerDropper(api.base_url.port or 0)
            async with dropper, httpx.AsyncClient(base_url=f"http://127.0.0.1:{dropper.port}") as lossy:
                with pytest.raises(httpx.TransportError):
                    await lossy.post(TRIGGER, json=body, headers=headers)
            assert dropper.answers_dropped == 1
            retried = await api.post(TRIGGER, json=body, headers=headers)  # the sender tries again
            assert retried.status_code == 202, retried.text
            answer = retried.json()
            assert answer["duplicate"] is True and answer["deliveries"] == 1
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            assert events_stored(p) == 1 and deliveries_stored(p) == 1
            [sent] = peer.requests("/hook")
            assert sent.json()["id"] == answer["id"] == answer["duplicateOf"]

    run(scenario)


def test_same_key_same_body_answers_the_first_event(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            body = {"event": "user.registered", "data": USER}
            first = await api.post(TRIGGER, json=body, headers={"idempotency-key": '"k-1"'})  # a quoted sf-string
            again = await api.post(TRIGGER, json=body, headers={"idempotency-key": "k-1"})
            assert first.status_code == again.status_code == 202
            assert "duplicate" not in first.json()
            assert {k: again.json()[k] for k in ("id", "event", "timestamp", "deliveries")} == first.json()
            other = await api.post(TRIGGER, json=body, headers={"idempotency-key": "k-2"})
            assert other.json()["id"] != first.json()["id"]
            await p.until(lambda: p.statuses("hook") == {"delivered": 2})
            assert events_stored(p) == 2

    run(scenario)


def test_same_key_different_body_is_refused_naming_the_conflict(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            key = {"idempotency-key": "k-1"}
            first = await api.post(TRIGGER, json={"event": "user.registered", "data": USER}, headers=key)
            changed = {"event": "user.registered", "data": {**USER, "name": "Grace"}}
            refused = await api.post(TRIGGER, json=changed, headers=key)
            assert refused.status_code == 422
            problem = refused.json()
            assert problem["conflicts"] == ["data"] and problem["original"] == first.json()["id"]
            assert "'k-1'" in problem["detail"] and "send a new key" in problem["detail"]
            stamped = {"event": "user.registered", "data": USER, "timestamp": "2024-01-15T10:30:00Z"}
            assert (await api.post(TRIGGER, json=stamped, headers=key)).json()["conflicts"] == ["timestamp"]
            assert events_stored(p) == 1

    run(scenario)


def test_a_senders_own_event_id_is_its_key(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            body = {"id": "cms-evt-000123", "event": "user.registered", "data": USER}
            first = await api.post(TRIGGER, json=body)
            assert first.status_code == 202 and first.json()["id"] == "cms-evt-000123"
            again = await api.post(TRIGGER, json=body)
            assert again.json()["duplicate"] is True and again.json()["id"] == "cms-evt-000123"
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            assert peer.requests("/hook")[0].json()["id"] == "cms-evt-000123"
            for bad in ("", "has space", "x" * 65, 12, "-leading"):
                answer = await api.post(TRIGGER, json={**body, "id": bad})
                assert answer.status_code == 422 and answer.json()["errors"][0]["pointer"] == "/id", bad
            for bad_key in ("", "x" * 201, "caf\u00e9"):
                headers = {"idempotency-key": bad_key.encode()}  # raw bytes: UTF-8 on the wire
                assert (await api.post(TRIGGER, json=body, headers=headers)).status_code == 400, bad_key

    run(scenario)


def test_concurrent_requests_with_one_key_make_one_event(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            body = {"event": "user.registered", "data": USER}
            answers = await asyncio.gather(
                *(api.post(TRIGGER, json=body, headers={"idempotency-key": "burst"}) for _ in range(20))
            )
            assert {a.status_code for a in answers} == {202}
            assert len({a.json()["id"] for a in answers}) == 1
            assert sum(1 for a in answers if "duplicate" not in a.json()) == 1
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            assert events_stored(p) == 1

    run(scenario)


def test_two_replicas_on_postgresql_store_one_key_once(tmp_path, peer: Peer, postgres_url: str):
    """Two intakes, each with its own store connections (two replicas), commit one key at the
    same moment: the database keeps one event; the other gets it as its answer."""

    async def scenario() -> None:
        files = {"hook.yaml": webhook_to(peer.url)}
        first, second = (
            Pipeline(tmp_path, files, store_url=postgres_url),
            Pipeline(tmp_path / "replica", files, store_url=postgres_url),
        )
        async with first as p, second as q:
            for round_ in range(10):
                key = f"race-{round_}"
                results: list[Any] = await asyncio.gather(
                    *(replica.intake.emit("user.registered", USER, idempotency_key=key) for replica in (p, q, p, q))
                )
                assert len({r.id for r in results}) == 1, results
                assert sum(1 for r in results if r.duplicate_of is None) == 1
            assert events_stored(p) == 10
            await p.until(lambda: sum(p.statuses("hook").values()) == 10)

    (tmp_path / "replica").mkdir()
    run(scenario)
