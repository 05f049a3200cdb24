"""The runtime API over real HTTP: authentication, test sends, logs (paged and followed),
deliveries and replay, the 405 answers with the file to commit, templates, health, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from reconciler.manifests.validate import validate_paths
from tests.api_server import OPEN_ROUTES, SECRET, admin_routes, app_routes, serve
from tests.peers import Peer, Reply
from tests.pipeline import Pipeline, integration, webhook_to

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def hook(peer: Peer, retry: str = "retry: {schedule: [1s], maxAttempts: 1}") -> str:
    return webhook_to(peer.url, retry=retry)


def test_every_admin_route_needs_the_secret_in_a_header(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            assert OPEN_ROUTES.issubset(app_routes())  # an open route renamed is not silently unchecked
            for method, template in admin_routes():
                path = template.replace("{id}", "hook")
                assert "{" not in path, f"give {template} a value for its path parameter here"
                anonymous = await api.request(method, path, headers={"x-admin-secret": ""})
                assert anonymous.status_code == 401, (method, path)
                assert anonymous.headers["content-type"] == "application/problem+json"
                assert anonymous.headers["www-authenticate"].startswith("Bearer")
                in_query = await api.request(
                    method, path, params={"x-admin-secret": SECRET}, headers={"x-admin-secret": ""}
                )
                assert in_query.status_code == 401, (method, path)
            bearer = await api.get(
                "/api/integrations", headers={"x-admin-secret": "", "authorization": f"Bearer {SECRET}"}
            )
            assert bearer.status_code == 200
            for method, template in sorted(OPEN_ROUTES):
                path = template.replace("{secret}", "not-a-path-secret")
                path = path.replace("events/{name}", "events/user.registered.schema.json")
                path = path.replace("{name}", "integration.schema.json")
                answer = await api.request(method, path, headers={"x-admin-secret": ""})
                # inbound receipt at an unknown path secret: 404, as anyone gets (tests/test_inbound.py has the rest)
                assert answer.status_code == (200 if method == "GET" else 404), (method, path)
            assert peer.requests("/hook") == []

    run(scenario)


def test_test_endpoint_sends_through_the_real_sink_once(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            answer = await api.post("/api/integrations/hook/test", json={"message": "hello from ops"})
            assert answer.status_code == 200
            result = answer.json()
            assert (result["ok"], result["status"], result["responseExcerpt"]) == (True, 200, "ok")
            [seen] = peer.requests("/hook")
            assert seen.json()["event"] == "integration.test"
            assert seen.json()["data"] == {"integrationId": "hook", "message": "hello from ops"}
            assert seen.json()["id"] == result["eventId"]

            peer.script = lambda _seen: Reply(503, "down for maintenance")
            failed = (await api.post("/api/integrations/hook/test")).json()
            assert (failed["ok"], failed["status"], failed["responseExcerpt"]) == (False, 503, "down for maintenance")
            # a test send is never retried: it is not a delivery, so nothing is queued to retry it
            assert p.statuses("hook") == {}
            assert len(peer.requests("/hook")) == 2

            log = (await api.get("/api/integrations/hook/logs", params={"kind": "test"})).json()["items"]
            assert [(e["kind"], e["status"], e["statusCode"]) for e in log] == [
                ("test", "failed", 503),
                ("test", "delivered", 200),
            ]
            assert (await api.post("/api/integrations/nope/test")).status_code == 404
            bad = await api.post("/api/integrations/hook/test", json={"message": 5})
            assert bad.status_code == 422

    run(scenario)


def test_logs_page_newest_first_with_filters_and_stable_cursors(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            for n in range(5):
                await p.emit("user.registered", {**USER, "userId": n})
            await p.emit("user.login", {"userId": 1, "at": "2026-01-15T10:30:00Z"})
            await p.until(lambda: p.statuses("hook") == {"delivered": 6})
            await p.until(lambda: len(p.store.attempts("hook")) == 6)

            seen: list[dict[str, object]] = []
            cursor = None
            while True:
                params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
                page = (await api.get("/api/integrations/hook/logs", params=params)).json()
                seen += page["items"]
                cursor = page["nextCursor"]
                if cursor is None:
                    break
                await p.emit("user.registered", USER)  # new entries must not shift later pages
            kinds = [e["kind"] for e in seen]
            assert kinds.count("attempt") == 6 and kinds.count("reconcile") == 1
            assert len({e["cursor"] for e in seen}) == len(seen) == 7
            times = [e["at"] for e in seen]
            assert times == sorted(times, reverse=True)
            assert seen[-1]["status"] == "add"  # the reconcile action that applied it came first

            logins = (await api.get("/api/integrations/hook/logs", params={"event": "user.login"})).json()["items"]
            assert [(e["event"], e["status"]) for e in logins] == [("user.login", "delivered")]
            future = (await api.get("/api/integrations/hook/logs", params={"since": "2999-01-01T00:00:00Z"})).json()
            assert future["items"] == []
            recent = (await api.get("/api/integrations/hook/logs", params={"since": "1h", "kind": "reconcile"})).json()
            assert [e["kind"] for e in recent["items"]] == ["reconcile"]

            for params in (
                {"cursor": "not-a-cursor"},
                {"limit": "0"},
                {"limit": "many"},
                {"kind": "gossip"},
                {"since": "yesterday"},
                {"follow": "maybe"},
            ):
                bad = await api.get("/api/integrations/hook/logs", params=params)
                assert bad.status_code == 400, params
                assert bad.headers["content-type"] == "application/problem+json"
            assert (await api.get("/api/integrations/nope/logs")).status_code == 404

    run(scenario)


def test_follow_streams_new_entries_as_server_sent_events(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            events: list[tuple[str, str, dict[str, object]]] = []
            subscribed = asyncio.Event()

            async def follow() -> None:
                params = {"follow": "true", "kind": "attempt"}
                async with api.stream("GET", "/api/integrations/hook/logs", params=params) as stream:
                    assert stream.status_code == 200
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    ident = kind = ""
                    async for line in stream.aiter_lines():
                        if line.startswith(": following the log of "):
                            subscribed.set()  # sent once the stream's starting cursor is fixed
                        elif line.startswith("id: "):
                            ident = line[4:]
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            events.append((ident, kind, json.loads(line[6:])))
                            if len(events) == 2:
                                return

            follower = asyncio.create_task(follow())
            # subscribed before the events happen: only new entries come
            await asyncio.wait_for(subscribed.wait(), timeout=20)
            first = await p.emit("user.registered", USER)
            await p.until(lambda: len(events) == 1)
            second = await p.emit("user.registered", {**USER, "userId": 8})
            await asyncio.wait_for(follower, timeout=20)
            assert [(kind, data["eventId"], data["status"]) for _, kind, data in events] == [
                ("attempt", first.id, "delivered"),
                ("attempt", second.id, "delivered"),
            ]
            assert all(ident == data["cursor"] for ident, _, data in events)

            # Last-Event-ID resumes after the first: the second comes again, nothing else
            resumed: list[dict[str, object]] = []
            headers = {"last-event-id": events[0][0]}
            async with api.stream(
                "GET", "/api/integrations/hook/logs", params={"follow": "true", "kind": "attempt"}, headers=headers
            ) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        resumed.append(json.loads(line[6:]))
                        break
            assert resumed[0]["eventId"] == second.id

    run(scenario)


def test_dead_deliveries_are_listed_and_replayed(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            peer.script = lambda _seen: Reply(500, "broken")
            accepted = [await p.emit("user.registered", {**USER, "userId": n}) for n in range(3)]
            await p.until(lambda: p.statuses("hook") == {"dead": 3})

            dead = (await api.get("/api/integrations/hook/deliveries", params={"status": "dead"})).json()
            assert sorted(d["eventId"] for d in dead["items"]) == sorted(a.id for a in accepted)
            assert {d["lastError"] for d in dead["items"]} == {"HTTP 500"}
            page = (await api.get("/api/integrations/hook/deliveries", params={"status": "dead", "limit": "2"})).json()
            rest = (
                await api.get(
                    "/api/integrations/hook/deliveries",
                    params={"status": "dead", "limit": "2", "cursor": page["nextCursor"]},
                )
            ).json()
            assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["nextCursor"] is None
            assert {d["id"] for d in page["items"] + rest["items"]} == {d["id"] for d in dead["items"]}
            pending = (await api.get("/api/integrations/hook/deliveries", params={"status": "pending"})).json()
            assert pending["items"] == []

            peer.script = lambda _seen: Reply()
            one = dead["items"][0]
            replayed = await api.post("/api/integrations/hook/replay", json={"deliveryId": one["id"]})
            assert (replayed.status_code, replayed.json()["replayed"]) == (202, 1)
            await p.until(lambda: p.statuses("hook") == {"dead": 2, "delivered": 1})
            everything = await api.post("/api/integrations/hook/replay", json={"since": "1h", "actor": "ops"})
            assert everything.json()["replayed"] == 2
            await p.until(lambda: p.statuses("hook") == {"delivered": 3})
            again = await api.post("/api/integrations/hook/replay", json={"since": "1h"})
            assert (again.status_code, again.json()["replayed"]) == (200, 0)
            # the webhook-id of a replayed delivery is still its event id
            assert {s.headers.get("webhook-id") for s in peer.requests("/hook")} <= {a.id for a in accepted} | {None}

            trail = p.store.audit_trail("hook")
            assert [e.action for e in trail][:3] == ["replay", "replay", "replay"]
            assert trail[1].actor == "ops"

            for body in ({}, {"since": "someday"}, {"status": "delivered", "since": "1h"}, {"deliveryId": 7}):
                refused = await api.post("/api/integrations/hook/replay", json=body)
                assert refused.status_code == 422, body
            unknown = await api.post("/api/integrations/hook/replay", json={"deliveryId": "dlv_nope"})
            assert unknown.status_code == 404
            bad_status = await api.get("/api/integrations/hook/deliveries", params={"status": "lost"})
            assert bad_status.status_code == 400

    run(scenario)


def test_writes_answer_405_with_a_file_that_validates(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            plain = await api.post("/api/integrations")
            assert plain.status_code == 405 and plain.headers["allow"] == "GET"
            assert "git" in plain.json()["detail"] and "yaml" not in plain.json()

            guide_example = {  # the integration guide's Google Sheets example, as it is written there
                "name": "Google Sheets Sync",
                "type": "api",
                "authType": "bearer",
                "config": {
                    "endpoint": "https://sheets.example.org/v4/spreadsheets/abc/values/A1:append",
                    "method": "POST",
                    "headers": {"Content-Type": "application/json"},
                },
                "authConfig": {"token": "YOUR_GOOGLE_ACCESS_TOKEN"},
                "syncFrequency": 3600,
                "webhooks": [{"events": ["grade.published"]}],
            }
            created = (await api.post("/api/integrations", json=guide_example)).json()
            assert created["status"] == 405 and created["valid"] is True, created["errors"]
            assert created["file"] == "integrations.d/google-sheets-sync.yaml"
            assert "YOUR_GOOGLE_ACCESS_TOKEN" not in json.dumps(created)  # a secret sent is never echoed
            assert created["secretsToSet"] == [{"variable": "GOOGLE_SHEETS_SYNC_TOKEN", "field": "/authConfig/token"}]
            _round_trip(tmp_path, p, "google-sheets-sync.yaml", created["yaml"])

            added = (await api.post("/api/integrations/hook/webhooks", json={"events": ["grade.published"]})).json()
            assert added["valid"] is True and added["file"] == "integrations.d/hook.yaml"
            assert yaml.safe_load(added["yaml"])["webhooks"][-1] == {"events": ["grade.published"]}
            _round_trip(tmp_path, p, "hook.yaml", added["yaml"])

            broken = (await api.put("/api/integrations/hook", json={"name": "Hook", "type": "webhook"})).json()
            assert broken["valid"] is False and broken["errors"]
            assert all({"line", "column", "pointer", "message", "hint"} <= set(e) for e in broken["errors"])

            deleted = await api.delete("/api/integrations/hook")
            assert deleted.status_code == 405 and deleted.json()["file"] == "integrations.d/hook.yaml"
            assert (await api.put("/api/integrations/nope", json={})).status_code == 404
            assert p.reconciler.snapshot.registry["hook"].generation == 1  # nothing changed

    run(scenario)


def _round_trip(tmp_path: Path, p: Pipeline, name: str, text: str) -> None:
    """The returned file, committed beside the others, validates."""
    target = tmp_path / "committed"
    target.mkdir(exist_ok=True)
    for existing in p.config.iterdir():
        (target / existing.name).write_text(existing.read_text())
    (target / name).write_text(text)
    result = validate_paths([target])
    assert result.ok, [d.as_text() for d in result.diagnostics]


def test_templates_health_and_metrics(tmp_path, peer):
    async def scenario() -> None:
        files = {"hook.yaml": hook(peer)}
        async with Pipeline(tmp_path, files) as p, serve(p, metrics_need_admin=True) as api:
            templates = (await api.get("/api/integrations/templates")).json()
            names = {t["name"] for t in templates["items"]}
            assert {"slack", "teams", "google-sheets", "postgres-reporting", "inbound-partner"} <= names
            for item in templates["items"]:
                assert yaml.safe_load(item["yaml"]) == item["json"]

            peer.script = lambda seen: Reply(500) if seen.json()["data"]["userId"] == 0 else Reply()
            for n in range(4):
                await p.emit("user.registered", {**USER, "userId": n})
            await p.until(lambda: p.statuses("hook") == {"delivered": 3, "dead": 1})
            await p.until(lambda: len(p.store.attempts("hook")) == 4)

            health = (await api.get("/api/integrations/health/status")).json()
            # a dead letter in the window: not ok, and it says which and why
            assert health["lastPass"]["ok"] is True and health["integrationsByStatus"] == {"degraded": 1}
            assert health["status"] == "degraded"
            assert health["problems"] == ["1 integration degraded: events are not getting through"]
            assert health["queue"] == {"depth": 0, "oldestPendingSeconds": 0.0, "dead": 1}
            [item] = health["integrations"]
            assert (item["status"], item["reason"]) == ("degraded", "DeadLetters")
            assert "1 delivery ran out of attempts" in item["message"] and "reconciler replay hook" in item["message"]
            assert (item["id"], item["attempts24h"], item["successRate24h"]) == ("hook", 4, 0.75)
            assert item["queue"]["dead"] == 1

            assert (await api.get("/metrics", headers={"x-admin-secret": ""})).status_code == 401
            metrics = await api.get("/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            text = metrics.text
            assert 'reconciler_delivery_attempts_total{integration="hook",outcome="delivered"} 3.0' in text
            assert 'reconciler_delivery_attempts_total{integration="hook",outcome="dead"} 1.0' in text
            assert 'reconciler_delivery_latency_seconds_count{integration="hook"} 4.0' in text
            assert "reconciler_events_accepted_total 4.0" in text
            assert "reconciler_dead_letters 1.0" in text
            assert "reconciler_reconcile_passes_total" in text and "reconciler_queue_depth 0.0" in text

    run(scenario)


def test_oauth2_token_expiry_is_shown_never_the_token(tmp_path, peer):
    secret_env = {"CLIENT_SECRET": peer.client[1]}
    oauth = integration(f"""
        id: oauth
        name: OAuth target
        type: api
        authType: oauth2
        authConfig:
          tokenUrl: {peer.url}/token
          clientId: {peer.client[0]}
          clientSecret: ${{env:CLIENT_SECRET}}
        config:
          endpoint: {peer.url}/api
          allowPrivateNetwork: true
        webhooks:
          - events: ["user.*"]
        """)

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"oauth.yaml": oauth}, environ=secret_env) as p, serve(p) as api:
            result = (await api.post("/api/integrations/oauth/test")).json()
            assert result["ok"] is True, result
            raw = (await api.get("/api/integrations/health/status")).text
            [item] = json.loads(raw)["integrations"]
            assert item["tokenExpiresAt"] is not None and item["tokenExpiresAt"].endswith("Z")
            for token in peer.tokens:
                assert token not in raw
            assert peer.client[1] not in raw

    run(scenario)


def test_bodies_are_bounded_and_errors_are_problem_documents(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            huge = await api.post("/api/integrations/webhooks/trigger", content=b'{"event": "' + b"x" * 600_000 + b'"}')
            assert huge.status_code == 413 and huge.json()["status"] == 413
            not_json = await api.post("/api/integrations/hook/deactivate", content=b"{nope")
            assert not_json.status_code == 400 and not_json.headers["content-type"] == "application/problem+json"
            missing = await api.get("/api/nothing-here")
            assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
            wrong_method = await api.patch("/api/integrations/hook")
            assert wrong_method.status_code == 405
            assert p.reconciler.snapshot.registry["hook"].generation == 1

    run(scenario)


def test_openapi_document_names_every_route(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            document = (await api.get("/api/openapi.json")).json()
            assert document["openapi"].startswith("3.1")
            paths = document["paths"]
            documented = {(method.upper(), path) for path, operations in paths.items() for method in operations}
            assert documented == set(app_routes())  # every route, and nothing the app does not serve
            for method, path in app_routes():
                operation = paths[path][method.lower()]
                if (method, path) in OPEN_ROUTES:
                    assert not operation.get("security"), (method, path)
                else:
                    assert operation["security"] and "401" in operation["responses"], (method, path)

    run(scenario)


def test_cli_clients_talk_to_the_api(tmp_path, peer):
    """`reconciler status | logs | test | replay` against a served pipeline."""
    from reconciler.cli.main import main

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            server = str(api.base_url)
            secret_file = tmp_path / "admin-secret"
            secret_file.write_text(SECRET)
            common = ["--server", server, "--admin-secret-file", str(secret_file)]

            def cli(*args: str) -> int:
                return main([*args[:1], *common, *args[1:]])

            assert await asyncio.to_thread(cli, "test", "hook") == 0
            peer.script = lambda _seen: Reply(500, "no")
            assert await asyncio.to_thread(cli, "test", "hook") == 1
            accepted = await p.emit("user.registered", USER)
            await p.until(lambda: p.statuses("hook") == {"dead": 1})
            assert await asyncio.to_thread(cli, "logs", "hook", "--kind", "attempt") == 0
            assert await asyncio.to_thread(cli, "status") == 1  # a dead letter: degraded
            peer.script = lambda _seen: Reply()
            assert await asyncio.to_thread(cli, "replay", "hook", "--since", "1h") == 0
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            assert await asyncio.to_thread(cli, "status") == 0  # replayed and delivered: ok again
            assert accepted.id in {s.json()["id"] for s in peer.requests("/hook")}
            assert await asyncio.to_thread(cli, "logs", "nope") == 2
            wrong = ["--server", server, "--admin-secret-file", str(tmp_path / "missing")]
            assert await asyncio.to_thread(main, ["status", *wrong]) == 2

    run(scenario)


def test_cli_logs_follow_prints_new_entries(tmp_path, peer):
    """`reconciler logs ID --follow` over a real stream: the entry shows up while it runs."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            earlier = await p.emit("user.registered", {**USER, "userId": 8})
            await p.until(lambda: p.store.attempts("hook"), "the earlier event's attempt logged")
            env = {"ADMIN_SECRET": SECRET, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
            command = [sys.executable, "-m", "reconciler", "logs", "hook", "--follow", "--kind", "attempt", "--json"]
            process = subprocess.Popen(
                [*command, "--server", str(api.base_url)], stdout=subprocess.PIPE, text=True, env=env
            )
            try:

                async def next_line() -> dict[str, object]:
                    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=20)  # type: ignore[union-attr]
                    return dict(json.loads(line))

                # the entry already there is printed first, and following resumes right after it:
                # what is written from then on shows up, however long the stream takes to connect
                assert (await next_line())["eventId"] == earlier.id
                accepted = await p.emit("user.registered", USER)
                assert (await next_line())["eventId"] == accepted.id
            finally:
                process.terminate()
                process.wait(10)
                process.stdout.close()  # type: ignore[union-attr]

    run(scenario)


def test_a_trigger_while_the_daemon_stops_answers_503_with_retry_after(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            p.intake.stopped = True  # as after the intake's last commit at shutdown
            try:
                late = await api.post("/api/integrations/webhooks/trigger", json={"event": "user.login", "data": USER})
            finally:
                p.intake.stopped = False
            assert late.status_code == 503, late.text
            assert late.headers["retry-after"] == "5"
            assert late.headers["content-type"] == "application/problem+json"

    run(scenario)
