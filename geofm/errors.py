"""Errors a user can cause and fix (bad config, bad run folder, missing model files).

Every `geofm` command prints a `UserError` as one line on stderr and exits 2, instead of a
traceback (`geofm.commands.guarded`); the library raises them like any exception. This
module imports nothing heavy, so the command layer can name them before jax loads.
"""

from __future__ import annotations

__all__ = ["UserError", "MissingModelError"]


class UserError(Exception):
    """Marks an exception whose message is the whole story for a user (no traceback needed)."""


class MissingModelError(UserError, ImportError):
    """A model's files (e.g. the packaged text encoder) are not installed; the message says how."""
