"""The `geofm` console script: dispatches to one module per subcommand.

Each subcommand lives in `geofm.commands.<name>` and exposes
`main(argv: list[str] | None) -> int`; modules are imported lazily so
`geofm --help` stays fast and one broken optional dependency cannot take
down the other commands.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("geofm.commands.demo", "run the main job on its embedded default"),
    "data": ("geofm.commands.data", "dataset statistics and downloads"),
    "encode": ("geofm.commands.encode", "encode node texts with the JAX text encoder"),
    "pretrain": ("geofm.commands.pretrain", "multi-domain GraphGlue pretraining"),
    "adapt": ("geofm.commands.adapt", "k-shot node classification with a pretrained run"),
    "zero-shot": ("geofm.commands.zero_shot", "zero-shot node classification"),
    "kg": ("geofm.commands.kg", "knowledge-graph completion fine-tuning"),
    "kg-ensemble": ("geofm.commands.kg_ensemble", "fuse trained KG runs (weights chosen on validation)"),
    "plot": ("geofm.commands.plot", "plots from a run folder"),
}


def _usage() -> str:
    lines = ["usage: geofm COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`geofm COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from geofm import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"geofm: unknown command {name!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("geofm.commands"):
            print(f"geofm: command {name!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)  # each command's main is `geofm.commands.guarded`
