"""The `geofm` subcommands (one module each, see geofm.cli) and what they share."""

from __future__ import annotations

import logging
import sys


def setup_logging(quiet: bool) -> None:
    """geofm's INFO lines to stderr, or WARNING with --quiet; other libraries' INFO (jax's backend
    probing, orbax's per-save / per-restore chatter through absl) hidden either way."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("geofm").setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
