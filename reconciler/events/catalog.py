"""The event catalog: every built-in event type, the JSON Schema of its `data`, and an example.

The 13 event types of the integration guide, plus the ones the integration layer emits
itself (`integration.test`, `integration.synced`, `file.received`). The schemas require the
identifying fields and allow additional properties, so the course system can send more
than the catalog names without breaking anything. `make schemas` writes them to
`schemas/events/`; examples feed the validator's template rendering and the docs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# The `$id` of every schema this project publishes is this prefix and the schema's name, which is
# also its file under schemas/ and its path under the daemon's /schemas/: a name, not a location
# (docs/decisions.md: "Schema ids and where editors get the schemas").
SCHEMA_ID_PREFIX = "urn:cms-integration-reconciler:schema:"
CUSTOM_PREFIX = "custom."


@dataclass(frozen=True, eq=False)  # hashed by identity: holds dicts
class EventType:
    """One type of the catalog: its name, the JSON Schema of its `data`, an example; built in or declared."""

    name: str
    description: str
    schema: dict[str, Any]
    example: dict[str, Any] = field(default_factory=dict)
    builtin: bool = True


_ID = {"type": ["integer", "string"], "description": "identifier in the course system"}
_TIME = {"type": "string", "format": "date-time"}
_EMAIL = {"type": "string", "format": "email"}
_STR = {"type": "string"}
_OBJ = {"type": "object"}


def _data(
    description: str,
    required: list[str],
    properties: dict[str, Any],
) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }


_BUILTINS: list[EventType] = [
    EventType(
        "user.registered",
        "New user registration",
        _data(
            "A user (usually a student) registered.",
            ["userId", "email"],
            {"userId": _ID, "email": _EMAIL, "name": _STR, "studentId": _STR, "registrationDate": _TIME, "role": _STR},
        ),
        {
            "userId": 123,
            "email": "student@example.com",
            "name": "John Doe",
            "studentId": "IT2024001",
            "registrationDate": "2024-01-15T10:30:00.000Z",
        },
    ),
    EventType(
        "user.login",
        "User login activity",
        _data(
            "A user logged in.",
            ["userId"],
            {"userId": _ID, "email": _EMAIL, "name": _STR, "loginAt": _TIME, "ip": _STR},
        ),
        {"userId": 123, "email": "student@example.com", "name": "John Doe", "loginAt": "2024-01-15T10:30:00.000Z"},
    ),
    EventType(
        "module.created",
        "New module created",
        _data(
            "A module (course unit) was created.",
            ["moduleId", "name"],
            {"moduleId": _ID, "code": _STR, "name": _STR, "description": _STR, "createdBy": _ID, "createdAt": _TIME},
        ),
        {
            "moduleId": 42,
            "code": "IT101",
            "name": "Introduction to Programming",
            "createdBy": 7,
            "createdAt": "2024-01-15T10:30:00.000Z",
        },
    ),
    EventType(
        "module.updated",
        "Module information updated",
        _data(
            "A module's information changed.",
            ["moduleId"],
            {"moduleId": _ID, "code": _STR, "name": _STR, "changes": _OBJ, "updatedBy": _ID, "updatedAt": _TIME},
        ),
        {
            "moduleId": 42,
            "code": "IT101",
            "name": "Introduction to Programming",
            "changes": {"name": {"from": "Intro to Programming", "to": "Introduction to Programming"}},
        },
    ),
    EventType(
        "timetable.created",
        "New test/exam scheduled",
        _data(
            "A test or exam was scheduled.",
            ["timetableId", "moduleId"],
            {
                "timetableId": _ID,
                "moduleId": _ID,
                "title": _STR,
                "kind": {"type": "string", "enum": ["test", "exam", "lecture", "other"]},
                "startsAt": _TIME,
                "endsAt": _TIME,
                "venue": _STR,
            },
        ),
        {
            "timetableId": 9,
            "moduleId": 42,
            "title": "IT101 midterm",
            "kind": "test",
            "startsAt": "2024-02-01T09:00:00.000Z",
            "endsAt": "2024-02-01T11:00:00.000Z",
            "venue": "Hall B",
        },
    ),
    EventType(
        "timetable.updated",
        "Test/exam details changed",
        _data(
            "A scheduled test or exam changed.",
            ["timetableId"],
            {
                "timetableId": _ID,
                "moduleId": _ID,
                "title": _STR,
                "startsAt": _TIME,
                "endsAt": _TIME,
                "venue": _STR,
                "changes": _OBJ,
            },
        ),
        {
            "timetableId": 9,
            "moduleId": 42,
            "title": "IT101 midterm",
            "startsAt": "2024-02-02T09:00:00.000Z",
            "changes": {"startsAt": {"from": "2024-02-01T09:00:00.000Z", "to": "2024-02-02T09:00:00.000Z"}},
        },
    ),
    EventType(
        "note.uploaded",
        "New study material uploaded",
        _data(
            "Study material was uploaded; fileUrl is where the file can be fetched.",
            ["noteId", "moduleId", "fileUrl"],
            {
                "noteId": _ID,
                "moduleId": _ID,
                "title": _STR,
                "fileUrl": _STR,
                "fileName": _STR,
                "contentType": _STR,
                "size": {"type": "integer", "minimum": 0},
                "uploadedBy": _ID,
            },
        ),
        {
            "noteId": 314,
            "moduleId": 42,
            "title": "Week 1 slides",
            "fileUrl": "https://cms.example.edu/files/notes/314/week1.pdf",
            "fileName": "week1.pdf",
            "contentType": "application/pdf",
            "size": 48213,
            "uploadedBy": 7,
        },
    ),
    EventType(
        "lecturer.assigned",
        "Lecturer assigned to module",
        _data(
            "A lecturer was assigned to a module.",
            ["lecturerId", "moduleId"],
            {"lecturerId": _ID, "moduleId": _ID, "lecturerName": _STR, "email": _EMAIL, "moduleName": _STR},
        ),
        {
            "lecturerId": 7,
            "moduleId": 42,
            "lecturerName": "Dr. Ada Lovelace",
            "email": "ada@example.edu",
            "moduleName": "Introduction to Programming",
        },
    ),
    EventType(
        "grade.published",
        "Grades published to students",
        _data(
            "A grade was published to a student.",
            ["studentId", "moduleId", "grade"],
            {
                "studentId": _ID,
                "moduleId": _ID,
                "grade": {"type": ["number", "string"]},
                "assessment": _STR,
                "publishedAt": _TIME,
                "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            },
        ),
        {
            "studentId": "IT2024001",
            "moduleId": 42,
            "grade": 78,
            "assessment": "Midterm",
            "publishedAt": "2024-02-10T12:00:00.000Z",
            "priority": "normal",
        },
    ),
    EventType(
        "system.error",
        "System errors and exceptions",
        _data(
            "The course system reported an error.",
            ["message"],
            {
                "message": _STR,
                "code": _STR,
                "source": _STR,
                "severity": {"type": "string", "enum": ["info", "warning", "error", "critical"]},
                "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            },
        ),
        {
            "message": "Database connection pool exhausted",
            "code": "DB_POOL",
            "source": "api",
            "severity": "error",
            "priority": "high",
        },
    ),
    EventType(
        "settings.updated",
        "System settings changed",
        _data(
            "System settings changed.",
            ["changes"],
            {"changes": _OBJ, "updatedBy": _ID, "updatedAt": _TIME},
        ),
        {
            "changes": {"registrationOpen": {"from": False, "to": True}},
            "updatedBy": 1,
            "updatedAt": "2024-01-15T10:30:00.000Z",
        },
    ),
    EventType(
        "test.reminder",
        "Test reminders (automated)",
        _data(
            "A test or exam is coming up.",
            ["timetableId", "startsAt"],
            {
                "timetableId": _ID,
                "moduleId": _ID,
                "title": _STR,
                "startsAt": _TIME,
                "venue": _STR,
                "recipients": {"type": "array"},
            },
        ),
        {
            "timetableId": 9,
            "moduleId": 42,
            "title": "IT101 midterm",
            "startsAt": "2024-02-01T09:00:00.000Z",
            "venue": "Hall B",
        },
    ),
    EventType(
        "assignment.reminder",
        "Assignment deadline reminders",
        _data(
            "An assignment deadline is coming up.",
            ["assignmentId", "dueAt"],
            {"assignmentId": _ID, "moduleId": _ID, "title": _STR, "dueAt": _TIME, "recipients": {"type": "array"}},
        ),
        {"assignmentId": 5, "moduleId": 42, "title": "Lab 3", "dueAt": "2024-02-05T23:59:00.000Z"},
    ),
    EventType(
        "integration.test",
        "Sent by the test endpoint through an integration's real sink",
        _data(
            "A test message for one integration.",
            ["integrationId"],
            {"integrationId": _STR, "message": _STR},
        ),
        {"integrationId": "slack-notifications", "message": "Test message from the integration layer"},
    ),
    EventType(
        "integration.synced",
        "The result of fetching an integration's syncEndpoint",
        _data(
            "An integration's syncEndpoint was fetched.",
            ["integrationId", "status"],
            {"integrationId": _STR, "status": {"type": "integer"}, "body": {}, "fetchedAt": _TIME},
        ),
        {
            "integrationId": "student-information-system",
            "status": 200,
            "body": {"students": 1200},
            "fetchedAt": "2024-01-15T10:30:00.000Z",
        },
    ),
    EventType(
        "file.received",
        "A new file appeared under a file integration's source prefix",
        _data(
            "A new file was found in watched storage.",
            ["integrationId", "path"],
            {
                "integrationId": _STR,
                "url": _STR,
                "path": _STR,
                "size": {"type": "integer", "minimum": 0},
                "modifiedAt": _TIME,
                "etag": _STR,
            },
        ),
        {
            "integrationId": "partner-drop",
            "url": "s3://partner-drop/incoming/roster.csv",
            "path": "incoming/roster.csv",
            "size": 2048,
            "modifiedAt": "2024-01-15T10:30:00.000Z",
        },
    ),
]

BUILTIN_EVENT_TYPES: dict[str, EventType] = {e.name: e for e in _BUILTINS}
# The guide's 13, in the guide's order (docs and tests use this list).
GUIDE_EVENT_TYPES: tuple[str, ...] = tuple(e.name for e in _BUILTINS[:13])


def data_schema_document(event: EventType) -> dict[str, Any]:
    """The standalone JSON Schema document for an event type's `data`."""
    schema = copy.deepcopy(event.schema)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID_PREFIX + f"events/{event.name}.schema.json",
        "title": f"{event.name} data",
        **schema,
        "examples": [event.example],
    }


def sample_envelope(event: EventType) -> dict[str, Any]:
    """An envelope of the event type, as delivered, for template checks and the test endpoint."""
    return {
        "id": "evt_sample0000000000000000",
        "event": event.name,
        "timestamp": "2024-01-15T10:30:00.000Z",
        "data": copy.deepcopy(event.example),
    }
