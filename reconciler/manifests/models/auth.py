"""Outbound authentication: `authType` and the `authConfig` model of each scheme.

Secrets appear only as references (`${env:NAME}`, `${file:/path}`); a literal one is refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from reconciler.manifests.fields import FieldProblem, check_url, problems_at
from reconciler.manifests.models.common import HEADER_NAME, Credential, Strict, check_credential

AuthType = Literal["none", "api_key", "bearer", "basic", "oauth2"]


class ApiKeyAuth(Strict):
    """`api_key`: the key goes in a header (default `X-API-Key`) or a query parameter."""

    header: str | None = Field(None, pattern=HEADER_NAME)
    query: str | None = Field(None, min_length=1)
    key: Credential

    _check_key = field_validator("key", mode="before")(check_credential)

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
    _check_token = field_validator("token", mode="before")(check_credential)


class BasicAuth(Strict):
    """`basic`: HTTP Basic authentication; the username may be literal, the password not."""

    username: str = Field(min_length=1)
    password: Credential
    _check_password = field_validator("password", mode="before")(check_credential)


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

    _check_secrets = field_validator("clientSecret", "refreshToken", mode="before")(check_credential)

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

# What to add when authType names a scheme and authConfig is missing.
AUTH_HINTS = {
    "api_key": "add authConfig: {header: X-API-Key, key: ${env:NAME}}",
    "bearer": "add authConfig: {token: ${env:NAME}}",
    "basic": "add authConfig: {username: ..., password: ${env:NAME}}",
    "oauth2": "add authConfig: {tokenUrl: https://..., clientId: ..., clientSecret: ${env:NAME}}",
}
