"""Docs that cannot drift: every field, event type, template and command is documented."""

from __future__ import annotations

import re

import pytest

from reconciler.cli.main import _parser
from reconciler.events.catalog import BUILTIN_EVENT_TYPES
from reconciler.events.templates import BUILTIN_TEMPLATES
from reconciler.manifests import models
from reconciler.manifests.scaffold import scaffolds
from tests.api_server import app_routes, bare_app
from tests.conftest import ROOT

FILE_FORMAT = (ROOT / "docs" / "file-format.md").read_text()
README = (ROOT / "README.md").read_text()
DOCUMENTED_MODELS = [
    models.ApiIntegration,
    models.WebhookIntegration,
    models.DatabaseIntegration,
    models.FileIntegration,
    models.HttpConfig,
    models.DatabaseConfig,
    models.FileConfig,
    models.ApiKeyAuth,
    models.BearerAuth,
    models.BasicAuth,
    models.OAuth2Auth,
    models.RateLimit,
    models.Retry,
    models.Subscription,
    models.Receive,
    models.VerifyConfig,
    models.EventTypeDecl,
]


@pytest.mark.parametrize("model", DOCUMENTED_MODELS, ids=lambda m: m.__name__)
def test_every_field_is_in_the_file_format_doc(model):
    for name, info in model.model_fields.items():
        assert f"`{info.alias or name}`" in FILE_FORMAT, f"{model.__name__}.{name} is not in docs/file-format.md"


def test_every_event_type_is_in_the_file_format_doc():
    for name in BUILTIN_EVENT_TYPES:
        assert f"`{name}`" in FILE_FORMAT, name


def test_every_builtin_template_is_documented():
    templates = (ROOT / "docs" / "templates.md").read_text()
    for name in BUILTIN_TEMPLATES:
        assert f"`{name}`" in templates, name


def test_every_scaffold_and_command_is_in_the_readme():
    for name in scaffolds():
        assert f"`{name}`" in README, f"scaffold {name} is not in README.md"
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in commands:
        assert re.search(rf"reconciler {command}\b", README), f"command {command} is not in README.md"


@pytest.mark.parametrize("path", sorted({path for _, path in app_routes()}))
def test_every_route_is_in_the_readme(path):
    # The whole path, not as the start of a longer one; or, as the README's table writes a sibling
    # of the path before it (`POST /api/integrations/{id}/deactivate`, `/activate`), its last segment.
    whole = re.search(re.escape(path) + r"(?![\w/{.-])", README)
    sibling = f"`/{path.rsplit('/', 1)[-1]}`" in README
    assert whole or sibling, f"{path} is not in README.md"


def test_every_endpoint_says_what_it_does():
    for route in bare_app().routes:
        assert (route.endpoint.__doc__ or "").strip(), f"the endpoint of {route.path} has no docstring"


def test_readme_first_screen_gives_the_two_setup_commands():
    first_screen = "\n".join(README.splitlines()[:40])
    assert "make run" in first_screen and "make test" in first_screen


# the integration guide's routes (`:id` written `{id}` here), each with its place in docs/migrating.md
GUIDE_ROUTES = [
    ("GET", "/api/integrations"),
    ("POST", "/api/integrations"),
    ("GET", "/api/integrations/{id}"),
    ("PUT", "/api/integrations/{id}"),
    ("DELETE", "/api/integrations/{id}"),
    ("POST", "/api/integrations/{id}/activate"),
    ("POST", "/api/integrations/{id}/deactivate"),
    ("POST", "/api/integrations/{id}/test"),
    ("GET", "/api/integrations/{id}/logs"),
    ("POST", "/api/integrations/{id}/webhooks"),
    ("POST", "/api/integrations/webhooks/trigger"),
    ("POST", "/api/integrations/webhook/receive/{secret}"),
    ("GET", "/api/integrations/templates"),
    ("GET", "/api/integrations/health/status"),
]
MIGRATING = (ROOT / "docs" / "migrating.md").read_text()


def test_the_migration_guide_maps_every_route_of_the_integration_guide():
    served = set(app_routes())
    for method, path in GUIDE_ROUTES:
        assert (method, path) in served, f"{method} {path} of the integration guide is not served"
        guide_form = re.sub(r"\{(\w+)\}", r":\1", path)
        assert f"`{method} {guide_form}`" in MIGRATING or f"`{guide_form}`" in MIGRATING, (
            f"docs/migrating.md does not map {method} {guide_form}"
        )


def test_the_migration_guide_names_only_commands_that_exist():
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    named = set(re.findall(r"`reconciler ([a-z-]+)", MIGRATING))
    assert named, "docs/migrating.md names no command"
    assert named <= set(commands), f"docs/migrating.md names commands that do not exist: {named - set(commands)}"


def test_the_docs_say_which_routes_are_open_as_the_app_serves_them():
    """The routes that answer without the admin secret (tests/api_server.OPEN_ROUTES, which the API
    tests hold the app to) are the ones the README and the security document name as open."""
    from tests.api_server import OPEN_ROUTES

    sentence = re.search(r"Everything but (.*?) needs the admin secret", README, re.S)
    assert sentence, "README.md says which routes need the admin secret"
    security = (ROOT / "docs" / "security.md").read_text()
    said = " ".join(sentence.group(1).split())
    for _, path in OPEN_ROUTES:
        named = (
            path in said
            or {
                "/healthz": "probes",
                "/readyz": "probes",
                "/api/openapi.json": "the API's description",
                "/api/integrations/webhook/receive/{secret}": "inbound receipt",
            }.get(path, path)
            in said
        )
        assert named, f"README.md does not say {path} is open"
    assert "/api/openapi.json" in security and "open" in security
