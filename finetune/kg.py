"""`python -m finetune.kg --config configs/kg/<model>_<dataset>.yaml ...` (same flags as `geofm kg`)."""

from __future__ import annotations

from geofm.commands.kg import main

if __name__ == "__main__":
    raise SystemExit(main())
