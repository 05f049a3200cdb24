"""Built-in body templates give what each service requires; inline templates are sandboxed."""

from __future__ import annotations

import json

import pytest

from reconciler.events.catalog import BUILTIN_EVENT_TYPES, sample_envelope
from reconciler.events.templates import (
    DISCORD_CONTENT_MAX_CHARS,
    TemplateProblem,
    compile_template,
    render_context,
)

SAMPLES = [sample_envelope(e) for e in BUILTIN_EVENT_TYPES.values()]
INTEGRATION = {"id": "x", "name": "X"}


def render(template, envelopes):
    return compile_template(template).render(render_context(envelopes, INTEGRATION))


@pytest.mark.parametrize("envelope", SAMPLES, ids=lambda e: e["event"])
def test_slack_body_has_text(envelope):
    body = render("slack", [envelope])
    assert isinstance(body["text"], str) and body["text"].strip()
    assert "?" not in body["text"], "every catalog example fills its summary"


def test_slack_batch_has_one_line_per_event():
    body = render("slack", SAMPLES[:3])
    assert len(body["text"].splitlines()) == 3


@pytest.mark.parametrize("envelope", SAMPLES, ids=lambda e: e["event"])
def test_teams_body_is_a_message_with_an_adaptive_card(envelope):
    body = render("teams", [envelope])
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert all(block["type"] in {"TextBlock", "FactSet"} for block in card["body"])
    facts = card["body"][2]["facts"]
    assert facts and all(set(f) == {"title", "value"} and isinstance(f["value"], str) for f in facts)


@pytest.mark.parametrize("envelope", SAMPLES, ids=lambda e: e["event"])
def test_discord_body_has_content_within_its_limit(envelope):
    body = render("discord", [envelope])
    assert 0 < len(body["content"]) <= DISCORD_CONTENT_MAX_CHARS
    assert body["allowed_mentions"] == {"parse": []}, "events never ping @everyone"


def test_discord_content_is_truncated_to_the_limit():
    long = {**SAMPLES[9], "data": {"message": "x" * 5000}}
    assert len(render("discord", [long])["content"]) <= DISCORD_CONTENT_MAX_CHARS


def test_sheets_body_is_a_value_range_with_one_row_per_event():
    body = render("sheets", SAMPLES[:4])
    assert body["majorDimension"] == "ROWS"
    assert len(body["values"]) == 4
    for row, envelope in zip(body["values"], SAMPLES[:4], strict=True):
        assert row[:3] == [envelope["timestamp"], envelope["event"], envelope["id"]]
        assert json.loads(row[3]) == envelope["data"]
        assert all(isinstance(cell, str) for cell in row)


def test_single_expression_keeps_its_type_and_mixed_text_is_a_string():
    body = render(
        {
            "id": "{{ data.userId }}",
            "who": "user {{ data.userId }}",
            "list": "{{ events | length }}",
            "fixed": [1, True, None],
        },
        [SAMPLES[0]],
    )
    assert body == {"id": 123, "who": "user 123", "list": 1, "fixed": [1, True, None]}


def test_missing_field_renders_as_null_or_empty():
    assert render({"a": "{{ data.nothing.deeper }}", "b": "x{{ data.nothing }}"}, [SAMPLES[0]]) == {"a": None, "b": "x"}


def test_data_with_quotes_and_newlines_cannot_break_out_of_its_string():
    """A naive template would paste this into JSON text and produce an extra field."""
    envelope = {**SAMPLES[0], "data": {"name": 'x", "admin": true, "y": "', "email": "e"}}
    body = render({"text": "Hello {{ data.name }}"}, [envelope])
    assert body == {"text": 'Hello x", "admin": true, "y": "'}


def test_sandbox_refuses_unsafe_attribute_access():
    with pytest.raises(TemplateProblem, match="unsafe"):
        render({"x": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}, [SAMPLES[0]])


def test_sandbox_is_immutable():
    with pytest.raises(TemplateProblem, match="unsafe"):
        render({"x": "{{ data.update({'a': 1}) }}"}, [SAMPLES[0]])


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(TemplateProblem, match="discord, sheets, slack, teams"):
        compile_template("slak")
