"""The schemas of the documents the HTTP API takes and answers: `components.schemas` of the
OpenAPI document (reconciler.api.openapi holds its paths and serves it)."""

from __future__ import annotations

from typing import Any

PROBLEM = {"$ref": "#/components/schemas/Problem"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}


def ref(name: str) -> dict[str, Any]:
    """A reference to one of SCHEMAS."""
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem document",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    },
    "DeclaredInGit": {
        "allOf": [
            PROBLEM,
            {
                "type": "object",
                "properties": {
                    "file": {"type": "string"},
                    "yaml": {"type": "string", "description": "the whole file to commit"},
                    "diff": {
                        "type": "string",
                        "description": "unified diff from the file in git to `yaml` (git apply, patch -p1); "
                        "empty when nothing changes",
                    },
                    "valid": {"type": "boolean"},
                    "errors": {"type": "array", "items": ANY_OBJECT},
                    "warnings": {
                        "type": "array",
                        "description": "fields of the body with no place in the file format (code not-mapped, "
                        "by JSON pointer), and validation warnings",
                        "items": ANY_OBJECT,
                    },
                    "secretsToSet": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "variable": {"type": "string"},
                                "file": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        },
                    },
                },
            },
        ]
    },
    "Integration": {
        "type": "object",
        "required": ["id", "type", "status", "generation", "conditions", "ready"],
        "properties": {
            "id": {"type": "string"},
            "name": NULLABLE_STRING,
            "type": NULLABLE_STRING,
            "status": {"enum": ["active", "degraded", "suspended", "inactive", "failing", "pending", "removing"]},
            "generation": {"type": "integer"},
            "spec": {"type": ["object", "null"], "description": "the applied spec, credentials redacted"},
            "declaredSpec": {
                "type": ["object", "null"],
                "description": "the spec the file declares now (at lastAttemptedRevision), applied or not, "
                "credentials redacted; null while it does not validate",
            },
            "conditions": {"type": "array", "items": ANY_OBJECT},
            "sourceFile": NULLABLE_STRING,
            "lastAppliedRevision": {"type": ["object", "null"], "properties": {"dirty": {"type": ["boolean", "null"]}}},
            "lastAttemptedRevision": {
                "type": ["object", "null"],
                "properties": {"dirty": {"type": ["boolean", "null"]}},
            },
            "ready": {"type": "boolean"},
            "drift": {
                "type": ["object", "null"],
                "description": "a runtime suspension: who, why and when (RFC 3339)",
                "properties": {
                    "suspended": {"type": "boolean"},
                    "by": {"type": "string"},
                    "reason": {"type": "string"},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
            "deliveries": {"type": "object", "additionalProperties": {"type": "integer"}},
            "auditTrail": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "action": {"type": "string"},
                        "actor": {"type": "string"},
                        "message": {"type": "string"},
                        "generation": {"type": ["integer", "null"]},
                    },
                },
            },
        },
    },
    "IntegrationList": {
        "type": "object",
        "required": ["items", "count"],
        "properties": {"items": {"type": "array", "items": ref("Integration")}, "count": {"type": "integer"}},
    },
    "Reason": {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "actor": {"type": "string"}},
        "examples": [{"reason": "partner maintenance until 18:00", "actor": "ada"}],
    },
    "TestRequest": {
        "type": "object",
        "properties": {"message": {"type": "string"}},
        "examples": [{"message": "a test from the API reference"}],
    },
    "TestResult": {
        "type": "object",
        "required": ["integrationId", "eventId", "ok", "latencyMs"],
        "properties": {
            "integrationId": {"type": "string"},
            "eventId": {"type": "string"},
            "ok": {"type": "boolean"},
            "status": {"type": ["integer", "null"]},
            "latencyMs": {"type": "number"},
            "responseExcerpt": NULLABLE_STRING,
            "error": NULLABLE_STRING,
        },
    },
    "LogEntry": {
        "type": "object",
        "required": ["cursor", "kind", "at", "status"],
        "properties": {
            "cursor": {"type": "string"},
            "kind": {"enum": ["attempt", "test", "sync", "reconcile", "receipt"]},
            "at": {"type": "string", "format": "date-time"},
            "status": {"type": "string"},
            "event": NULLABLE_STRING,
        },
    },
    "LogPage": {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {"items": {"type": "array", "items": ref("LogEntry")}, "nextCursor": NULLABLE_STRING},
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "eventId", "event", "status", "attempts", "cursor"],
        "properties": {
            "id": {"type": "string"},
            "eventId": {"type": "string"},
            "event": {"type": "string"},
            "status": {"enum": ["pending", "failed", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "nextAttemptAt": NULLABLE_STRING,
            "lastError": NULLABLE_STRING,
            "batchId": NULLABLE_STRING,
            "createdAt": NULLABLE_STRING,
            "updatedAt": NULLABLE_STRING,
            "deliveredAt": NULLABLE_STRING,
            "cursor": {"type": "string"},
        },
    },
    "DeliveryPage": {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {"items": {"type": "array", "items": ref("Delivery")}, "nextCursor": NULLABLE_STRING},
    },
    "ReplayRequest": {
        "type": "object",
        "description": "one delivery (deliveryId), or every failed or dead one since a time (RFC 3339 or a "
        "duration back from now such as 24h)",
        "properties": {
            "deliveryId": {"type": "string"},
            "since": {"type": "string"},
            "status": {
                "oneOf": [{"enum": ["failed", "dead"]}, {"type": "array", "items": {"enum": ["failed", "dead"]}}]
            },
            "actor": {"type": "string"},
        },
        "examples": [{"since": "24h", "status": ["failed", "dead"]}],
    },
    "ReplayResult": {
        "type": "object",
        "required": ["integrationId", "replayed"],
        "properties": {"integrationId": {"type": "string"}, "replayed": {"type": "integer"}},
    },
    "EventRequest": {
        "type": "object",
        "description": "the integration guide's envelope: event (or type), optional timestamp, data; an optional "
        "id of the sender's (its idempotency key when no Idempotency-Key header is sent)",
        "properties": {
            "id": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"},
            "event": {"type": "string"},
            "type": {
                "description": "the event type when event is absent (the guide's custom events say type); "
                "ignored beside event"
            },
            "timestamp": {
                "type": ["string", "null"],
                "description": "RFC 3339; absent or null: the daemon stamps the event when it takes it",
            },
            "data": ANY_OBJECT,
        },
        "examples": [{"event": "user.registered", "data": {"userId": 42, "email": "ada@example.edu", "name": "Ada"}}],
    },
    "Accepted": {
        "type": "object",
        "required": ["id", "event", "deliveries"],
        "properties": {
            "id": {"type": "string"},
            "event": {"type": "string"},
            "timestamp": {"type": "string"},
            "deliveries": {"type": "integer"},
            "duplicate": {"type": "boolean", "description": "a repeat: the event first stored under its key"},
            "duplicateOf": NULLABLE_STRING,
        },
    },
    "Templates": {
        "type": "object",
        "required": ["items", "count"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "yaml", "json"],
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "yaml": {"type": "string"},
                        "json": ANY_OBJECT,
                        "command": {"type": "string"},
                    },
                },
            },
            "count": {"type": "integer"},
        },
    },
    "HealthStatus": {
        "type": "object",
        "required": ["status", "problems", "queue", "integrations", "integrationsByStatus"],
        "properties": {
            "status": {"enum": ["ok", "degraded"]},
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": "why the status is degraded, one line each; empty when ok",
            },
            "checkedAt": {"type": "string"},
            "config": ANY_OBJECT,
            "lastPass": {"type": ["object", "null"]},
            "passes": {"type": "integer"},
            "replica": {"type": ["string", "null"], "description": "the id of the replica that answered"},
            "leader": {
                "type": ["string", "null"],
                "description": "the replica that runs the singleton duties (scheduled syncs, retention)",
            },
            "replicas": {
                "type": "array",
                "description": "every `reconciler run` on this store, by heartbeat",
                "items": {
                    "type": "object",
                    "required": ["id", "role", "version", "lastHeartbeat", "alive", "leader", "leases"],
                    "properties": {
                        "id": {"type": "string", "description": "host:pid:suffix, the owner of its leases"},
                        "role": {"type": "string"},
                        "version": {"type": "string"},
                        "host": {"type": "string"},
                        "pid": {"type": "integer"},
                        "configRevision": {"type": ["string", "null"]},
                        "startedAt": {"type": "string"},
                        "lastHeartbeat": {"type": "string"},
                        "heartbeatAgeSeconds": {"type": "number"},
                        "alive": {"type": "boolean", "description": "heartbeat within the dead-after threshold"},
                        "leader": {"type": "boolean"},
                        "leases": {"type": "integer", "description": "deliveries it holds (queued or in flight)"},
                    },
                },
            },
            "integrationsByStatus": {"type": "object", "additionalProperties": {"type": "integer"}},
            "queue": {
                "type": "object",
                "properties": {
                    "depth": {"type": "integer"},
                    "oldestPendingSeconds": {"type": "number"},
                    "dead": {"type": "integer"},
                },
            },
            "integrations": {"type": "array", "items": ANY_OBJECT},
        },
    },
}
