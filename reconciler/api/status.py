"""System-wide reads: the probes, scaffolding templates, the health status document, Prometheus metrics."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler import __version__
from reconciler.api.common import Runtime, admin_only, admin_only_when, problem, runtime_of, status_word
from reconciler.delivery.replica import DEAD_AFTER_SECONDS
from reconciler.manifests.scaffold import Scaffold, scaffolds
from reconciler.metrics import Sources, render
from reconciler.reconcile.conditions import ConditionType, condition
from reconciler.registry import PassResult
from reconciler.store import StoreUnavailable
from reconciler.store.history import iso, queue_totals

SUCCESS_WINDOW_SECONDS = 24 * 3600.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(request: Request) -> Response:
    """Liveness: the process answers (open, like every probe)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness (open): 503 until the first reconcile pass has finished, and while the store
    does not answer a round trip, with the reason naming the store (never its password). A
    replica that cannot store events takes none from the load balancer meanwhile."""
    reconciler = runtime_of(request).reconciler
    passes = reconciler.passes
    if not reconciler.ready:
        why = "the first reconcile pass has not finished"
        if not reconciler.leading and reconciler.store.dialect != "sqlite":
            why += " (this replica follows the registry: no controller has stored a pass yet)"
        return problem(503, "Not ready", why)
    try:
        await reconciler.store.ping()
    except StoreUnavailable as exc:
        response = problem(503, "Not ready", str(exc), "store-unavailable")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return JSONResponse({"status": "ready", "passes": passes})


@admin_only
async def templates(request: Request) -> Response:
    """The scaffolding templates of `reconciler new`, as YAML text and as data."""
    items = [template_view(scaffold) for scaffold in scaffolds().values()]
    return JSONResponse({"items": items, "count": len(items)})


@admin_only
async def health(request: Request) -> Response:
    """The health status document (health_status), read on the store's threads."""
    runtime = runtime_of(request)
    if runtime.health is not None:  # measured now, not up to ASSESS_EVERY_SECONDS ago
        await runtime.health.assess()
    return JSONResponse(await runtime.reconciler.store.call(health_status, runtime))


def _metrics_need_admin(runtime: Runtime) -> bool:
    return runtime.metrics_need_admin


@admin_only_when(_metrics_need_admin)
async def metrics(request: Request) -> Response:
    """Prometheus metrics, open unless `run --metrics-auth`; 503 when the store cannot be read."""
    runtime = runtime_of(request)
    try:
        body = await runtime.reconciler.store.call(render, metric_sources(runtime))
    except Exception:
        return problem(503, "Metrics unavailable", "the store could not be read; the daemon's log has the details")
    return Response(body, media_type=METRICS_TYPE)


def template_view(scaffold: Scaffold) -> dict[str, Any]:
    """One scaffolding template as the templates route lists it."""
    return {
        "name": scaffold.name,
        "description": scaffold.description,
        "kind": scaffold.data.get("kind"),
        "type": scaffold.data.get("type"),
        "yaml": scaffold.text,
        "json": scaffold.data,
        "command": f"reconciler new {scaffold.name} {scaffold.default_id}",
    }


def health_status(runtime: Runtime) -> dict[str, Any]:
    """The integration guide's health document: the config, the last pass, the queue, per-integration
    delivery health. Never a token or a secret: only when OAuth2 tokens expire. Runs on the
    store's threads (several reads)."""
    reconciler = runtime.reconciler
    snapshot = reconciler.snapshot
    store = reconciler.store.sync
    now = time.time()
    last = reconciler.last_pass
    per_queue = store.queue_by_integration(now)
    queue = queue_totals(per_queue)
    outcomes = store.attempt_outcomes(now - SUCCESS_WINDOW_SECONDS)
    expiries = runtime.engine.http.auth.expiries() if runtime.engine is not None else {}
    by_condition: Counter[str] = Counter()
    integrations = []
    for record in sorted(snapshot.registry.values(), key=lambda r: r.id):
        degraded = runtime.degraded(record.id)
        word = status_word(record, degraded)
        by_condition[word] += 1
        counts = outcomes.get(record.id, {})
        tried = sum(counts.values())
        ready = condition(record.conditions, ConditionType.READY) or {}
        telling = (degraded if word == "degraded" else None) or ready  # the condition that explains the word
        integrations.append(
            {
                "id": record.id,
                "status": word,
                "reason": telling.get("reason"),
                "message": telling.get("message"),
                "queue": per_queue.get(record.id, {"depth": 0, "oldestPendingSeconds": 0.0, "dead": 0}),
                "attempts24h": tried,
                "successRate24h": round(counts.get("delivered", 0) / tried, 4) if tried else None,
                "tokenExpiresAt": iso(expiries[record.id]) if record.id in expiries else None,
            }
        )
    problems = health_problems(last, by_condition, reconciler.config_dir)
    if reconciler.config_drift:
        problems.append(reconciler.config_drift)
    if runtime.source is not None and runtime.source.last_error:
        problems.append(f"git source: {runtime.source.last_error}")
    replicas = replica_views(*store.replicas())
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "checkedAt": iso(now),
        "config": {
            "directory": str(reconciler.config_dir),
            "revision": last.revision if last else None,
            "source": runtime.source.status() if runtime.source is not None else None,
        },
        "lastPass": None
        if last is None
        else {
            "at": iso(last.started_at),
            "trigger": last.trigger,
            "durationMs": round(last.duration_ms, 1),
            "ok": last.ok,
            "error": last.error,
            "integrations": last.integrations,
            "refused": last.refused,
            "waitingForSecrets": last.waiting,
            "filesRefused": last.files_refused,
            "dirtyFiles": last.dirty_files,
        },
        "passes": reconciler.passes,
        "leading": reconciler.leading,  # this replica reconciles (the controller); replicas of one store elect one
        "replica": runtime.replica.id if runtime.replica is not None else None,
        "leader": next((r["id"] for r in replicas if r["leader"]), None),
        "replicas": replicas,
        "integrationsByStatus": dict(sorted(by_condition.items())),
        "queue": queue,
        "integrations": integrations,
    }


def replica_views(now: float, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replicas on the store as the status document lists them; `now` is the database's
    clock, which their heartbeats were written by. A silent one is listed until a survivor
    takes its work over, as not alive and not leading."""
    views = []
    for row in rows:
        age = max(0.0, now - row["heartbeat_at"])
        alive = age <= DEAD_AFTER_SECONDS
        views.append(
            {
                "id": row["id"],
                "role": row["role"],
                "version": row["version"],
                "host": row["host"],
                "pid": row["pid"],
                "configRevision": row["config_revision"],
                "startedAt": iso(row["started_at"]),
                "lastHeartbeat": iso(row["heartbeat_at"]),
                "heartbeatAgeSeconds": round(age, 1),
                "alive": alive,
                "leader": bool(row["leader"]) and alive,
                "leases": row["leases"],
            }
        )
    return views


UNHEALTHY_WORDS = {  # status word -> what it means for the whole
    "degraded": "degraded: events are not getting through",
    "failing": "failing: not ready (see the Ready condition)",
    "pending": "waiting to be applied (see the Ready condition: a missing secret, a refused file)",
}


def health_problems(last: PassResult | None, by_status: Counter[str], config_dir: Path) -> list[str]:
    """Why the system is not ok, one line each; empty when it is. Never ok before the first
    pass, with a refused file, a failed pass, or an integration that is degraded, failing or
    waiting to be applied (suspended and inactive ones are what an operator asked for)."""
    if last is None:
        return ["no reconcile pass has finished yet"]
    problems = []
    if last.error is not None:
        problems.append(f"the last reconcile pass failed: {last.error}")
    for path in last.files_refused:
        problems.append(f"file refused: {path} (`reconciler validate {config_dir / path}` shows why)")
    for word, meaning in UNHEALTHY_WORDS.items():
        n = by_status.get(word, 0)
        if n:
            problems.append(f"{n} {'integration' if n == 1 else 'integrations'} {meaning}")
    return problems


def metric_sources(runtime: Runtime) -> Sources:
    """Where /metrics reads its figures; the callables run when the metrics are rendered."""
    reconciler = runtime.reconciler

    def by_status() -> Counter[str]:
        return Counter(
            status_word(record, runtime.degraded(record.id)) for record in reconciler.snapshot.registry.values()
        )

    intake, engine = runtime.intake, runtime.engine
    return Sources(
        passes=lambda: (reconciler.passes + reconciler.passes_raised, reconciler.pass_errors),
        last_pass=lambda: last_pass_counts(reconciler.last_pass),
        integrations=by_status,
        intake=(lambda: (intake.committed, intake.deliveries_queued)) if intake is not None else None,
        delivery=engine.stats if engine is not None else None,
        queue=reconciler.store.sync.queue_stats,  # rendered on the store's threads
        # the queue is the database's, not this process's: reported by the leader alone, as the
        # reconcile loop's election found it (asking the store would stand a worker in the election)
        leader=lambda: reconciler.leading,
        replica=(runtime.replica.id, runtime.replica.role, __version__) if runtime.replica is not None else None,
    )


def last_pass_counts(last: PassResult | None) -> tuple[int, int, int]:
    """Files refused, integrations refused, integrations waiting for secrets, as the last pass found them."""
    return (len(last.files_refused), len(last.refused), len(last.waiting)) if last else (0, 0, 0)
