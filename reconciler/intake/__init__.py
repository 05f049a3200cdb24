"""Intake: every event, whatever its source, checked, routed and committed with its deliveries."""

from __future__ import annotations

from reconciler.intake.committer import Accepted, Handoff, Intake, IntakeStopped

__all__ = ["Accepted", "Handoff", "Intake", "IntakeStopped"]
