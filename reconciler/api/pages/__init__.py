"""The status page: integrations at a glance, in a browser, served by the daemon at `/`.

Server-rendered HTML (Jinja2) over the same views the API answers with; one stylesheet and
one small script, both served by the daemon (no build step, no CDN). Reading works without
JavaScript; the script shows times in the viewer's zone and follows an integration's log
live over the API's Server-Sent Events stream.

The pages are not API: their routes are kept out of the OpenAPI document
(`include_in_schema=False`), and PAGE_ROUTES is apart from the API's ROUTES.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from reconciler.api.pages import views

PAGE_ROUTES: list[BaseRoute] = [
    Route("/", views.index, methods=["GET"], include_in_schema=False),
    Route("/api/docs", views.api_docs, methods=["GET"], include_in_schema=False),
    Route("/sign-in", views.sign_in_form, methods=["GET"], include_in_schema=False),
    Route("/sign-in", views.sign_in, methods=["POST"], include_in_schema=False),
    Route("/sign-out", views.sign_out, methods=["POST"], include_in_schema=False),
    Route("/static/{name}", views.static, methods=["GET"], include_in_schema=False),
    Route("/integrations/{id}", views.integration, methods=["GET"], include_in_schema=False),
    Route("/integrations/{id}/log", views.log_stream, methods=["GET"], include_in_schema=False),
    Route("/integrations/{id}/test", views.action_test, methods=["POST"], include_in_schema=False),
    Route("/integrations/{id}/suspend", views.action_suspend, methods=["POST"], include_in_schema=False),
    Route("/integrations/{id}/resume", views.action_resume, methods=["POST"], include_in_schema=False),
    Route("/integrations/{id}/replay", views.action_replay, methods=["POST"], include_in_schema=False),
]

__all__ = ["PAGE_ROUTES"]
