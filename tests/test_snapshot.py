"""One owner of runtime state: readers see whole snapshots, whatever the watcher and operators do.

The reconciler publishes a new `Snapshot` with one assignment on the event loop after each
pass, suspension and removal. Here the real watcher sees files added and removed in bursts
while the delivery engine claims and sends, inbound lookups rebuild their index, events are
emitted and an operator suspends and resumes: no reader may see an exception or a snapshot
in which the registry and what runs disagree, and nothing published may change afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import types
import uuid
from pathlib import Path

import pytest

from reconciler.api.inbound import InboundIndex
from reconciler.reconcile.watch import watch
from reconciler.registry import Snapshot
from reconciler.store import AsyncStore, StoreOnLoop, open_store
from tests.pipeline import Pipeline, integration

ROUNDS = 12
PER_ROUND = 4


def export(iid: str, root: Path) -> str:
    return integration(f"""
        id: {iid}
        name: Export {iid}
        type: file
        config:
          url: file://{root}
        webhooks:
          - events: [user.registered]
        """)


def receiver(iid: str) -> str:
    return integration(f"""
        id: {iid}
        name: Inbound {iid}
        type: webhook
        receive:
          secret: ${{env:PATH_SECRET}}
          event: user.registered
        """)


def assert_whole(snapshot: Snapshot) -> None:
    """What runs is what the registry holds, at the same generation and suspension."""
    assert isinstance(snapshot.applied, types.MappingProxyType)
    assert isinstance(snapshot.registry, types.MappingProxyType)
    for integration_id, running in snapshot.applied.items():
        record = snapshot.registry.get(integration_id)
        assert record is not None, f"{integration_id} runs, but the registry of snapshot {snapshot.version} lacks it"
        assert record.generation == running.generation, f"{integration_id}: generations differ in one snapshot"
        assert running.suspended == snapshot.suspended(integration_id), f"{integration_id}: suspension half-applied"


def fingerprint(snapshot: Snapshot) -> str:
    return json.dumps(
        {
            i: [r.generation, r.spec_hash, r.conditions, r.last_attempted_revision]
            for i, r in sorted(snapshot.registry.items())
        },
        sort_keys=True,
        default=str,
    )


async def watcher_ready(p: Pipeline) -> None:
    """The watcher reports changes: a probe file is written until a watch-triggered pass applies it."""
    probe = p.config / "probe.yaml"
    for attempt in range(200):
        probe.write_text(export("probe", p.config.parent / f"probe-{attempt}"))
        try:
            await p.until(lambda: "probe" in p.reconciler.snapshot.registry, timeout=1.0)
            break
        except AssertionError:
            continue
    probe.unlink()
    await p.until(lambda: "probe" not in p.reconciler.snapshot.registry)


def test_watcher_churn_never_shows_a_mixed_snapshot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "in_" + uuid.uuid4().hex + uuid.uuid4().hex
    exports = tmp_path / "exports"
    files = {"steady.yaml": export("steady", exports)}

    async def scenario() -> None:
        async with Pipeline(tmp_path, files, environ={"PATH_SECRET": secret}) as p:
            watcher = asyncio.create_task(watch(p.config, p.reconciler.trigger, p.stop))
            await watcher_ready(p)
            index = InboundIndex(p.reconciler)
            done = asyncio.Event()
            seen: dict[int, tuple[Snapshot, str]] = {}

            async def observe() -> None:
                while not done.is_set():
                    snapshot = p.reconciler.snapshot
                    assert_whole(snapshot)
                    seen.setdefault(snapshot.version, (snapshot, fingerprint(snapshot)))
                    for running in snapshot.applied.values():  # iterating across awaits
                        await asyncio.sleep(0)
                        assert snapshot.registry[running.id].generation == running.generation
                    await asyncio.sleep(0)

            async def look_up() -> None:
                while not done.is_set():
                    endpoint = index.lookup(secret)
                    assert endpoint is None or endpoint.id.startswith("in-")
                    await asyncio.sleep(0)

            async def emit() -> None:
                count = 0
                while not done.is_set():
                    await p.emit("user.registered", {"userId": count, "email": "a@b.example", "name": "A"})
                    count += 1

            async def operate() -> None:
                while not done.is_set():
                    await p.reconciler.suspend("steady", "test", "churn")
                    assert p.reconciler.snapshot.applied["steady"].suspended
                    await p.reconciler.resume("steady", "test", "churn")

            async def churn() -> None:
                try:
                    for round_ in range(ROUNDS):
                        names = [f"out-{round_}-{n}" for n in range(PER_ROUND)] + [f"in-{round_}"]
                        for name in names[:-1]:
                            (p.config / f"{name}.yaml").write_text(export(name, exports))
                        (p.config / f"{names[-1]}.yaml").write_text(receiver(names[-1]))
                        await p.until(lambda names=names: all(n in p.reconciler.snapshot.applied for n in names))
                        for name in names:
                            (p.config / f"{name}.yaml").unlink()
                        await p.until(lambda names=names: not any(n in p.reconciler.snapshot.registry for n in names))
                finally:
                    done.set()

            await asyncio.gather(churn(), observe(), look_up(), emit(), operate())
            p.stop.set()
            await watcher

            assert len(seen) > ROUNDS * 2, "the readers saw the snapshots change"
            for version, (snapshot, printed) in seen.items():
                assert fingerprint(snapshot) == printed, f"snapshot {version} changed after it was published"
            await p.until(lambda: p.statuses("steady").get("delivered", 0) > 0, "deliveries through the churn")

    with caplog.at_level(logging.WARNING, logger="reconciler"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


def test_a_snapshot_cannot_be_changed_in_place(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"steady.yaml": export("steady", tmp_path / "out")}) as p:
            snapshot = p.reconciler.snapshot
            with pytest.raises(TypeError):
                snapshot.applied["other"] = snapshot.applied["steady"]  # type: ignore[index]
            with pytest.raises(AttributeError):
                snapshot.applied["steady"].suspended = True  # type: ignore[misc]
            await p.reconciler.suspend("steady", "test", "one assignment")
            assert p.reconciler.snapshot is not snapshot and not snapshot.applied["steady"].suspended

    asyncio.run(scenario())


def test_a_store_call_on_the_event_loop_is_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    facade = AsyncStore(store)

    async def scenario() -> None:
        assert await facade.list_integrations() == []  # awaited: on the store's own threads
        with pytest.raises(StoreOnLoop, match="await it through AsyncStore"):
            store.list_integrations()  # on the loop's thread: refused, not a silent stall

    try:
        asyncio.run(scenario())
        assert store.list_integrations() == []  # with no loop running (the CLI), a plain call is fine
    finally:
        store.close()
