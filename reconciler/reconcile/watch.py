"""File events trigger reconcile passes early (the periodic pass heals anything missed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import watchfiles

from reconciler.manifests.loader import EXTENSIONS

log = logging.getLogger("reconciler.watch")

# Events closer together than this make one pass: an editor's save or a `git pull` touching
# many files is one change. Small, because a change should be live in a fraction of a second.
DEBOUNCE_MS = 30
STEP_MS = 10


def _relevant(_change: watchfiles.Change, path: str) -> bool:
    """Integration files, and directories (a renamed or removed folder); not editor swap files."""
    name = Path(path).name
    if name.startswith("."):
        return False
    return name.endswith(EXTENSIONS) or "." not in name


async def watch(directory: Path, trigger: Callable[[], None], stop: asyncio.Event) -> None:
    """Call `trigger` after every batch of relevant changes under `directory`, until `stop`."""
    while not stop.is_set():
        if not directory.is_dir():
            await _sleep_or_stop(stop, 1.0)  # wait for the mount or checkout to appear
            continue
        try:
            async for _changes in watchfiles.awatch(
                directory,
                watch_filter=_relevant,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=stop,
                recursive=True,
                ignore_permission_denied=True,
            ):
                trigger()
        except (FileNotFoundError, RuntimeError) as exc:
            log.warning("watching %s stopped (%s); retrying", directory, exc)
            trigger()
            await _sleep_or_stop(stop, 1.0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
