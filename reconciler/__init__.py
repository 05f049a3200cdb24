"""The integration layer of a course management system, run the GitOps way."""

from __future__ import annotations

__version__ = "0.1.0"
