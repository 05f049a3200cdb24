"""The JSON Schemas of the file format, served at /schemas/ for editors and tools.

Open, like /api/openapi.json: they describe the file format, nothing of what is deployed. The
path of each is its name under schemas/ in the repository and in its `$id`, so a file's
`# yaml-language-server: $schema=http://HOST:PORT/schemas/integration.schema.json` line works
from any repository while a daemon runs."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response

from reconciler.api.common import problem
from reconciler.manifests.schemagen import all_schemas, dumps

MEDIA_TYPE = "application/schema+json"


@functools.cache
def _documents() -> dict[str, bytes]:
    """Every schema by its name, generated from the models once, at the first request."""
    return {name: dumps(schema).encode() for name, schema in all_schemas().items()}


def _answer(name: str) -> Response:
    document = _documents().get(name)
    if document is None:
        names = ", ".join(sorted(_documents()))
        return problem(404, "Not found", f"no schema {name!r}; schemas: {names}", "not-found")
    return Response(document, media_type=MEDIA_TYPE)


async def file_format(request: Request) -> Response:
    """`GET /schemas/{name}`: integration.schema.json or eventtype.schema.json."""
    return _answer(request.path_params["name"])


async def event_data(request: Request) -> Response:
    """`GET /schemas/events/{name}`: the schema of a built-in event type's data."""
    return _answer("events/" + request.path_params["name"])
