"""`reconciler validate`'s checks: each bad input gives one located diagnostic with a hint."""

from __future__ import annotations

import pytest

from tests.conftest import HEADER, only

VALID_API = (
    HEADER
    + """\
name: SIS
type: api
authType: api_key
authConfig:
  header: X-API-Key
  key: ${env:SIS_API_KEY}
config:
  endpoint: https://sis.example.edu/api/students
webhooks:
  - events: [user.registered]
"""
)


def test_valid_file_has_no_diagnostics(write, validate):
    write("sis.yaml", VALID_API)
    result = validate()
    assert result.diagnostics == []
    assert [i.spec.id for i in result.integrations] == ["sis"]  # defaulted from the file name


# --- envelope -------------------------------------------------------------------------------


def test_unknown_api_version(write, validate):
    write("a.yaml", "apiVersion: cms.integrations/v2\nkind: Integration\nname: A\ntype: api\n")
    assert only(validate())[1:] == (1, 13, "unknown apiVersion 'cms.integrations/v2'")


def test_missing_api_version_points_at_the_document(write, validate):
    write("a.yaml", "kind: Integration\nname: A\ntype: api\n")
    assert only(validate())[1:] == (1, 1, "missing apiVersion")


def test_unknown_kind_suggests_the_right_one(write, validate):
    write("a.yaml", "apiVersion: cms.integrations/v1\nkind: Integraton\nname: A\n")
    result = validate()
    assert only(result)[1:3] == (2, 7)
    assert result.diagnostics[0].hint == "did you mean 'Integration'?"


def test_unknown_type_suggests_the_right_one(write, validate):
    write("a.yaml", HEADER + "name: A\ntype: webhok\n")
    result = validate()
    assert only(result)[1:] == (4, 7, "unknown type 'webhok'")
    assert result.diagnostics[0].hint == "did you mean 'webhook'?"


def test_unknown_field_is_reported_at_its_key_with_did_you_mean(write, validate):
    write("a.yaml", VALID_API.replace("config:\n", "config:\n  tmeout: 5s\n"))
    result = validate()
    assert only(result)[1:] == (10, 3, "unknown field 'tmeout' in config")
    assert result.diagnostics[0].hint == "did you mean 'timeout'?"
    assert result.diagnostics[0].pointer == "/config/tmeout"


def test_top_level_field_in_the_wrong_place_says_where_it_belongs(write, validate):
    write("a.yaml", VALID_API + "endpoint: https://x.example.org\n")
    result = validate()
    assert only(result)[1] == 13
    assert "config.endpoint" in result.diagnostics[0].hint


def test_missing_required_field_points_at_the_parent_key(write, validate):
    write("a.yaml", HEADER + "name: DB\ntype: database\nconfig:\n  url: sqlite:///x.db\n")
    result = validate()
    assert only(result)[1:] == (5, 1, "missing required field config.table")


# --- ids --------------------------------------------------------------------------------------


def test_invalid_id(write, validate):
    write("a.yaml", VALID_API.replace("name: SIS", "id: Bad_Id\nname: SIS"))
    assert only(validate())[1:] == (3, 5, "id 'Bad_Id' is not a valid id")


def test_reserved_id(write, validate):
    write("a.yaml", VALID_API.replace("name: SIS", "id: health\nname: SIS"))
    assert "reserved" in only(validate())[3]


def test_file_name_that_is_not_an_id_needs_an_explicit_id(write, validate):
    write("My Integration.yaml", VALID_API)
    file, line, _, message = only(validate())
    assert (file, line) == ("My Integration.yaml", 1)
    assert "not a valid id" in message


def test_multi_document_file_needs_ids(write, validate):
    write("two.yaml", VALID_API.replace("name: SIS", "id: one\nname: SIS") + "---\n" + VALID_API)
    assert only(validate())[1:] == (15, 1, "document 2 has no id")


def test_duplicate_id_across_files_is_reported_in_both(write, validate):
    write("a.yaml", VALID_API.replace("name: SIS", "id: same\nname: SIS"))
    write("b.yaml", VALID_API.replace("name: SIS", "id: same\nname: SIS"))
    result = validate()
    assert sorted((d.file, d.line, d.code) for d in result.diagnostics) == [
        ("a.yaml", 3, "duplicate-id"),
        ("b.yaml", 3, "duplicate-id"),
    ]
    assert "b.yaml:3:5" in next(d for d in result.diagnostics if d.file == "a.yaml").message


def test_id_defaulted_from_a_file_name_collides_with_a_declared_id(write, validate):
    write("sis.yaml", VALID_API)
    write("other.yaml", VALID_API.replace("name: SIS", "id: sis\nname: SIS"))
    assert {d.code for d in validate().diagnostics} == {"duplicate-id"}


# --- secrets ----------------------------------------------------------------------------------


def test_literal_credential_in_auth_config_is_refused_without_echoing_it(write, validate):
    write("a.yaml", VALID_API.replace("${env:SIS_API_KEY}", "sk_live_abc123"))
    result = validate()
    assert only(result)[1:3] == (8, 8)
    assert "literal" in result.diagnostics[0].message
    assert "sk_live_abc123" not in result.diagnostics[0].as_text()


@pytest.mark.parametrize(
    "reference, fragment",
    [
        ("${env:}", "does not name an environment variable"),
        ("${env:1ABC}", "does not name an environment variable"),
        ("${vault:secret/x}", "unknown scheme 'vault'"),
        ("${file:relative/path}", "not an absolute file path"),
        ("${env:UNTERMINATED", "unterminated"),
    ],
)
def test_malformed_secret_reference(write, validate, reference, fragment):
    write("a.yaml", VALID_API.replace("${env:SIS_API_KEY}", f"'{reference}'"))
    result = validate()
    messages = [d.message for d in result.diagnostics if d.line == 8]
    assert any(fragment in m for m in messages), [d.as_text() for d in result.diagnostics]


def test_secret_reference_inside_a_comment_is_not_read(write, validate):
    write("a.yaml", VALID_API + "# old key: ${vault:nope}\n")
    assert validate().diagnostics == []


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("https://user:hunter2@sis.example.edu/api", "literal password"),
        ("https://ghp_TOKEN123@sis.example.edu/api", "literal credential as its user name"),
        ("https://hooks.slack.com/services/T0/B0/abc123", "whose path is itself the credential"),
        ("https://sis.example.edu/api?api_key=abc123", "query parameter 'api_key'"),
        ("https://sis.example.edu/api?token=abc", "query parameter 'token'"),
    ],
)
def test_credentials_in_urls_are_refused(write, validate, url, fragment):
    write("a.yaml", VALID_API.replace("https://sis.example.edu/api/students", url))
    file, line, column, message = only(validate())
    assert (line, column) == (10, 13)
    assert fragment in message
    assert "hunter2" not in message and "abc123" not in message


def test_references_in_urls_are_accepted(write, validate):
    write(
        "a.yaml",
        VALID_API.replace(
            "https://sis.example.edu/api/students", "https://bot:${env:SIS_PASSWORD}@sis.example.edu/${env:SIS_PATH}"
        ),
    )
    assert validate().diagnostics == []


def test_a_reference_in_a_url_query_is_refused(write, validate):
    """A query string is logged and proxied, and the test endpoint would send what it names."""
    write("a.yaml", VALID_API.replace("/api/students", "/x?a=${env:ADMIN_SECRET}&e=${file:/proc/self/environ}"))
    file, line, _, message = only(validate())
    assert line == 10 and "config.endpoint has a secret reference in its query string" in message


def test_literal_authorization_header_is_refused(write, validate):
    write("a.yaml", VALID_API.replace("config:\n", "config:\n  headers:\n    Authorization: Bearer abc\n"))
    assert "literal credential" in only(validate())[3]


def test_check_env_requires_references_to_resolve(write, validate, tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text("k3y\n")
    write("a.yaml", VALID_API.replace("${env:SIS_API_KEY}", f"${{file:{secret_file}}}"))
    assert validate(check_env=True).diagnostics == []
    write("a.yaml", VALID_API)
    assert validate().diagnostics == []
    result = validate(check_env=True, environ={})
    assert only(result)[1:] == (8, 8, "environment variable SIS_API_KEY is not set (referenced as ${env:SIS_API_KEY})")
    assert validate(check_env=True, environ={"SIS_API_KEY": "x"}).diagnostics == []


def test_check_env_checks_a_url_that_was_a_whole_reference(write, validate):
    write("a.yaml", VALID_API.replace("https://sis.example.edu/api/students", "${env:SIS_URL}"))
    result = validate(check_env=True, environ={"SIS_API_KEY": "x", "SIS_URL": "http://sis.example.edu/x"})
    assert "plain http://" in only(result)[3]


# --- URLs -------------------------------------------------------------------------------------


def test_plain_http_to_a_remote_host_needs_an_opt_in(write, validate):
    write("a.yaml", VALID_API.replace("https://sis.example.edu", "http://sis.example.edu"))
    assert only(validate())[1:3] == (10, 13)
    write(
        "a.yaml",
        VALID_API.replace("https://sis.example.edu", "http://sis.example.edu").replace(
            "config:\n", "config:\n  allowInsecureHttp: true\n"
        ),
    )
    assert validate().diagnostics == []


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1", "127.1.2.3:9000", "[::1]:80"])
def test_plain_http_to_a_local_host_is_allowed(write, validate, host):
    # a local host is loopback: allowPrivateNetwork lets it be reached, plain http needs no more
    local = VALID_API.replace("https://sis.example.edu", f"http://{host}")
    write("a.yaml", local.replace("config:\n", "config:\n  allowPrivateNetwork: true\n"))
    assert validate().diagnostics == []
    write("a.yaml", local)
    [refused] = validate().diagnostics
    assert "loopback" in refused.message and "allowPrivateNetwork: true" in refused.hint


def test_unreplaced_placeholder_is_refused(write, validate):
    write("a.yaml", VALID_API.replace("/api/students", "/sheets/{spreadsheetId}/values"))
    assert only(validate())[3] == "config.endpoint contains the unreplaced placeholder {spreadsheetId}"


def test_api_integration_needs_an_endpoint(write, validate):
    write("a.yaml", VALID_API.replace("  endpoint: https://sis.example.edu/api/students\n", "  method: POST\n"))
    assert only(validate())[3] == "config.endpoint is required for type api"


# --- durations and frequencies ----------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("  timeout: 10\n", "config.timeout: 10 is not a duration"),
        ("  timeout: 10 seconds\n", "config.timeout: '10 seconds' is not a duration"),
        ("  timeout: 1h\n", "timeout 1h is out of range"),
        ("  batchDelay: -1\n", "config.batchDelay: input should be greater than or equal to 0, got -1"),
        ("  batchSize: 0\n", "config.batchSize: input should be greater than or equal to 1, got 0"),
    ],
)
def test_bad_config_numbers(write, validate, line, expected):
    write("a.yaml", VALID_API.replace("config:\n", "config:\n" + line))
    assert only(validate())[1:] == (10, line.index(":") + 3 if line.split(":")[1].strip() else 0, expected)


def test_sync_frequency_bounds(write, validate):
    write("a.yaml", VALID_API + "syncFrequency: -5\n")
    assert only(validate())[1:3] == (13, 16)
    write("a.yaml", VALID_API + "syncFrequency: 99999999\n")
    assert "less than or equal" in only(validate())[3]
    write("a.yaml", VALID_API + "syncFrequency: '60'\n")
    assert only(validate())[1] == 13


def test_retry_schedule_is_checked(write, validate):
    write("a.yaml", VALID_API + "retry:\n  maxAttempts: 3\n  schedule: [0s, 5s, 30d]\n")
    assert only(validate())[1:] == (15, 22, "retry interval 30d is out of range")


# --- auth ---------------------------------------------------------------------------------------


def test_auth_config_follows_auth_type(write, validate):
    write("a.yaml", VALID_API.replace("authType: api_key", "authType: bearer"))
    result = validate()
    codes = sorted(d.message for d in result.diagnostics)
    assert "missing required field authConfig.token" in codes
    assert any(d.line == 7 and "unknown field 'header'" in d.message for d in result.diagnostics)


def test_auth_type_none_takes_no_auth_config(write, validate):
    write("a.yaml", VALID_API.replace("authType: api_key", "authType: none"))
    assert only(validate())[3] == "authType none takes no authConfig"


def test_auth_type_without_auth_config(write, validate):
    write("a.yaml", HEADER + "name: A\ntype: api\nauthType: bearer\nconfig: {endpoint: 'https://a.example.org'}\n")
    assert only(validate())[3] == "authType bearer needs authConfig"


def test_oauth2_grants_need_their_secrets(write, validate):
    write(
        "a.yaml",
        HEADER
        + """\
name: Sheets
type: api
authType: oauth2
authConfig:
  grantType: refresh_token
  tokenUrl: https://oauth2.example.org/token
  clientId: abc
  clientSecret: ${env:CLIENT_SECRET}
config: {endpoint: 'https://sheets.example.org/x'}
""",
    )
    assert only(validate())[3] == "the refresh_token grant needs refreshToken"


# --- subscriptions --------------------------------------------------------------------------


def test_unknown_event_type_suggests_the_closest(write, validate):
    write("a.yaml", VALID_API.replace("[user.registered]", "[user.registred]"))
    result = validate()
    assert only(result)[1:3] == (12, 14)
    assert result.diagnostics[0].hint == "did you mean 'user.registered'?"


def test_patterns_families_wildcards_and_custom_events_are_accepted(write, validate):
    write("a.yaml", VALID_API.replace("[user.registered]", "['grade.*', '*', custom.anything, 'custom.*']"))
    assert validate().diagnostics == []


def test_family_that_matches_nothing_is_refused(write, validate):
    write("a.yaml", VALID_API.replace("[user.registered]", "['grades.*']"))
    assert only(validate())[3] == "event pattern 'grades.*' matches no known event type"


def test_declared_event_type_can_be_subscribed(write, validate):
    write(
        "types.yaml",
        """\
        apiVersion: cms.integrations/v1
        kind: EventType
        name: attendance.recorded
        schema: {type: object, required: [studentId]}
        example: {studentId: s1}
        """,
    )
    write("a.yaml", VALID_API.replace("[user.registered]", "[attendance.recorded]"))
    assert validate().diagnostics == []


def test_event_type_with_an_invalid_schema(write, validate):
    write(
        "types.yaml", HEADER.replace("Integration", "EventType") + "name: attendance.recorded\nschema: {type: objekt}\n"
    )
    write("a.yaml", VALID_API)
    assert only(validate())[1:3] == (4, 9)


def test_event_type_example_must_match_its_schema(write, validate):
    write(
        "types.yaml",
        HEADER.replace("Integration", "EventType")
        + "name: attendance.recorded\nschema: {type: object, required: [studentId]}\nexample: {}\n",
    )
    write("a.yaml", VALID_API)
    assert "does not match the schema" in only(validate())[3]


def test_event_type_may_not_redeclare_a_builtin(write, validate):
    write("types.yaml", HEADER.replace("Integration", "EventType") + "name: user.login\nschema: {}\n")
    write("a.yaml", VALID_API)
    assert only(validate())[3] == "event type user.login is built in"


def test_filter_that_does_not_compile(write, validate):
    write("a.yaml", VALID_API + "    filter: 'data.priority =='\n")
    file, line, column, message = only(validate())
    assert (line, column) == (13, 13)
    assert message.startswith("the filter does not compile: at column")


def test_filter_that_reads_an_unknown_variable(write, validate):
    write("a.yaml", VALID_API + "    filter: 'dta.priority == \"high\"'\n")
    file, line, column, message = only(validate())
    assert line == 13
    assert "sample user.registered event" in message and "dta" in message


def test_filter_must_return_a_bool(write, validate):
    write("a.yaml", VALID_API + "    filter: 'data.userId'\n")
    assert "not a bool" in only(validate())[3]


def test_filter_reading_an_optional_field_is_fine(write, validate):
    write("a.yaml", VALID_API + "    filter: 'data.role == \"student\"'\n")
    assert validate().diagnostics == []


def test_filter_nesting_comprehensions_three_deep_is_refused_at_its_line(write, validate):
    # each level multiplies the work by a list's length, in an evaluator that cannot be stopped
    nested = "[1, 2].all(a, [1, 2].exists(b, [1, 2].exists(c, a + b + c > 0)))"
    write("a.yaml", VALID_API + f"    filter: '{nested}'\n")
    file, line, column, message = only(validate())
    assert (file.endswith("a.yaml"), line, column) == (True, 13, 13)
    assert "over its cost budget" in message and "3 deep; the limit is 2" in message


def test_filter_with_too_many_comprehensions_is_refused(write, validate):
    many = " && ".join(["[1].exists(x, x == 1)"] * 9)
    write("a.yaml", VALID_API + f"    filter: '{many}'\n")
    assert "9 comprehensions; the limit is 8" in only(validate())[3]


def test_filter_nesting_two_comprehensions_is_within_budget(write, validate):
    write("a.yaml", VALID_API + '    filter: \'["a", ".all("].exists(a, [1].all(b, a != ""))\'\n')
    assert validate().diagnostics == []


# --- templates ------------------------------------------------------------------------------


def test_unknown_builtin_template(write, validate):
    write("a.yaml", VALID_API.replace("config:\n", "config:\n  template: slak\n"))
    assert only(validate())[1:3] == (10, 13)


def test_template_syntax_error_points_at_the_leaf(write, validate):
    write("a.yaml", VALID_API.replace("config:\n", "config:\n  template:\n    text: '{{ data.name '\n"))
    file, line, column, message = only(validate())
    assert (line, column) == (11, 11)
    assert message.startswith("template syntax error")


def test_template_reading_an_unknown_name(write, validate):
    write("a.yaml", VALID_API + "    template: {text: '{{ user.name }}'}\n")
    file, line, column, message = only(validate())
    assert (line, column) == (13, 22)
    assert "uses user" in message


def test_template_that_fails_on_a_sample_event(write, validate):
    write("a.yaml", VALID_API + "    template: {n: '{{ data.userId + \"x\" }}'}\n")
    assert "fails on a sample user.registered event" in only(validate())[3]


def test_inline_template_renders(write, validate):
    write("a.yaml", VALID_API + "    template: {text: 'Welcome {{ data.name }}', id: '{{ data.userId }}'}\n")
    assert validate().diagnostics == []


# --- inbound --------------------------------------------------------------------------------

INBOUND = (
    HEADER
    + """\
name: Partner
type: webhook
receive:
  secret: ${env:PARTNER_SECRET}
  verify: {scheme: github, secret: '${env:PARTNER_SIGNING}'}
  event: custom.partner.push
"""
)


def test_inbound_webhook_needs_no_endpoint(write, validate):
    write("p.yaml", INBOUND)
    assert validate().diagnostics == []


def test_inbound_secrets_are_unique(write, validate):
    write("p.yaml", INBOUND)
    write("q.yaml", INBOUND)
    assert {(d.file, d.line, d.code) for d in validate().diagnostics} == {
        ("p.yaml", 6, "duplicate-secret"),
        ("q.yaml", 6, "duplicate-secret"),
    }


def test_inbound_event_must_be_known(write, validate):
    write("p.yaml", INBOUND.replace("custom.partner.push", "partner.push"))
    assert only(validate())[1:3] == (8, 10)


def test_inbound_secret_must_be_a_reference(write, validate):
    write("p.yaml", INBOUND.replace("${env:PARTNER_SECRET}", "s3cret-path"))
    assert "literal" in only(validate())[3]


def test_receive_is_only_for_webhooks(write, validate):
    write("p.yaml", INBOUND.replace("type: webhook", "type: api\nconfig: {endpoint: 'https://a.example.org'}"))
    result = validate()
    assert result.diagnostics[0].hint == "receive: is for type webhook"


def test_unknown_verify_scheme(write, validate):
    write("p.yaml", INBOUND.replace("scheme: github", "scheme: githup"))
    result = validate()
    assert only(result)[1] == 7
    assert result.diagnostics[0].hint == "did you mean 'github'?"


# --- database and file ----------------------------------------------------------------------


def test_database_upsert_needs_a_key_among_the_columns(write, validate):
    write(
        "d.yaml",
        HEADER
        + """\
name: Reporting
type: database
config:
  url: postgresql://report@db.example.org/warehouse
  table: events
  mode: upsert
  mapping: {student: data.studentId, grade: data.grade}
  key: [event_id]
""",
    )
    assert "key column event_id" in only(validate())[3]


def test_file_path_parts_are_checked(write, validate):
    write(
        "f.yaml", HEADER + "name: Export\ntype: file\nconfig:\n  url: file://exports\n  path: '{evnt}/{date}.jsonl'\n"
    )
    assert only(validate())[3] == "path has unknown part {evnt}"


def test_literal_storage_credentials_are_refused(write, validate):
    write(
        "f.yaml",
        HEADER
        + "name: Export\ntype: file\nconfig:\n  url: s3://bucket/x\n  storageOptions: {key: AKIA123, secret: abc}\n",
    )
    assert "literal credential" in only(validate())[3]


# --- directories ----------------------------------------------------------------------------


def test_directory_with_no_integrations(tmp_path):
    from reconciler.manifests.validate import validate_paths

    (tmp_path / "README.md").write_text("nothing here")
    result = validate_paths([tmp_path])
    assert [d.code for d in result.diagnostics] == ["no-integrations"]


def test_all_errors_of_all_files_in_one_pass(write, validate):
    write(
        "a.yaml",
        VALID_API.replace("[user.registered]", "[user.registred]").replace("config:\n", "config:\n  tmeout: 5s\n"),
    )
    write("b.yaml", "name: [unclosed\n")
    write("c.yaml", b"\xff\xfe")
    result = validate()
    assert sorted((d.file, d.code) for d in result.diagnostics) == [
        ("a.yaml", "unknown-event"),
        ("a.yaml", "unknown-field"),
        ("b.yaml", "yaml"),
        ("c.yaml", "encoding"),
    ]


# --- adversarial input: a message, never a traceback or a hang ----------------------------------


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("type: [webhook]", "unknown type"),
        ("type: {a: 1}", "unknown type"),
    ],
)
def test_envelope_fields_of_the_wrong_type(write, validate, line, fragment):
    write("a.yaml", VALID_API.replace("type: api", line))
    assert fragment in only(validate())[3]


def test_non_string_credential_is_a_type_error(write, validate):
    write("a.yaml", VALID_API.replace("${env:SIS_API_KEY}", "12345"))
    assert only(validate())[3] == "authConfig.key: input should be a valid string"


def test_explicit_null_for_optional_credentials_is_fine(write, validate):
    write("a.yaml", VALID_API.replace("config:\n", "config:\n  signingSecret: null\n"))
    assert validate().diagnostics == []


def test_overlong_filter_is_refused_before_compiling(write, validate):
    write("a.yaml", VALID_API + "    filter: '" + " + ".join(["1"] * 40000) + " == 2'\n")
    assert "the limit is 2,000" in only(validate())[3]


@pytest.mark.parametrize(
    "schema, fragment",
    [
        ('{$ref: "https://example.invalid/x.json"}', "only #/... references are allowed"),
        ('{$ref: "file:///etc/passwd"}', "only #/... references are allowed"),
        ('{$ref: "#/$defs/nope"}', "a $ref does not resolve"),
        ('{type: object, properties: {a: {pattern: "(a+)+$"}}}', "exponential time"),
        ('{type: object, properties: {a: {pattern: "(unclosed"}}}', "is not a 'regex'"),
    ],
)
def test_event_type_schemas_that_would_fetch_hang_or_fail(write, validate, schema, fragment):
    write(
        "t.yaml",
        HEADER.replace("Integration", "EventType") + f"name: custom.a\nschema: {schema}\n"
        "example: {a: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!}\n",
    )
    write("a.yaml", VALID_API)
    assert fragment in only(validate())[3]


@pytest.mark.parametrize(
    "template, fragment",
    [
        ("{% for i in range(100000) %}{% endfor %}", "uses range"),
        ('{{ "x" * 3000000000 }}', "too large"),
        ('{{ "x".ljust(3000000000) }}', "larger than templates allow"),
        ('{{ "x" | center(3000000000) }}', "larger than templates allow"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
    ],
)
def test_templates_that_would_hang_or_exhaust_memory(write, validate, template, fragment):
    write("a.yaml", VALID_API + f"    template: {{text: '{template}'}}\n")
    assert fragment in only(validate())[3]


def test_template_nesting_four_loops_is_refused_at_its_line(write, validate):
    loops = "".join(f"{{% for {v} in events %}}" for v in "abcd") + "x" + "{% endfor %}" * 4
    write("a.yaml", VALID_API + f"    template: {{text: '{loops}'}}\n")
    file, line, column, message = only(validate())
    assert (file.endswith("a.yaml"), line, column) == (True, 13, 22)
    assert "loops nest 3 deep here; the limit is 2" in message


def test_template_loop_nesting_is_reported_at_its_line_in_the_template(write, validate):
    text = "|\n        {% for a in events %}\n        {% for b in events %}\n        {% for c in events %}x{% endfor %}"
    write("a.yaml", VALID_API + "    template:\n      text: " + text + "{% endfor %}{% endfor %}\n")
    message = only(validate())[3]
    assert "loops nest 3 deep" in message and "(line 3 of the template)" in message


def test_template_over_its_render_budget_on_the_sample_is_refused(write, validate):
    # two loops are within the static budget; a million iterations are not within the runtime one
    loops = '{% for a in "x" * 1000 %}{% for b in "x" * 1000 %}{% endfor %}{% endfor %}'
    write("a.yaml", VALID_API + f"    template: {{text: '{loops}'}}\n")
    file, line, column, message = only(validate())
    assert line == 13
    assert "over its render budget" in message and "200,000 steps" in message


LOOPING_MACRO = "{% macro m() %}{% for t in events %}x{% endfor %}{% endmacro %}"


@pytest.mark.parametrize(
    "template, fragment",
    [
        # a macro's loops count where it is called, through other macros too
        (LOOPING_MACRO + "{% for a in events %}{% for b in events %}{{ m() }}{% endfor %}{% endfor %}", "3 deep"),
        (
            LOOPING_MACRO + "{% macro n() %}{% for u in events %}{{ m() }}{% endfor %}{% endmacro %}"
            "{% for a in events %}{{ n() }}{% endfor %}",
            "counting the loops of n, called here",
        ),
        # a call block's body runs inside the macro's loops
        (
            "{% macro m() %}{% for t in events %}{{ caller() }}{% endfor %}{% endmacro %}"
            "{% for a in events %}{% call m() %}{% for b in events %}x{% endfor %}{% endcall %}{% endfor %}",
            "3 deep",
        ),
        # so does a block called again by self
        (
            "{% block b %}{% for t in events %}x{% endfor %}{% endblock %}"
            "{% for a in events %}{% for c in events %}{{ self.b() }}{% endfor %}{% endfor %}",
            "3 deep",
        ),
        (LOOPING_MACRO + "{% set f = m %}{{ f() }}", "may only be called by its name"),
        ("{% macro m(x) %}{% for t in x %}{{ m(t) }}{% endfor %}{% endmacro %}{{ m(events) }}", "calls itself"),
    ],
)
def test_template_macro_loops_count_where_they_are_called(write, validate, template, fragment):
    write("a.yaml", VALID_API + f"    template: {{text: '{template}'}}\n")
    assert fragment in only(validate())[3]


@pytest.mark.parametrize(
    "template",
    [
        LOOPING_MACRO + "{% for a in events %}{{ m() }}{% endfor %}{{ m() }}",
        "{% macro m(x) %}{{ x }}{% if x %}{{ m(x[1:]) }}{% endif %}{% endmacro %}{{ m(events) }}",
        "{% macro m() %}x{% endmacro %}{% set f = m %}{% for a in events %}{% for b in events %}{{ f() }}"
        "{% endfor %}{% endfor %}",
    ],
)
def test_template_macros_within_the_loop_budget_validate(write, validate, template):
    write("a.yaml", VALID_API + f"    template: {{text: '{template}'}}\n")
    assert validate().diagnostics == []


def test_dollar_brace_that_is_not_a_reference_is_text(write, validate):
    write("a.yaml", VALID_API + "    template: {text: 'Fee: ${{ data.userId }}'}\n")
    assert validate().diagnostics == []


def test_unterminated_reference_message_does_not_echo_what_follows(write, validate):
    write("a.yaml", VALID_API.replace("${env:SIS_API_KEY}", "'${env:SIS_KEY&password=hunter2'"))
    messages = [d.message for d in validate().diagnostics]
    assert any("unterminated secret reference '${env:SIS_KEY'" in m for m in messages)
    assert not any("hunter2" in m for m in messages)


def test_check_env_does_not_echo_resolved_secrets(write, validate):
    write("a.yaml", VALID_API.replace("https://sis.example.edu/api/students", "${env:SIS_URL}"))
    result = validate(check_env=True, environ={"SIS_API_KEY": "x", "SIS_URL": "s3cretvalue:zzz/{T0SECRET}"})
    text = " ".join(d.as_text() for d in result.diagnostics)
    assert result.diagnostics and "s3cretvalue" not in text and "T0SECRET" not in text


def test_a_directory_of_event_types_only_has_no_integrations(write, validate):
    write("t.yaml", HEADER.replace("Integration", "EventType") + "name: custom.a\nschema: {type: object}\n")
    assert [d.code for d in validate().diagnostics] == ["no-integrations"]
