"""`python -m pretrain --config configs/pretrain/<name>.yaml ...` (same flags as `geofm pretrain`)."""

from __future__ import annotations

from geofm.commands.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main())
