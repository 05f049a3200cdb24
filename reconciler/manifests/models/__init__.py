"""The file format (DESIGN.md section 3) as pydantic models.

The integration guide's field names are kept (`authType`, `authConfig`, `syncFrequency`,
`batchSize`, ...), so the models use camelCase. `schemas/` is generated from these models;
checks of single values live here so that the API, the validator and the reconciler refuse
the same things with the same messages. Checks across documents live in `manifests.checks`.

One module per concern, all re-exported here:

- `common`: the `Strict` base, string forms (durations, templates, secret references) and
  shared checks;
- `auth`: `authType` and the `authConfig` model of each scheme;
- `delivery`: `webhooks` entries, batching, `rateLimit` and `retry`;
- `configs`: the `config` block of each type (HTTP, database, file);
- `inbound`: `receive:` and its `verify:`;
- `kinds`: the documents, `kind: Integration` by `type` and `kind: EventType`.
"""

from __future__ import annotations

from reconciler.manifests.models.auth import (
    AUTH_HINTS,
    AUTH_MODELS,
    ApiKeyAuth,
    AuthConfig,
    AuthType,
    BasicAuth,
    BearerAuth,
    OAuth2Auth,
)
from reconciler.manifests.models.common import (
    DURATION_FIELD,
    HEADER_NAME,
    Credential,
    Duration,
    Strict,
    Template,
    bounded_duration,
    check_credential,
)
from reconciler.manifests.models.configs import (
    DATABASE_SCHEMES,
    FIELD_PATH,
    HOST_PROTOCOLS,
    MAX_TIMEOUT_SECONDS,
    PATH_PARTS,
    SIZE_PATTERN,
    SQL_IDENTIFIER,
    STORAGE_OPTIONS,
    DatabaseConfig,
    FileConfig,
    HttpConfig,
    chains_file_systems,
    parse_size,
    supported_storage_options,
)
from reconciler.manifests.models.delivery import (
    MAX_BATCH_DELAY_MS,
    MAX_RETRY_INTERVAL_SECONDS,
    BatchDelay,
    BatchSize,
    RateLimit,
    Retry,
    RetryInterval,
    Subscription,
)
from reconciler.manifests.models.inbound import MAX_TOLERANCE_SECONDS, Receive, VerifyConfig
from reconciler.manifests.models.kinds import (
    API_VERSION,
    ID_PATTERN,
    INTEGRATION_MODELS,
    KINDS,
    MAX_SYNC_FREQUENCY_SECONDS,
    RESERVED_IDS,
    AnyIntegration,
    ApiIntegration,
    DatabaseIntegration,
    EventTypeDecl,
    FileIntegration,
    Integration,
    IntegrationBase,
    WebhookIntegration,
)

__all__ = [
    "API_VERSION",
    "AUTH_HINTS",
    "AUTH_MODELS",
    "DATABASE_SCHEMES",
    "DURATION_FIELD",
    "FIELD_PATH",
    "HEADER_NAME",
    "HOST_PROTOCOLS",
    "ID_PATTERN",
    "INTEGRATION_MODELS",
    "KINDS",
    "MAX_BATCH_DELAY_MS",
    "MAX_RETRY_INTERVAL_SECONDS",
    "MAX_SYNC_FREQUENCY_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "MAX_TOLERANCE_SECONDS",
    "PATH_PARTS",
    "RESERVED_IDS",
    "SIZE_PATTERN",
    "SQL_IDENTIFIER",
    "STORAGE_OPTIONS",
    "AnyIntegration",
    "ApiIntegration",
    "ApiKeyAuth",
    "AuthConfig",
    "AuthType",
    "BasicAuth",
    "BatchDelay",
    "BatchSize",
    "BearerAuth",
    "Credential",
    "DatabaseConfig",
    "DatabaseIntegration",
    "Duration",
    "EventTypeDecl",
    "FileConfig",
    "FileIntegration",
    "HttpConfig",
    "Integration",
    "IntegrationBase",
    "OAuth2Auth",
    "RateLimit",
    "Receive",
    "Retry",
    "RetryInterval",
    "Strict",
    "Subscription",
    "Template",
    "VerifyConfig",
    "WebhookIntegration",
    "bounded_duration",
    "chains_file_systems",
    "check_credential",
    "parse_size",
    "supported_storage_options",
]
