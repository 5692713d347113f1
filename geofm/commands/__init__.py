"""The `geofm` subcommands (one module each, see geofm.cli) and what they share."""

from __future__ import annotations

import logging
import sys


def setup_logging(quiet: bool) -> None:
    """INFO to stderr, or WARNING with --quiet; orbax's INFO lines (absl) hidden either way."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save / per-restore chatter
