"""`python -m finetune.zero_shot --config configs/zero_shot/<...>.yaml ...` (same flags as `geofm zero-shot`)."""

from __future__ import annotations

from geofm.commands.zero_shot import main

if __name__ == "__main__":
    raise SystemExit(main())
