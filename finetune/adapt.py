"""`python -m finetune.adapt RUN_DIR [--target NAME] ...` (same flags as `geofm adapt`)."""

from __future__ import annotations

from geofm.commands.adapt import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m finetune.adapt"))
