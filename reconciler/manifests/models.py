"""The file format (DESIGN.md section 3) as pydantic models.

The integration guide's field names are kept (`authType`, `authConfig`, `syncFrequency`,
`batchSize`, ...), so the models use camelCase. `schemas/` is generated from these models;
checks of single values live here so that the API, the validator and the reconciler refuse
the same things with the same messages. Checks across documents live in `spec.checks`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reconciler.events.filters import FilterError, compile_filter
from reconciler.events.patterns import EVENT_NAME, PATTERN
from reconciler.manifests.durations import DURATION_PATTERN, parse_duration
from reconciler.manifests.fields import FieldProblem, check_url, problems_at, require_reference

API_VERSION = "cms.integrations/v1"
ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
RESERVED_IDS = frozenset({"templates", "health", "webhooks", "webhook"})
AuthType = Literal["none", "api_key", "bearer", "basic", "oauth2"]
MAX_SYNC_FREQUENCY_SECONDS = 30 * 86400
MAX_TIMEOUT_SECONDS = 300.0
MAX_RETRY_INTERVAL_SECONDS = 7 * 86400.0
MAX_TOLERANCE_SECONDS = 3600.0
MAX_BATCH_DELAY_MS = 3_600_000
SIZE_PATTERN = r"^\s*\d+\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$"
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_FACTOR = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
SQL_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
FIELD_PATH = r"^(id|event|timestamp|data)(\.[A-Za-z0-9_-]+)*$"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
DURATION_FIELD = Field(pattern=DURATION_PATTERN, json_schema_extra={"format": "duration-string"})

Duration = Annotated[str, DURATION_FIELD]
Template = Annotated[
    str | dict[str, Any] | list[Any],
    Field(
        description="a built-in template name (slack, teams, discord, sheets) or an inline "
        "JSON structure whose strings are Jinja2 templates"
    ),
]


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 64MB or 1GiB")
    return int(match.group(1)) * _SIZE_FACTOR[match.group(2)]


def _bounded_duration(value: str, what: str, low: float, high: float) -> str:
    seconds = parse_duration(value)
    if not low <= seconds <= high:
        raise FieldProblem(
            f"{what} {value} is out of range",
            f"use a value between {_human(low)} and {_human(high)}",
        )
    return value


def _human(seconds: float) -> str:
    from reconciler.manifests.durations import format_duration

    return "0s" if seconds == 0 else format_duration(seconds)


class Strict(BaseModel):
    """Unknown fields are errors (with a "did you mean" hint from the validator)."""

    # strict: a quoted "60" is a string, not a number; YAML's types are the file's types
    model_config = ConfigDict(extra="forbid", strict=True)


Credential = Annotated[
    str,
    Field(
        description="a secret reference: ${env:NAME} or ${file:/path}",
        pattern=r"^\s*\$\{(env:[A-Za-z_][A-Za-z0-9_]*|file:/[^}\s]+)\}\s*$",
    ),
]


def _credential(value: Any, info: ValidationInfo) -> Any:
    # Only strings can be literal credentials; anything else gets pydantic's type error.
    if not isinstance(value, str):
        return value
    return require_reference(value, info.field_name or "the value")


# --- auth ---------------------------------------------------------------------------------


class ApiKeyAuth(Strict):
    """`api_key`: the key goes in a header (default `X-API-Key`) or a query parameter."""

    header: str | None = Field(None, pattern=HEADER_NAME)
    query: str | None = Field(None, min_length=1)
    key: Credential

    _check_key = field_validator("key", mode="before")(_credential)

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if self.header and self.query:
            problems_at(
                "ApiKeyAuth",
                [(("query",), FieldProblem("give either header or query, not both", "remove one of them"))],
            )
        return self


class BearerAuth(Strict):
    """`bearer`: `Authorization: Bearer <token>`."""

    token: Credential
    _check_token = field_validator("token", mode="before")(_credential)


class BasicAuth(Strict):
    """`basic`: HTTP Basic authentication; the username may be literal, the password not."""

    username: str = Field(min_length=1)
    password: Credential
    _check_password = field_validator("password", mode="before")(_credential)


class OAuth2Auth(Strict):
    """`oauth2`: client credentials, or a refresh token; tokens are cached and renewed early."""

    grantType: Literal["client_credentials", "refresh_token"] = "client_credentials"
    tokenUrl: str
    clientId: str = Field(min_length=1)
    clientSecret: Credential | None = None
    refreshToken: Credential | None = None
    scope: str | list[str] | None = None
    audience: str | None = None
    clientAuthMethod: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"

    _check_secrets = field_validator("clientSecret", "refreshToken", mode="before")(_credential)

    @field_validator("tokenUrl")
    @classmethod
    def _token_url(cls, value: str) -> str:
        check_url(value, schemes=("https", "http"), what="tokenUrl")
        return value

    @model_validator(mode="after")
    def _grant_needs(self) -> OAuth2Auth:
        if self.grantType == "client_credentials" and self.clientSecret is None:
            problems_at(
                "OAuth2Auth",
                [
                    (
                        ("clientSecret",),
                        FieldProblem(
                            "the client_credentials grant needs clientSecret", "add clientSecret: ${env:NAME}"
                        ),
                    )
                ],
            )
        if self.grantType == "refresh_token" and self.refreshToken is None:
            problems_at(
                "OAuth2Auth",
                [
                    (
                        ("refreshToken",),
                        FieldProblem("the refresh_token grant needs refreshToken", "add refreshToken: ${env:NAME}"),
                    )
                ],
            )
        return self


AUTH_MODELS: dict[str, type[Strict]] = {
    "api_key": ApiKeyAuth,
    "bearer": BearerAuth,
    "basic": BasicAuth,
    "oauth2": OAuth2Auth,
}
AuthConfig = ApiKeyAuth | BearerAuth | BasicAuth | OAuth2Auth


# --- pieces shared by every type -----------------------------------------------------------


class RateLimit(Strict):
    """Outbound pacing per integration, to stay under a partner's limits."""

    perSecond: float | None = Field(None, gt=0, le=10_000)
    concurrency: int | None = Field(None, ge=1, le=1000)


RetryInterval = Annotated[
    Duration,
    AfterValidator(lambda v: _bounded_duration(v, "retry interval", 0, MAX_RETRY_INTERVAL_SECONDS)),
]


class Retry(Strict):
    """Per-integration retry override; the last interval repeats up to maxAttempts."""

    maxAttempts: int | None = Field(None, ge=1, le=100)
    schedule: list[RetryInterval] | None = Field(None, min_length=1, max_length=100)


class Subscription(Strict):
    """Events this integration receives: patterns, an optional CEL filter and template."""

    events: list[Annotated[str, Field(pattern=PATTERN.pattern)]] = Field(min_length=1)
    filter: str | None = Field(None, min_length=1, description="CEL expression over id, event, timestamp, data")
    template: Template | None = None

    @field_validator("filter")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_filter(value)
            except FilterError as exc:
                raise FieldProblem(
                    f"the filter does not compile: {exc}",
                    'CEL looks like: data.priority == "high" && event != "user.login"',
                ) from None
        return value


BatchSize = Annotated[int, Field(ge=1, le=10_000, description="events per request")]
BatchDelay = Annotated[int, Field(ge=0, le=MAX_BATCH_DELAY_MS, description="milliseconds between batch requests")]


# --- config per type ------------------------------------------------------------------------


class HttpConfig(Strict):
    """`config` of `api` and `webhook` integrations."""

    # The two opt-ins come first: the URL checks below read them (pydantic validates fields
    # in declaration order), so the URLs are checked in the same pass as every other field.
    allowPrivateNetwork: bool = False
    allowInsecureHttp: bool = False
    endpoint: str | None = Field(None, description="target URL; may hold secret references")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[Annotated[str, Field(pattern=HEADER_NAME)], str] = Field(default_factory=dict)
    timeout: Duration = "10s"
    template: Template | None = None
    batchSize: BatchSize = 1
    batchDelay: BatchDelay = 0
    syncEndpoint: str | None = None
    rateLimit: RateLimit | None = None
    signingSecret: Credential | None = None

    _check_signing = field_validator("signingSecret", mode="before")(_credential)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        return _bounded_duration(value, "timeout", 0.001, MAX_TIMEOUT_SECONDS)

    @field_validator("headers")
    @classmethod
    def _no_literal_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        from reconciler.manifests.fields import looks_like_credential_name
        from reconciler.manifests.secrets import has_reference

        for name, header in value.items():
            if (looks_like_credential_name(name) or name.lower() == "authorization") and not has_reference(header):
                raise FieldProblem(
                    f"header {name} carries a literal credential",
                    "use authType/authConfig, or write the header's value as ${env:NAME}",
                )
        return value

    @field_validator("endpoint", "syncEndpoint")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_url(
                value,
                schemes=("https", "http"),
                allow_insecure_http=bool(info.data.get("allowInsecureHttp")),
                what=f"config.{info.field_name}",
            )
        return value


class DatabaseConfig(Strict):
    """`config` of `database` integrations: SQLAlchemy Core writes one row per event."""

    url: str = Field(description="postgresql://, mysql://, mariadb:// or sqlite:/// URL; credentials by reference")
    table: str = Field(pattern=SQL_IDENTIFIER)
    tableSchema: str | None = Field(None, pattern=SQL_IDENTIFIER, description="database schema of the table")
    mode: Literal["append", "upsert"] = "append"
    key: list[Annotated[str, Field(pattern=SQL_IDENTIFIER)]] | None = Field(
        None,
        min_length=1,
        description="columns that identify a row: upsert updates it; append skips an event whose key is there",
    )
    mapping: dict[Annotated[str, Field(pattern=SQL_IDENTIFIER)], Annotated[str, Field(pattern=FIELD_PATH)]] | None = (
        Field(None, min_length=1, description="column -> event field (id, event, timestamp, data.x.y)")
    )
    createTable: bool = Field(False, description="create a missing table from the mapping (key as primary key)")
    timeout: Duration = Field("10s", description="connect and statement timeout of each write")
    batchSize: BatchSize = 1
    batchDelay: BatchDelay = 0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_url(value, schemes=DATABASE_SCHEMES, what="config.url")
        return value

    @field_validator("key", mode="before")
    @classmethod
    def _key_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _key_for_upsert(self) -> DatabaseConfig:
        columns = set(self.mapping) if self.mapping else {"event_id", "event", "timestamp", "data"}
        if self.mode == "upsert" and not self.key:
            problems_at(
                "DatabaseConfig",
                [
                    (
                        ("mode",),
                        FieldProblem(
                            "mode upsert needs key: the columns that identify a row",
                            "add key: [event_id] (or the mapped columns that identify a row)",
                        ),
                    )
                ],
            )
        mapping = self.mapping or {"event_id": "id", "event": "event", "timestamp": "timestamp", "data": "data"}
        seen: dict[str, str] = {}
        for column in mapping:
            if column.lower() in seen:
                problems_at(
                    "DatabaseConfig",
                    [
                        (
                            ("mapping", column),
                            FieldProblem(
                                f"column {column} is also mapped as {seen[column.lower()]}: databases compare "
                                "column names without regard to case",
                                "map each column once",
                            ),
                        )
                    ],
                )
            seen[column.lower()] = column
        whole = [k for k in self.key or [] if mapping.get(k) == "data"]
        if whole:
            problems_at(
                "DatabaseConfig",
                [
                    (
                        ("key",),
                        FieldProblem(
                            f"key column {whole[0]} holds the whole data object, which cannot identify a row",
                            "key on the event id (a column mapped from id) or on a field such as data.userId",
                        ),
                    )
                ],
            )
        missing = [k for k in self.key or [] if k not in columns]
        if missing:
            problems_at(
                "DatabaseConfig",
                [
                    (
                        ("key",),
                        FieldProblem(
                            f"key column {missing[0]} is not among the written columns ({', '.join(sorted(columns))})",
                            "add it to mapping, or name a mapped column",
                        ),
                    )
                ],
            )
        return self


DATABASE_SCHEMES = (
    "postgresql",
    "postgresql+psycopg",
    "postgres",
    "mysql",
    "mysql+pymysql",
    "mariadb",
    "mariadb+pymysql",
    "sqlite",
)


class FileConfig(Strict):
    """`config` of `file` integrations: events as JSONL or CSV objects in fsspec storage."""

    allowPrivateNetwork: bool = Field(
        False,
        description="lets attachment URLs (copyAttachments) and a storage endpoint_url reach loopback or "
        "private addresses",
    )
    url: str = Field(description="fsspec URL of the target: file://, s3://, gs://, ...")
    storageOptions: dict[str, Any] = Field(default_factory=dict)
    format: Literal["jsonl", "csv"] = "jsonl"
    path: str = Field(
        "{event}/{date}.jsonl",
        description="object name pattern: {event} {date} {year} {month} {day} {hour} {id} {integration}; "
        "the default ends in .csv for format csv",
    )
    rolloverSize: Annotated[str, Field(pattern=SIZE_PATTERN)] | int = "64MiB"
    mapping: dict[str, Annotated[str, Field(pattern=FIELD_PATH)]] | None = Field(None, min_length=1)
    copyAttachments: bool = False
    maxAttachmentSize: Annotated[str, Field(pattern=SIZE_PATTERN)] | int = "50MiB"
    source: str | None = Field(
        None,
        min_length=1,
        description="prefix under url watched every syncFrequency seconds; new files there "
        "are emitted as file.received",
    )
    timeout: Duration = "30s"
    batchSize: BatchSize = 1
    batchDelay: BatchDelay = 0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from reconciler.manifests.secrets import mask_references

        if "://" not in mask_references(value):
            raise FieldProblem(
                "config.url has no scheme",
                "write an fsspec URL such as file://state/exports or s3://bucket/prefix",
            )
        check_url(value, schemes=_any_scheme(value), what="config.url")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        unknown = set(re.findall(r"\{([^}]*)\}", value)) - PATH_PARTS
        if unknown:
            raise FieldProblem(
                f"path has unknown part {{{sorted(unknown)[0]}}}",
                "parts are " + " ".join("{" + p + "}" for p in sorted(PATH_PARTS)),
            )
        if value.startswith("/") or ".." in value.split("/"):
            raise FieldProblem("path must stay under the target URL", "write a relative path without ..")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/") or "{" in value):
            raise FieldProblem(
                "source must be a prefix under the target URL", "write a relative prefix such as incoming/"
            )
        return value

    @model_validator(mode="after")
    def _path_fits_format(self) -> FileConfig:
        if "path" not in self.model_fields_set and self.format == "csv":
            self.path = "{event}/{date}.csv"
        last = self.path.rsplit("/", 1)[-1]
        extension = last.rsplit(".", 1)[-1] if "." in last else None
        other = {"jsonl": "csv", "csv": "jsonl"}[self.format]
        if extension in {"jsonl": {"csv"}, "csv": {"jsonl", "json"}}[self.format]:
            problems_at(
                "FileConfig",
                [
                    (
                        ("path",),
                        FieldProblem(
                            f"path ends in .{extension} but format is {self.format}",
                            f"end the path in .{self.format}, or set format: {other}",
                        ),
                    )
                ],
            )
        return self

    @field_validator("storageOptions")
    @classmethod
    def _no_literal_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        from reconciler.manifests.fields import looks_like_credential_name, walk_strings
        from reconciler.manifests.secrets import has_reference

        for loc, text in walk_strings(value):
            name = str(loc[-1])
            if looks_like_credential_name(name) and not has_reference(text):
                raise FieldProblem(
                    f"storageOptions.{'.'.join(map(str, loc))} is a literal credential", "write it as ${env:NAME}"
                )
        return value


PATH_PARTS = frozenset({"event", "date", "year", "month", "day", "hour", "id", "integration"})


def _any_scheme(url: str) -> tuple[str, ...]:
    from reconciler.manifests.secrets import mask_references

    return (mask_references(url).split("://", 1)[0],)


# --- integrations ---------------------------------------------------------------------------


class VerifyConfig(Strict):
    """How an inbound request proves it comes from the partner."""

    scheme: Literal["standard-webhooks", "github", "stripe", "slack", "hmac-sha256"]
    secret: Credential
    tolerance: Duration = "5m"
    header: str | None = Field(
        None, pattern=HEADER_NAME, description="hmac-sha256 only: the signature header (default X-Signature)"
    )

    _check_secret = field_validator("secret", mode="before")(_credential)

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: str) -> str:
        return _bounded_duration(value, "tolerance", 1, MAX_TOLERANCE_SECONDS)


class Receive(Strict):
    """Inbound receipt at POST /api/integrations/webhook/receive/{secret}."""

    secret: Credential
    verify: VerifyConfig | None = None
    event: str = Field(pattern=EVENT_NAME.pattern, description="event type emitted for each receipt")

    _check_secret = field_validator("secret", mode="before")(_credential)


class IntegrationBase(Strict):
    apiVersion: Literal["cms.integrations/v1"]
    kind: Literal["Integration"]
    id: str | None = Field(None, pattern=ID_PATTERN, description="stable slug; defaults to the file name's stem")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    authType: AuthType = "none"
    authConfig: AuthConfig | None = None
    active: bool = True
    labels: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")], str] = Field(
        default_factory=dict
    )
    syncFrequency: int = Field(
        0, ge=0, le=MAX_SYNC_FREQUENCY_SECONDS, description="seconds; 0 delivers each event as it happens"
    )
    webhooks: list[Subscription] = Field(default_factory=list)
    retry: Retry | None = None

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value in RESERVED_IDS:
            raise FieldProblem(
                f"id {value!r} is reserved by the API's routes", f"choose another id, such as {value}-integration"
            )
        return value

    @field_validator("authConfig", mode="before")
    @classmethod
    def _auth_matches_type(cls, value: Any, info: ValidationInfo) -> Any:
        auth_type = info.data.get("authType")
        if auth_type is None:
            return None  # authType itself is invalid; that error is enough
        if auth_type == "none":
            if value not in (None, {}):
                raise FieldProblem(
                    "authType none takes no authConfig",
                    "remove authConfig, or set authType to the scheme it configures",
                )
            return None
        if value is None:
            raise FieldProblem(f"authType {auth_type} needs authConfig", _AUTH_HINTS[auth_type])
        return AUTH_MODELS[auth_type].model_validate(value)

    @model_validator(mode="after")
    def _auth_present(self) -> IntegrationBase:
        if self.authType != "none" and self.authConfig is None:
            problems_at(
                "Integration",
                [
                    (
                        ("authType",),
                        FieldProblem(f"authType {self.authType} needs authConfig", _AUTH_HINTS[self.authType]),
                    )
                ],
            )
        return self


_AUTH_HINTS = {
    "api_key": "add authConfig: {header: X-API-Key, key: ${env:NAME}}",
    "bearer": "add authConfig: {token: ${env:NAME}}",
    "basic": "add authConfig: {username: ..., password: ${env:NAME}}",
    "oauth2": "add authConfig: {tokenUrl: https://..., clientId: ..., clientSecret: ${env:NAME}}",
}


def _require_endpoint(config: HttpConfig, why: str) -> None:
    if not config.endpoint:
        problems_at(
            "Integration",
            [
                (
                    ("config", "endpoint"),
                    FieldProblem(f"config.endpoint is required {why}", "add endpoint: https://... (or ${env:NAME})"),
                )
            ],
        )


class ApiIntegration(IntegrationBase):
    """`type: api`: events are sent to a REST API."""

    type: Literal["api"]
    config: HttpConfig

    @model_validator(mode="after")
    def _endpoint(self) -> ApiIntegration:
        _require_endpoint(self.config, "for type api")
        return self


class WebhookIntegration(IntegrationBase):
    """`type: webhook`: events are posted to a webhook URL, and/or received from a partner."""

    type: Literal["webhook"]
    config: HttpConfig = Field(default_factory=HttpConfig)
    receive: Receive | None = None

    @model_validator(mode="after")
    def _endpoint(self) -> WebhookIntegration:
        if self.receive is None or self.webhooks:
            _require_endpoint(
                self.config, "to deliver events" if self.receive else "for type webhook without a receive: block"
            )
        return self


class DatabaseIntegration(IntegrationBase):
    """`type: database`: one row per event in a table (PostgreSQL, MySQL/MariaDB, SQLite)."""

    type: Literal["database"]
    config: DatabaseConfig


class FileIntegration(IntegrationBase):
    """`type: file`: events as JSONL/CSV objects in cloud or local storage."""

    type: Literal["file"]
    config: FileConfig


Integration = Annotated[
    ApiIntegration | WebhookIntegration | DatabaseIntegration | FileIntegration,
    Field(discriminator="type"),
]
AnyIntegration = ApiIntegration | WebhookIntegration | DatabaseIntegration | FileIntegration
INTEGRATION_MODELS: dict[str, type[AnyIntegration]] = {
    "api": ApiIntegration,
    "webhook": WebhookIntegration,
    "database": DatabaseIntegration,
    "file": FileIntegration,
}


class EventTypeDecl(Strict):
    """`kind: EventType`: a custom event type with a JSON Schema for its `data`."""

    apiVersion: Literal["cms.integrations/v1"]
    kind: Literal["EventType"]
    name: str = Field(pattern=EVENT_NAME.pattern, description="dotted name, such as custom.attendance.recorded")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema (2020-12) of the event's data")
    example: dict[str, Any] | None = Field(None, description="sample data, used to check templates")

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _is_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        from reconciler.events.schemas import schema_problem

        problem = schema_problem(value)
        if problem is not None:
            raise FieldProblem(problem, "see https://json-schema.org/understanding-json-schema/")
        return value

    @model_validator(mode="after")
    def _example_fits(self) -> EventTypeDecl:
        from reconciler.events.schemas import validator

        if self.example is not None:
            errors = list(validator(self.schema_).iter_errors(self.example))
            if errors:
                problems_at(
                    "EventType",
                    [
                        (
                            ("example", *errors[0].absolute_path),
                            FieldProblem(
                                f"the example does not match the schema: {errors[0].message}",
                                "fix the example or the schema",
                            ),
                        )
                    ],
                )
        return self


KINDS = ("Integration", "EventType")
