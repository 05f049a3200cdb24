"""The Python client (`reconciler.client`), sync and async, against the real API: accepted,
repeated, refused; its own retries after a lost answer store one event; 503 and Retry-After
honoured with the same Idempotency-Key on every try; a 4xx not retried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from reconciler.client import AsyncClient, AuthError, Client, RetryPolicy, TriggerRefused, Unavailable
from tests.answer_dropper import AnswerDropper
from tests.api_server import SECRET, serve
from tests.peers import Peer, Reply, Seen
from tests.pipeline import Pipeline, webhook_to

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}
QUICK = RetryPolicy(retries=3, base=0.01, cap=0.05)  # real backoff, short: the test is about what is sent


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_the_sync_client_triggers_repeats_and_is_refused(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            url = str(api.base_url)

            def calls() -> None:
                with Client(url, SECRET) as client:
                    first = client.trigger("user.registered", USER, idempotency_key="signup-7")
                    assert (first.event, first.deliveries, first.duplicate) == ("user.registered", 1, False)
                    again = client.trigger("user.registered", USER, idempotency_key="signup-7")
                    assert (again.id, again.duplicate) == (first.id, True)
                    with pytest.raises(TriggerRefused) as refused:
                        client.trigger("user.registered", {"userId": "seven"})
                    assert refused.value.status == 422 and refused.value.errors
                    with pytest.raises(TriggerRefused) as conflict:
                        client.trigger("user.registered", {**USER, "name": "Grace"}, idempotency_key="signup-7")
                    assert conflict.value.conflicts == ["data"]
                with Client(url, "not-the-secret") as stranger, pytest.raises(AuthError):
                    stranger.trigger("user.registered", USER)

            await asyncio.to_thread(calls)
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})

    run(scenario)


def test_its_own_retry_after_a_lost_answer_stores_one_event(tmp_path, peer: Peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": webhook_to(peer.url)}) as p, serve(p) as api:
            dropper = AnswerDropper(api.base_url.port or 0, drop=1)
            async with dropper, AsyncClient(f"http://127.0.0.1:{dropper.port}", SECRET, policy=QUICK) as client:
                accepted = await client.trigger("user.registered", USER)  # no key given: one of its own
            assert (dropper.answers_dropped, dropper.answers_passed) == (1, 1)
            assert accepted.duplicate is True and accepted.deliveries == 1
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            [sent] = peer.requests("/hook")
            assert sent.json()["id"] == accepted.id

    run(scenario)


def test_retries_honour_503_and_retry_after_with_one_key(peer: Peer):
    answers = iter([Reply(503, "{}", {"Retry-After": "0"}), Reply(502), Reply(202, json.dumps(ACCEPTED))])
    peer.script = lambda _seen: next(answers)
    with Client(peer.url, SECRET, policy=QUICK) as client:
        accepted = client.trigger("user.registered", USER)
    assert accepted.id == "evt_1"
    tries = peer.requests("/api/integrations/webhooks/trigger")
    assert len(tries) == 3
    assert len({seen.headers["idempotency-key"] for seen in tries}) == 1
    assert all(json.loads(seen.body)["event"] == "user.registered" for seen in tries)


def test_a_refusal_is_not_retried_and_retries_run_out(peer: Peer):
    peer.script = lambda _seen: Reply(400, json.dumps({"detail": "bad body"}), {"Content-Type": "application/json"})
    with Client(peer.url, SECRET, policy=QUICK) as client, pytest.raises(TriggerRefused, match="bad body"):
        client.trigger("user.registered", USER)
    assert len(peer.requests()) == 1

    def always_busy(_seen: Seen) -> Reply:
        return Reply(503, "{}", {"Retry-After": "0"})

    peer.script = always_busy
    with Client(peer.url, SECRET, policy=QUICK) as client, pytest.raises(Unavailable) as unavailable:
        client.trigger("user.registered", USER)
    assert unavailable.value.status == 503
    assert len(peer.requests()) == 1 + 1 + QUICK.retries


ACCEPTED = {"id": "evt_1", "event": "user.registered", "timestamp": "2026-01-15T10:30:00.000Z", "deliveries": 1}
