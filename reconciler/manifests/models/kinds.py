"""The documents of the file format: `kind: Integration` with one model per `type`, and
`kind: EventType`.

Each Integration model joins the fields every type shares (`IntegrationBase`: auth,
subscriptions, retry) with its type's `config`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from reconciler.events.patterns import EVENT_NAME
from reconciler.manifests.fields import FieldProblem, check_public_host, problems_at
from reconciler.manifests.models.auth import AUTH_HINTS, AUTH_MODELS, AuthConfig, AuthType, OAuth2Auth
from reconciler.manifests.models.common import Strict
from reconciler.manifests.models.configs import DatabaseConfig, FileConfig, HttpConfig
from reconciler.manifests.models.delivery import Retry, Subscription
from reconciler.manifests.models.inbound import Receive

API_VERSION = "cms.integrations/v1"
KINDS = ("Integration", "EventType")
ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
RESERVED_IDS = frozenset({"templates", "health", "webhooks", "webhook"})
MAX_SYNC_FREQUENCY_SECONDS = 30 * 86400


# The fields of every Integration, whatever its type. No docstring: it would become the
# description of this model's JSON Schema, which has none.
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
            raise FieldProblem(f"authType {auth_type} needs authConfig", AUTH_HINTS[auth_type])
        return AUTH_MODELS[auth_type].model_validate(value)

    @model_validator(mode="after")
    def _auth_present(self) -> IntegrationBase:
        if self.authType != "none" and self.authConfig is None:
            problems_at(
                "Integration",
                [
                    (
                        ("authType",),
                        FieldProblem(f"authType {self.authType} needs authConfig", AUTH_HINTS[self.authType]),
                    )
                ],
            )
        return self


def _token_url_is_public(auth: AuthConfig | None, config: HttpConfig) -> None:
    """An OAuth2 token endpoint is requested on the delivery's session: the private-network rule
    of `config` applies to it too (authConfig cannot see config, so the integration checks)."""
    if isinstance(auth, OAuth2Auth) and not config.allowPrivateNetwork:
        try:
            check_public_host(auth.tokenUrl, "authConfig.tokenUrl")
        except FieldProblem as problem:
            problems_at("Integration", [(("authConfig", "tokenUrl"), problem)])


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
        _token_url_is_public(self.authConfig, self.config)
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
        _token_url_is_public(self.authConfig, self.config)
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
