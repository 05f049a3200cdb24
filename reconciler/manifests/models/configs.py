"""The `config` block of each integration type: HTTP (`api`, `webhook`), `database` and `file`.

Each model checks the values a sink would otherwise trip over at delivery time: URLs and
their schemes, identifiers, object name patterns, sizes and literal credentials.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from reconciler.manifests.fields import (
    FieldProblem,
    check_public_host,
    check_url,
    looks_like_credential_name,
    problems_at,
    walk_strings,
)
from reconciler.manifests.models.common import (
    HEADER_NAME,
    Credential,
    Duration,
    Strict,
    Template,
    bounded_duration,
    check_credential,
)
from reconciler.manifests.models.delivery import BatchDelay, BatchSize, RateLimit
from reconciler.manifests.secrets import has_reference, mask_references

MAX_TIMEOUT_SECONDS = 300.0
SIZE_PATTERN = r"^\s*\d+\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$"
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_FACTOR = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
SQL_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
FIELD_PATH = r"^(id|event|timestamp|data)(\.[A-Za-z0-9_-]+)*$"


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 64MB or 1GiB")
    return int(match.group(1)) * _SIZE_FACTOR[match.group(2)]


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

    _check_signing = field_validator("signingSecret", mode="before")(check_credential)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        return bounded_duration(value, "timeout", 0.001, MAX_TIMEOUT_SECONDS)

    @field_validator("headers")
    @classmethod
    def _no_literal_credentials(cls, value: dict[str, str]) -> dict[str, str]:
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
                allow_private_network=bool(info.data.get("allowPrivateNetwork")),
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

    # first: the URL and storage option checks below read it (fields validate in declaration order)
    allowPrivateNetwork: bool = Field(
        False,
        description="lets the storage URL, a storage endpoint_url and attachment URLs (copyAttachments) "
        "reach loopback or private addresses",
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
    csvFormulaEscape: bool = Field(
        True,
        description="format csv: a text cell starting with = + - @ tab or carriage return gets a leading ' "
        "so that a spreadsheet shows it instead of running it as a formula; false writes cells as they are",
    )
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
    def _url(cls, value: str, info: ValidationInfo) -> str:
        if "://" not in mask_references(value):
            raise FieldProblem(
                "config.url has no scheme",
                "write an fsspec URL such as file://state/exports or s3://bucket/prefix",
            )
        if chains_file_systems(value):
            # each link of a chain (simplecache::https://..., zip://x::https://...) is opened by
            # fsspec itself, outside the checks the storage client's connections get
            raise FieldProblem(
                "config.url chains file systems with ::, which file integrations do not support",
                "write a single fsspec URL such as s3://bucket/prefix",
            )
        check_url(value, schemes=_any_scheme(value), what="config.url")
        if _any_scheme(value)[0].lower() in HOST_PROTOCOLS and not info.data.get("allowPrivateNetwork"):
            check_public_host(value, "config.url")
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
        if value is not None and (value.startswith("/") or ".." in value.split("/") or "{" in value or "://" in value):
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
        for loc, text in walk_strings(value):
            name = str(loc[-1])
            if looks_like_credential_name(name) and not has_reference(text):
                raise FieldProblem(
                    f"storageOptions.{'.'.join(map(str, loc))} is a literal credential", "write it as ${env:NAME}"
                )
        return value

    @model_validator(mode="after")
    def _supported_storage_options(self) -> FileConfig:
        """Only the storage options the product supports, each at its own location: fsspec hands
        unknown options on to the storage client, and some route traffic (proxies, a session or
        connector of one's own, an HTTP proxy per request) around the private-network rule."""
        problems = [
            (("storageOptions", *loc), problem) for loc, problem in _storage_option_problems(self.storageOptions)
        ]
        for loc in (("endpoint_url",), ("client_kwargs", "endpoint_url")):
            endpoint = _at(self.storageOptions, loc)
            if isinstance(endpoint, str):
                try:
                    check_url(
                        endpoint,
                        schemes=("https", "http"),
                        allow_insecure_http=True,  # S3-compatible services inside a network often have no TLS
                        allow_private_network=self.allowPrivateNetwork,
                        what="storageOptions." + ".".join(loc),
                    )
                except FieldProblem as problem:
                    problems.append((("storageOptions", *loc), problem))
        problems_at("FileConfig", problems)
        return self


PATH_PARTS = frozenset({"event", "date", "year", "month", "day", "hour", "id", "integration"})

# fsspec protocols whose URL names a network host (for s3://, gs://, az:// it names a bucket or
# container): the private-network rule applies to that host.
HOST_PROTOCOLS = frozenset({"http", "https", "ftp", "sftp", "ssh", "smb", "webhdfs", "hdfs"})

StorageKeys = dict[str, "StorageKeys | None"]
# The storage options file integrations support (docs/file-format.md): a key maps to None (any
# value) or to the keys allowed inside it. They cover S3 and S3-compatible services (credentials,
# region, endpoint, timeouts and retries, addressing style, server-side encryption) and GCS
# credentials; everything else is refused at validation, naming the key.
STORAGE_OPTIONS: StorageKeys = {
    "key": None,
    "secret": None,
    "token": None,
    "anon": None,
    "endpoint_url": None,  # checked like an HTTP endpoint
    "client_kwargs": {"region_name": None, "endpoint_url": None},
    "config_kwargs": {
        "connect_timeout": None,
        "read_timeout": None,
        "retries": None,
        "signature_version": None,
        "s3": {"addressing_style": None},
    },
    "s3_additional_kwargs": {"ServerSideEncryption": None, "SSEKMSKeyId": None},
}


def supported_storage_options(keys: StorageKeys = STORAGE_OPTIONS, prefix: str = "") -> list[str]:
    """The supported options as dotted paths: key, secret, ..., client_kwargs.region_name, ..."""
    found: list[str] = []
    for name, inner in keys.items():
        found += supported_storage_options(inner, f"{prefix}{name}.") if inner else [prefix + name]
    return found


def _storage_option_problems(
    value: dict[str, Any], keys: StorageKeys = STORAGE_OPTIONS, loc: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], FieldProblem]]:
    problems: list[tuple[tuple[str, ...], FieldProblem]] = []
    for name, item in value.items():
        path = (*loc, str(name))
        dotted = ".".join(path)
        if name not in keys:
            problems.append(
                (
                    path,
                    FieldProblem(
                        f"storageOptions.{dotted} is not a supported storage option",
                        "supported: " + ", ".join(supported_storage_options()) + " (see docs/file-format.md)",
                    ),
                )
            )
            continue
        inner = keys[name]
        if inner is None:
            continue
        if not isinstance(item, dict):
            problems.append(
                (path, FieldProblem(f"storageOptions.{dotted} must be a mapping", f"write {name}: {{...}}"))
            )
            continue
        problems += _storage_option_problems(item, inner, path)
    return problems


def _at(value: Any, loc: tuple[str, ...]) -> Any:
    """The value at a path of nested mappings, or None."""
    for name in loc:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def chains_file_systems(url: str) -> bool:
    """fsspec's URL chaining (`simplecache::s3://...`): `::` outside an IPv6 literal's brackets."""
    return "::" in re.sub(r"\[[^\]]*\]", "", mask_references(url))


def _any_scheme(url: str) -> tuple[str, ...]:
    # storage takes any scheme fsspec has a driver for: check_url checks the rest of the URL
    return (mask_references(url).split("://", 1)[0],)
