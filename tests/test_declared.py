"""The guide's write routes over real HTTP: the 405 answers carry the declaring file edited in
place (comments, order, other documents and secret reference names kept), every field of the
guide's JSON in its place, what has no place reported, and a diff that applies."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifests.edit import TOP_LEVEL_ORDER, edit_document, merge
from reconciler.manifests.guide import translate_integration, translate_subscription
from reconciler.manifests.validate import validate_paths
from tests.api_server import serve
from tests.pipeline import Pipeline

SIS_FILE = """\
# yaml-language-server: $schema=../schemas/integration.schema.json
# The institution's student information system.
apiVersion: cms.integrations/v1
kind: Integration
id: student-information-system
name: Student Information System
type: api
authType: api_key
authConfig:
  header: X-API-Key
  key: ${env:SIS_API_KEY}   # rotated every term
config:
  endpoint: https://sis.example.edu/api/students
  method: POST
  timeout: 10s              # the SIS answers slowly at term start
  rateLimit: {perSecond: 5, concurrency: 2}
syncFrequency: 1800
webhooks:
  # grades go to the registry too
  - events: [user.registered, grade.published]
retry:
  maxAttempts: 8
  schedule: [0s, 5s, 5m, 30m, 2h]
"""

EVENT_TYPES = """\
apiVersion: cms.integrations/v1
kind: EventType
name: course.completed
description: A student completed a course.
schema: {type: object, required: [studentId]}
example: {studentId: IT2024001}
"""

CHAT_FILE = """\
# Two chat integrations in one file.
apiVersion: cms.integrations/v1
kind: Integration
id: team-chat
name: Team Chat
type: webhook
config:
  endpoint: ${env:TEAM_CHAT_URL}
  template: slack
webhooks:
  - events: [system.error]
---
# the second one: only grades
apiVersion: cms.integrations/v1
kind: Integration
id: grade-chat
name: Grade Chat
type: webhook
config:
  endpoint: ${env:GRADE_CHAT_URL}
  template: discord   # a channel webhook
webhooks:
  - events: ["grade.*"]
    filter: 'data.grade < 40'
"""

# The integration guide's SIS example as its API takes it: auth inside config, milliseconds,
# the event list, retry and rate limit beside config.
SIS_GUIDE_BODY: dict[str, Any] = {
    "name": "Student Information System",
    "type": "api",
    "config": {
        "baseUrl": "https://sis.example.edu/api",
        "auth": {"type": "api_key", "apiKey": "sk-live-abc123", "headerName": "X-API-Key"},
        "syncFrequency": 3600,
        "endpoints": {"students": "/students", "courses": "/courses"},
    },
    "webhooks": ["user.registered", "course.completed"],
    "retry": {"maxAttempts": 5, "backoff": "exponential", "initialDelay": 1000},
    "rateLimit": {"requestsPerMinute": 120, "concurrency": 4},
    "timeout": 30000,
}
SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
ENVIRON = {
    "SIS_API_KEY": "k",
    "TEAM_CHAT_URL": "https://chat.example.org/a",
    "GRADE_CHAT_URL": "https://chat.example.org/b",
}
FILES = {"sis.yaml": SIS_FILE, "event-types.yaml": EVENT_TYPES, "chat.yaml": CHAT_FILE}


def run(scenario: Callable[[Pipeline, Any], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        async with Pipeline(tmp_path, FILES, environ=ENVIRON) as p, serve(p) as api:
            await scenario(p, api)

    asyncio.run(main())


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line and "${" not in line.split("#")[0]]


def applied(tmp_path: Path, p: Pipeline, answer: dict[str, Any]) -> str:
    """The answer's diff applied by `git apply` to a copy of the config directory: the file it makes."""
    work = tmp_path / f"apply-{len(list(tmp_path.glob('apply-*')))}"
    shutil.copytree(p.config, work / p.config.name)
    (work / "change.diff").write_text(answer["diff"])
    subprocess.run(["git", "apply", "change.diff"], cwd=work, check=True, capture_output=True, timeout=60)
    committed = work / answer["file"]
    result = validate_paths([work / p.config.name])
    assert result.ok, [d.as_text() for d in result.diagnostics]  # committed beside the others, it validates
    return committed.read_text()


def test_the_guides_sis_put_keeps_the_file_and_maps_every_field(tmp_path):
    async def scenario(p: Pipeline, api: Any) -> None:
        answer = (await api.put("/api/integrations/student-information-system", json=SIS_GUIDE_BODY)).json()
        assert answer["status"] == 405 and answer["valid"] is True, answer["errors"]
        assert answer["file"] == "integrations.d/sis.yaml"
        text = answer["yaml"]
        assert "sk-live-abc123" not in json.dumps(answer)  # a credential sent is never echoed
        assert comments(text) == comments(SIS_FILE)  # every comment, in its order
        document = yaml.safe_load(text)
        original_order = list(yaml.safe_load(SIS_FILE))
        assert [k for k in document if k in original_order] == original_order
        # the secret reference keeps its name; the new key is set outside git, under that name
        assert document["authConfig"] == {"header": "X-API-Key", "key": "${env:SIS_API_KEY}"}
        assert answer["secretsToSet"] == [{"variable": "SIS_API_KEY", "field": "/authConfig/key"}]
        assert document["config"] == {
            "endpoint": "https://sis.example.edu/api/students",  # already a path under baseUrl
            "method": "POST",
            "timeout": "30s",  # the guide's milliseconds
            "rateLimit": {"perSecond": 2, "concurrency": 4},
        }
        assert "  rateLimit: {perSecond: 2, concurrency: 4}\n" in text  # flow style kept
        assert document["syncFrequency"] == 3600
        assert document["webhooks"] == [{"events": ["user.registered", "course.completed"]}]
        assert document["retry"] == {"maxAttempts": 5, "schedule": ["0s", "1s", "2s", "4s", "8s"]}
        assert [w["pointer"] for w in answer["warnings"]] == ["/config/endpoints"]
        assert answer["warnings"][0]["code"] == "not-mapped"
        assert applied(tmp_path, p, answer) == text
        assert (p.config / "sis.yaml").read_text() == SIS_FILE  # nothing was written

    run(scenario, tmp_path)


def test_a_partial_put_changes_only_what_it_sends(tmp_path):
    async def scenario(p: Pipeline, api: Any) -> None:
        answer = (await api.put("/api/integrations/student-information-system", json={"timeout": 20000})).json()
        assert answer["valid"] is True, answer["errors"]
        expected = SIS_FILE.replace("  timeout: 10s ", "  timeout: 20s ")
        assert answer["yaml"] == expected
        changed = [line for line in answer["diff"].splitlines() if line[:1] in "+-"]
        assert changed == [
            "--- a/integrations.d/sis.yaml",
            "+++ b/integrations.d/sis.yaml",
            "-  timeout: 10s              # the SIS answers slowly at term start",
            "+  timeout: 20s              # the SIS answers slowly at term start",
        ]
        assert applied(tmp_path, p, answer) == expected

        # the credential as the API shows it (redacted): unchanged, nothing to set
        redacted = {"authConfig": {"key": "***"}, "name": "Student Information System"}
        same = (await api.put("/api/integrations/student-information-system", json=redacted)).json()
        assert (same["yaml"], same["diff"], same["secretsToSet"]) == (SIS_FILE, "", [])

        # null removes a field (a JSON merge patch)
        removed = (await api.put("/api/integrations/student-information-system", json={"retry": None})).json()
        assert removed["yaml"] == SIS_FILE.split("retry:\n")[0]

    run(scenario, tmp_path)


def test_the_guides_slack_post_gets_the_slack_template_and_its_subscriptions(tmp_path):
    async def scenario(p: Pipeline, api: Any) -> None:
        body = {
            "name": "Slack Notifications",
            "type": "webhook",
            "config": {"url": SLACK_URL},
            "webhooks": ["course.completed", "grade.published"],
        }
        answer = (await api.post("/api/integrations", json=body)).json()
        assert answer["valid"] is True, answer["errors"]
        assert answer["file"] == "integrations.d/slack-notifications.yaml"
        assert SLACK_URL not in json.dumps(answer)  # the URL is the credential
        document = yaml.safe_load(answer["yaml"])
        assert document["config"] == {"endpoint": "${env:SLACK_NOTIFICATIONS_ENDPOINT}", "template": "slack"}
        assert document["webhooks"] == [{"events": ["course.completed", "grade.published"]}]
        assert answer["secretsToSet"] == [{"variable": "SLACK_NOTIFICATIONS_ENDPOINT", "field": "/config/endpoint"}]
        assert answer["warnings"] == []
        assert answer["diff"].startswith("--- /dev/null\n+++ b/integrations.d/slack-notifications.yaml\n")
        assert applied(tmp_path, p, answer) == answer["yaml"]

        # a file of that name exists (and declares something else): the new one gets its own;
        # a null in a new block removes nothing, so it is not written
        chat = {**body, "name": "Chat", "config": {"url": SLACK_URL, "headers": None}}
        answer = (await api.post("/api/integrations", json=chat)).json()
        assert answer["file"] == "integrations.d/chat-2.yaml" and "null" not in answer["yaml"]
        assert yaml.safe_load(answer["yaml"])["config"]["template"] == "slack"

        for url, template in (
            ("https://discord.com/api/webhooks/123/abc", "discord"),
            ("https://acme.webhook.office.com/webhookb2/abc", "teams"),
        ):
            chat = (await api.post("/api/integrations", json={**body, "name": template, "config": {"url": url}})).json()
            assert yaml.safe_load(chat["yaml"])["config"]["template"] == template

    run(scenario, tmp_path)


def test_adding_a_webhook_merges_into_the_files_subscriptions(tmp_path):
    async def scenario(p: Pipeline, api: Any) -> None:
        plain = {"events": ["grade.published", "module.created"]}
        answer = (await api.post("/api/integrations/student-information-system/webhooks", json=plain)).json()
        assert answer["valid"] is True, answer["errors"]
        assert answer["yaml"] == SIS_FILE.replace(
            "  - events: [user.registered, grade.published]",
            "  - events: [user.registered, grade.published, module.created]",
        )
        assert answer["warnings"] == []

        # the guide's body carries a URL: the integration's own is fine, another is reported
        filtered = {"event": "grade.published", "filter": "data.grade > 90", "url": "https://other.example.org/x"}
        answer = (await api.post("/api/integrations/student-information-system/webhooks", json=filtered)).json()
        assert yaml.safe_load(answer["yaml"])["webhooks"][-1] == {
            "events": ["grade.published"],
            "filter": "data.grade > 90",
        }
        assert [(w["code"], w["pointer"]) for w in answer["warnings"]] == [("not-mapped", "/url")]

        # the second document of a two-document file; the first stays byte for byte
        answer = (await api.post("/api/integrations/grade-chat/webhooks", json={"events": ["course.completed"]})).json()
        assert answer["valid"] is True, answer["errors"]
        first, second = CHAT_FILE.split("---\n")
        assert answer["yaml"].startswith(first + "---\n# the second one: only grades\n")
        assert "  template: discord   # a channel webhook\n" in answer["yaml"]
        assert list(yaml.safe_load_all(answer["yaml"]))[1]["webhooks"] == [
            {"events": ["grade.*"], "filter": "data.grade < 40"},
            {"events": ["course.completed"]},
        ]
        assert applied(tmp_path, p, answer) == answer["yaml"]

    run(scenario, tmp_path)


def test_what_has_no_place_in_the_file_format_is_reported_not_dropped(tmp_path):
    async def scenario(p: Pipeline, api: Any) -> None:
        body = {
            "owner": "registry",
            "config": {"auth": {"type": "api_key", "apiKey": "***", "region": "eu"}, "poolSize": 3},
            "retry": {"maxRetries": 2, "jitter": True},
            "webhooks": [{"events": ["user.registered"], "secret": "s3cr3t"}],
        }
        answer = (await api.put("/api/integrations/student-information-system", json=body)).json()
        assert sorted(w["pointer"] for w in answer["warnings"]) == [
            "/config/auth/region",
            "/config/poolSize",
            "/owner",
            "/retry/jitter",
            "/webhooks/0/secret",
        ]
        assert all(w["code"] == "not-mapped" and w["hint"] for w in answer["warnings"])
        assert "s3cr3t" not in answer["yaml"] and "poolSize" not in answer["yaml"]
        document = yaml.safe_load(answer["yaml"])
        assert document["retry"]["maxAttempts"] == 3  # two retries after the first attempt
        assert document["authConfig"]["key"] == "${env:SIS_API_KEY}"

    run(scenario, tmp_path)


def test_a_new_auth_type_or_type_replaces_its_block_rather_than_merging(tmp_path):
    async def scenario(p: Pipeline, api: Any) -> None:
        bearer = {"config": {"auth": {"type": "bearer", "token": "tok-123"}}}
        answer = (await api.put("/api/integrations/student-information-system", json=bearer)).json()
        assert answer["valid"] is True, answer["errors"]
        document = yaml.safe_load(answer["yaml"])
        assert (document["authType"], document["authConfig"]) == (
            "bearer",
            {"token": "${env:STUDENT_INFORMATION_SYSTEM_TOKEN}"},  # the old key's name was for another field
        )
        assert "tok-123" not in json.dumps(answer)

        discord = {"type": "webhook", "config": {"url": "https://discord.com/api/webhooks/1/abc"}}
        answer = (await api.put("/api/integrations/student-information-system", json=discord)).json()
        assert answer["valid"] is True, answer["errors"]
        document = yaml.safe_load(answer["yaml"])
        assert document["config"] == {"endpoint": "${env:STUDENT_INFORMATION_SYSTEM_ENDPOINT}", "template": "discord"}
        assert document["authConfig"]["key"] == "${env:SIS_API_KEY}"  # not sent: kept

    run(scenario, tmp_path)


def test_the_guides_retry_and_rate_limit_spellings():
    def mapped(body: dict[str, Any]) -> dict[str, Any]:
        translation = translate_integration({"type": "api", **body})
        assert translation.unmapped == [], translation.unmapped
        return translation.changes

    fixed = mapped({"retry": {"maxRetries": 3, "retryDelay": 2000}})
    assert fixed["retry"] == {"maxAttempts": 4, "schedule": ["0s", "2s"]}
    assert mapped({"retry": {"attempts": 6, "backoff": "exponential", "initialDelay": 500, "maxDelay": 3000}})[
        "retry"
    ] == {"maxAttempts": 6, "schedule": ["0s", "500ms", "1s", "2s", "3s", "3s"]}
    assert mapped({"retry": {"delays": [1000, 60000, 3600000]}})["retry"] == {"schedule": ["0s", "1s", "1m", "1h"]}
    assert mapped({"rateLimit": {"requests": 10, "windowMs": 4000}})["config"] == {"rateLimit": {"perSecond": 2.5}}
    assert mapped({"rateLimit": {"perSecond": 3, "maxConcurrent": 1}})["config"] == {
        "rateLimit": {"perSecond": 3, "concurrency": 1}
    }
    assert mapped({"timeout": 1500})["config"] == {"timeout": "1500ms"}
    # given twice, differently: the file format's spelling is used, the other reported
    for body in ({"timeout": 1500, "config": {"timeout": "90s"}}, {"config": {"timeout": "90s"}, "timeout": 1500}):
        twice = translate_integration({"type": "api", **body})
        assert twice.changes["config"] == {"timeout": "90s"}
        [reported] = twice.unmapped
        assert (reported.pointer, reported.hint) == ("/timeout", "/config/timeout is given too; that value is used")
    same = translate_integration({"type": "api", "config": {"syncFrequency": 60}, "syncFrequency": 60})
    assert (same.changes, same.unmapped) == ({"type": "api", "config": {}, "syncFrequency": 60}, [])
    basic = mapped({"config": {"auth": {"type": "basic", "user": "svc", "password": "pw"}}})
    assert (basic["authType"], basic["authConfig"]) == ("basic", {"username": "svc", "password": "pw"})
    database = translate_integration({"type": "database", "rateLimit": {"perSecond": 1}, "timeout": 5000})
    assert database.changes == {"type": "database", "config": {"timeout": "5s"}}
    assert [u.pointer for u in database.unmapped] == ["/rateLimit"]  # a database has no rateLimit


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**400), st.floats(allow_nan=False), st.text(max_size=8)
)
_KEYS = st.sampled_from(
    [
        *("type", "config", "auth", "baseUrl", "url", "endpoint", "webhooks", "retry", "rateLimit", "timeout"),
        *("maxRetries", "initialDelay", "backoff", "multiplier", "maxDelay", "requests", "windowMs", "perSecond"),
        *("apiKey", "events", "event", "filter", "syncFrequency", "authType", "authConfig", "delays", "x"),
    ]
)
_BODIES = st.dictionaries(
    _KEYS,
    st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5)),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BODIES)
def test_any_json_body_translates_and_merges_without_an_exception(body):
    """What the routes take is any JSON object: the translation and the edit never raise (a 500)."""
    for current in ({}, yaml.safe_load(SIS_FILE)):
        for translation in (translate_integration(body, current), translate_subscription(body, current)):
            json.dumps([u.as_dict() for u in translation.unmapped])
            edited = edit_document(SIS_FILE, 0, lambda d, t=translation: merge(d, t.changes, TOP_LEVEL_ORDER))
            assert edited.startswith("# yaml-language-server:")  # the comments before the document stay
