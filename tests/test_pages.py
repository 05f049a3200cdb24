"""The status page over HTTP (no browser): who may read it, signing in and out, CSRF on actions,
the headers every page sends, and that it renders what the API answers. tests/test_browser.py
drives the same pages in Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from reconciler.api.pages.apidocs import example, operation_anchor, type_html
from reconciler.api.pages.render import CONTENT_SECURITY_POLICY
from reconciler.api.pages.session import COOKIE, SESSION_SECONDS, Sessions
from reconciler.api.pages.sources import document_line
from reconciler.manifests.loader import content_hash
from tests.api_server import SECRET, page_routes, serve
from tests.peers import Peer, Reply
from tests.pipeline import Pipeline, webhook_to
from tests.test_daemon import EXPORT, Daemon
from tests.test_daemon import SECRET as DAEMON_SECRET

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}
ANONYMOUS = {"x-admin-secret": ""}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def hook(peer: Peer) -> str:
    return webhook_to(peer.url, retry="retry: {schedule: [1s], maxAttempts: 1}")


@contextlib.asynccontextmanager
async def signed_in(api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the same server: no header secret, the session cookie of a sign-in."""
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=20) as browser:
        answer = await browser.post("/sign-in", data={"secret": SECRET, "next": "/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        yield browser


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def test_the_page_needs_the_secret_unless_public(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            anonymous = await api.get("/", headers=ANONYMOUS)
            assert anonymous.status_code == 401
            assert 'action="/sign-in"' in anonymous.text and "hook" not in anonymous.text.split("<main")[1]
            one = await api.get("/integrations/hook", headers=ANONYMOUS)
            assert one.status_code == 401 and 'value="/integrations/hook"' in one.text  # back there once signed in
            stream = await api.get("/integrations/hook/log", headers=ANONYMOUS)
            assert stream.status_code == 401
            by_header = await api.get("/")
            assert by_header.status_code == 200 and 'id="row-hook"' in by_header.text
            bearer = await api.get("/", headers={"x-admin-secret": "", "authorization": f"Bearer {SECRET}"})
            assert bearer.status_code == 200 and 'id="row-hook"' in bearer.text
            in_query = await api.get("/", params={"x-admin-secret": SECRET}, headers=ANONYMOUS)
            assert in_query.status_code == 401
        async with Pipeline(tmp_path / "public", {"hook.yaml": hook(peer)}) as p, serve(p, public_status=True) as api:
            reading = await api.get("/integrations/hook", headers=ANONYMOUS)
            assert reading.status_code == 200 and "Conditions" in reading.text
            assert 'action="/integrations/hook/suspend"' not in reading.text  # actions are for admins only
            acting = await api.post("/integrations/hook/suspend", content="reason=x", headers={**ANONYMOUS, **FORM})
            assert acting.status_code == 401
            assert p.reconciler.snapshot.overrides.get("hook") is None

    (tmp_path / "public").mkdir()
    run(scenario)


def test_sign_in_sets_a_strict_httponly_cookie_that_is_not_the_secret(tmp_path, peer):
    async def scenario() -> None:
        async with (
            Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p,
            serve(p) as api,
            httpx.AsyncClient(base_url=str(api.base_url), timeout=20) as browser,
        ):
            wrong = await browser.post("/sign-in", data={"secret": "not-the-admin-secret-at-all", "next": "/"})
            assert wrong.status_code == 401 and "That is not the admin secret." in wrong.text
            assert COOKIE not in wrong.headers.get("set-cookie", "")
            right = await browser.post("/sign-in", data={"secret": SECRET, "next": "/integrations/hook"})
            assert right.status_code == 303 and right.headers["location"] == "/integrations/hook"
            cookie = right.headers["set-cookie"]
            assert cookie.startswith(f"{COOKIE}=")
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
            assert f"Max-Age={SESSION_SECONDS}" in cookie
            assert SECRET not in cookie and SECRET not in right.text
            page = await browser.get("/integrations/hook")
            assert page.status_code == 200 and 'action="/integrations/hook/suspend"' in page.text
            # only a path of this daemon is followed after signing in
            for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
                sent = await browser.post("/sign-in", data={"secret": SECRET, "next": elsewhere})
                assert sent.headers["location"] == "/", elsewhere
            # signing out revokes the token: the old cookie no longer reads the page
            token = browser.cookies[COOKIE]
            page = await browser.get("/integrations/hook")  # the forms of the latest session
            out = await browser.post("/sign-out", data={"csrf": csrf_of(page.text)})
            assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
            replayed = await api.get("/", headers={**ANONYMOUS, "cookie": f"{COOKIE}={token}"})
            assert replayed.status_code == 401

    run(scenario)


def test_an_action_needs_the_session_csrf_token(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api, signed_in(api) as browser:
            page = await browser.get("/integrations/hook")
            token = csrf_of(page.text)
            for form in ({"reason": "no token"}, {"reason": "wrong token", "csrf": token[:-2] + "xx"}):
                refused = await browser.post("/integrations/hook/suspend", data=form)
                assert refused.status_code == 403 and 'id="refused"' in refused.text
                assert p.reconciler.snapshot.overrides.get("hook") is None
            # another site's form, even with a token lifted from the page: the Origin says no
            foreign = await browser.post(
                "/integrations/hook/suspend",
                data={"reason": "x", "csrf": token},
                headers={"origin": "https://evil.example"},
            )
            assert foreign.status_code == 403
            # a token of another session is not this one's
            other = Sessions(SECRET)
            stolen = other.csrf_token(other.nonce_of(other.issue()) or "")
            forged = await browser.post("/integrations/hook/suspend", data={"reason": "x", "csrf": stolen})
            assert forged.status_code == 403
            done = await browser.post(
                "/integrations/hook/suspend", data={"reason": "maintenance window", "csrf": token}
            )
            assert done.status_code == 303 and done.headers["location"] == "/integrations/hook"
            override = p.reconciler.snapshot.overrides["hook"]
            assert override.suspended and override.reason == "maintenance window"
            after = await browser.get("/integrations/hook")
            assert 'id="flash"' in after.text and "suspended" in after.text
            assert 'id="drift"' in after.text and "maintenance window" in after.text
            # a script with the header needs no token: browsers never add that header for another site
            resumed = await api.post("/integrations/hook/resume", content="reason=done", headers=FORM)
            assert resumed.status_code == 303
            override = p.reconciler.snapshot.overrides.get("hook")
            assert override is None or not override.suspended

    run(scenario)


def test_every_page_sends_the_security_headers_and_no_inline_script(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
            for path in ("/", "/integrations/hook", "/sign-in", "/integrations/nope", "/api/docs"):
                answer = await api.get(path)
                assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
                assert answer.headers["x-content-type-options"] == "nosniff"
                assert answer.headers["cache-control"] == "no-store"
                scripts = re.findall(r"<script\b[^>]*>", answer.text)
                assert scripts and all(re.search(r'src="/static/[\w.]+\?v=\w+"', s) for s in scripts), scripts
                assert not re.search(r"\son\w+=", answer.text), "an inline event handler"
            # every asset is served by the daemon itself
            for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', (await api.get("/")).text):
                served = await api.get(asset, headers=ANONYMOUS)
                assert served.status_code == 200 and served.content, asset
            assert (await api.get("/static/../app.py")).status_code == 404
            assert (await api.get("/integrations/nope")).status_code == 404
            # a form body that is not a small urlencoded form is refused before anything runs
            many = "&".join(f"f{i}=x" for i in range(50))
            assert (await api.post("/integrations/hook/suspend", content=many, headers=FORM)).status_code == 400
            as_json = await api.post("/integrations/hook/suspend", json={"reason": "x"})
            assert as_json.status_code == 415
            assert p.reconciler.snapshot.overrides.get("hook") is None

    run(scenario)


def test_the_pages_are_not_in_the_api_document(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            paths = (await api.get("/api/openapi.json")).json()["paths"]
            for _, path in page_routes():
                assert path not in paths, path
            assert ("GET", "/") in page_routes()

    run(scenario)


def test_the_list_renders_the_api_view_and_filters(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            peer.script = lambda _seen: Reply(500, "no")
            await p.emit("user.registered", USER)
            await p.until(lambda: p.statuses("hook") == {"dead": 1})
            listed = (await api.get("/")).text
            row = listed.split('id="row-hook"')[1].split("</tr>")[0]
            view = (await api.get("/api/integrations/hook")).json()
            assert f"<code>{view['sourceFile']}:1</code>" in row  # the file, and the line its document starts at
            assert view["lastAppliedRevision"]["contentHash"][:10] in row
            assert "1 dead" in row and "1 sent, 0.0 % ok" in row
            one = (await api.get("/integrations/hook")).text
            assert '<rect class="failed"' in one  # the plot has the failed send's bar
            assert "description:" not in one.split('id="spec"')[1]  # unset fields are left out
            assert "failed" in row or "dead" in row  # the last attempt's outcome
            for condition in view["conditions"]:
                assert f"<b>{condition['type']}</b>={condition['status']}" in row
            assert 'id="row-hook"' in (await api.get("/", params={"type": "webhook"})).text
            assert 'id="row-hook"' not in (await api.get("/", params={"type": "database"})).text
            assert 'id="row-hook"' in (await api.get("/", params={"status": view["status"], "type": ""})).text
            bad = await api.get("/", params={"status": "sleepy"})
            assert bad.status_code == 400 and "filter by type" in bad.text

    run(scenario)


def test_a_refused_file_shows_its_line_and_column(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            (p.config / "broken.yaml").write_text(
                "apiVersion: cms.integrations/v1\nkind: Integration\nid: broken\nname: Broken\ntype: webhook\n"
                "config: {endpoint: http://127.0.0.1:9/x, allowPrivateNetwork: true}\nwebhooks: [{events: nope}]\n"
            )
            await p.reconciler.reconcile_once()
            page = (await api.get("/")).text
            section = page.split('id="refused-files"')[1].split("</section>")[0]
            assert re.search(r"broken\.yaml:\d+:\d+: ", section), section

    run(scenario)


def test_the_log_stream_of_the_page_is_the_api_stream(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            page = (await api.get("/integrations/hook")).text
            after = re.search(r'data-after="([^"]*)"', page)
            assert after is not None
            async with api.stream(
                "GET", "/integrations/hook/log", params={"follow": "true", "after": after.group(1)}
            ) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                await p.emit("user.registered", USER)
                seen = ""
                async for chunk in stream.aiter_text():
                    seen += chunk
                    if "event: attempt" in seen:
                        break
                assert "user.registered" in seen

    run(scenario)


def test_replay_from_the_page_queues_the_dead_delivery(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            peer.script = lambda _seen: Reply(500, "no")
            await p.emit("user.registered", USER)
            await p.until(lambda: p.statuses("hook") == {"dead": 1})
            peer.script = lambda _seen: Reply()
            page = (await api.get("/integrations/hook", params={"deliveries": "dead"})).text
            delivery = re.search(r'id="delivery-([^"]+)" data-status="dead"', page)
            assert delivery is not None
            replayed = await api.post(
                "/integrations/hook/replay", content=f"deliveryId={delivery.group(1)}", headers=FORM
            )
            assert replayed.status_code == 303
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            assert urlsplit(replayed.headers["location"]).path == "/integrations/hook"

    run(scenario)


def test_the_source_line_is_where_the_document_starts(tmp_path):
    first = "kind: Integration\nid: one\n"
    text = "# two integrations in one file\n" + first + "---\nkind: Integration\nid: two\n"
    (tmp_path / "two.yaml").write_text(text)
    digest = content_hash(text.encode())
    assert document_line(tmp_path, "two.yaml", 0, digest) == 2
    assert document_line(tmp_path, "two.yaml", 1, digest) == 5
    # the file changed since the revision: no line rather than a wrong one
    assert document_line(tmp_path, "two.yaml", 1, "sha256:" + "0" * 64) is None
    assert document_line(tmp_path, None, 0, digest) is None


def test_test_and_replay_since_from_the_page(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            tested = await api.post("/integrations/hook/test", content="message=from+the+page", headers=FORM)
            assert tested.status_code == 303
            [seen] = peer.requests("/hook")
            assert seen.json()["data"] == {"integrationId": "hook", "message": "from the page"}
            flash = (await api.get("/integrations/hook", headers={"cookie": tested.headers["set-cookie"]})).text
            assert "Test: delivered (HTTP 200" in flash
            peer.script = lambda _seen: Reply(500, "no")
            for _ in range(2):
                await p.emit("user.registered", USER)
            await p.until(lambda: p.statuses("hook") == {"dead": 2})
            peer.script = lambda _seen: Reply()
            # what the replay route refuses, the page says, and nothing is queued
            refused = await api.post("/integrations/hook/replay", content="since=yesterday-ish", headers=FORM)
            page = (await api.get("/integrations/hook", headers={"cookie": refused.headers["set-cookie"]})).text
            assert "neither an RFC 3339 time" in page and p.statuses("hook") == {"dead": 2}
            replayed = await api.post("/integrations/hook/replay", content="since=1h", headers=FORM)
            assert replayed.status_code == 303
            await p.until(lambda: p.statuses("hook") == {"delivered": 2})
            audit = (await api.get("/api/integrations/hook")).json()["auditTrail"]
            assert any(entry["action"] == "replay" and entry["actor"] == "admin (status page)" for entry in audit)

    run(scenario)


def test_run_public_status_opens_reading_only(tmp_path):
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "export.yaml").write_text(EXPORT)
    daemon = Daemon(tmp_path, "--public-status", env={"ADMIN_SECRET": DAEMON_SECRET})
    try:
        daemon.wait_ready()
        page = httpx.get(daemon.url + "/", timeout=10)
        assert page.status_code == 200 and 'id="row-export"' in page.text
        acting = httpx.post(daemon.url + "/integrations/export/suspend", data={"reason": "x"}, timeout=10)
        assert acting.status_code == 401
        assert httpx.get(daemon.url + "/api/integrations", timeout=10).status_code == 401  # the API is not opened
    finally:
        daemon.stop()


def test_a_version_waiting_for_secrets_shows_beside_the_applied_one(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            waiting = hook(peer).replace(
                "allowPrivateNetwork: true", "allowPrivateNetwork: true\n  signingSecret: ${env:NOT_SET_HERE}"
            )
            (p.config / "hook.yaml").write_text(waiting)
            await p.reconciler.reconcile_once()
            page = (await api.get("/integrations/hook")).text
            declared = page.split('id="spec"')[1].split("</pre>")[0]
            applied = page.split('id="applied-spec"')[1].split("</pre>")[0]
            assert "${env:NOT_SET_HERE}" in declared  # a reference, never a value
            assert "signingSecret" not in applied

    run(scenario)


def test_the_api_reference_renders_every_operation_and_schema_of_the_document(tmp_path, peer):
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            document = (await api.get("/api/openapi.json")).json()
            answer = await api.get("/api/docs", headers=ANONYMOUS)  # open, like the document it renders
            assert answer.status_code == 200, answer.text
            html = answer.text
            for path, item in document["paths"].items():
                for method, operation in item.items():
                    anchor = operation_anchor(method, path)
                    found = re.search(rf'<details class="op" id="{anchor}" data-method="{method}"[^>]*>', html)
                    assert found, f"{method} {path} is not on the page"
                    admin = bool(operation.get("security"))
                    assert ("data-admin" in found.group(0)) == admin, f"{method} {path}: admin marking"
            for name in document["components"]["schemas"]:
                assert f'id="schema-{name}"' in html, name
            ids = set(re.findall(r'\sid="([^"]+)"', html))
            broken = {link for link in re.findall(r'href="#([^"]+)"', html) if link not in ids}
            assert not broken, f"links to nothing on the page: {broken}"
            # a request body starts from an example of its schema; curl lines keep the secret a variable
            trigger = html.split(f'id="{operation_anchor("post", "/api/integrations/webhooks/trigger")}"')[1]
            assert "&#34;event&#34;" in trigger.split("</textarea>")[0]
            assert "-H &#34;x-admin-secret: $ADMIN_SECRET&#34;" in trigger.split("</pre>")[0]
            by_admin = await api.get("/api/docs")
            assert SECRET not in by_admin.text and "Sign out" not in by_admin.text

    run(scenario)


def test_the_api_reference_describes_schemas_in_one_line():
    schema = {
        "oneOf": [
            {"$ref": "#/components/schemas/Problem"},
            {"type": "array", "items": {"type": "string", "format": "date-time"}},
            {"enum": ["a", "<b>"]},
        ]
    }
    assert str(type_html(schema)) == (
        '<a href="#schema-Problem">Problem</a> | array of string (date-time) | '
        "<code>&#34;a&#34;</code> | <code>&#34;&lt;b&gt;&#34;</code>"
    )
    shape = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}}
    assert example(shape, {}) == {"n": 0}
    assert example({"$ref": "#/components/schemas/X"}, {"X": {"type": "array", "items": shape}}) == [{"n": 0}]
