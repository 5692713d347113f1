"""Gather one `bench/device_check.sh` output folder into bench/results/device_check.json.

Each call adds (or replaces) one labelled run: the machine's package versions and devices,
the pytest counts with every failing / erroring test and its first message line, and, when
present, the pretraining-step benchmark on the GPU and on the same machine's CPU cores
(samples/s per backbone and the GPU/CPU ratio, both from the same call).

    .venv/bin/python bench/device_collect.py --dir /work/.device/1 --label "8000b98, before GPU fixes" \
        --machine "one H100 80GB, 16 CPU cores"
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_summary(junit: Path) -> dict:
    """Counts and the failing tests of a junit XML file."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["seconds"] = round(sum(float(s.get("time", 0)) for s in suites), 1)
    bad = []
    for case in root.iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                msg = [m for m in (child.get("message") or "").strip().splitlines() if m.strip()]
                bad.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": child.tag,
                            "message": " | ".join(msg[:6] + [m for m in msg[6:] if "Max absolute" in m])[:500]})
    return {**counts, "not_passed": bad}


def pretrain_summary(gpu: Path, cpu: Path) -> dict:
    """samples/s of the jitted step per backbone on the GPU and on the host CPU, and their ratio."""
    g, c = json.loads(gpu.read_text()), json.loads(cpu.read_text())
    rows = {}
    for rg in g["results"]:
        rc = next((r for r in c["results"] if r["backbone"] == rg["backbone"]), None)
        if rc is None:  # not timed on the CPU side (its run was cut short)
            continue
        rows[rg["backbone"]] = {"gpu_samples_per_s": round(rg["samples_per_s_step"]),
                                "cpu_samples_per_s": round(rc["samples_per_s_step"]),
                                "gpu_over_cpu": round(rg["samples_per_s_step"] / rc["samples_per_s_step"], 2),
                                "compiles_over_epoch_gpu": rg["compiles_over_epoch"],
                                "batch_shapes_gpu": rg["batch_shapes"]}
    return {"datasets": g["datasets"], "inputs": g["inputs"], "config": g["config"],
            "cpu_count": c["machine"].get("cpu_count"), "peak_rss_gb_gpu_run": round(g["peak_rss_gb"], 2),
            "backbones": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="the folder device_check.sh wrote ($OUT)")
    p.add_argument("--label", required=True, help="what was run, e.g. the commit and what it fixes")
    p.add_argument("--machine", required=True, help="the device, in words")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "device_check.json"))
    args = p.parse_args()
    d = Path(args.dir)
    if not (d / "junit.xml").is_file():
        p.error(f"{d / 'junit.xml'}: not found (is --dir the device_check.sh output folder?)")
    run = {"label": args.label, "machine": args.machine,
           "versions": (d / "versions.txt").read_text().strip().splitlines() if (d / "versions.txt").is_file() else [],
           "pytest": pytest_summary(d / "junit.xml")}
    if (d / "pretrain_gpu.json").is_file() and (d / "pretrain_cpu.json").is_file():
        run["pretrain_step"] = pretrain_summary(d / "pretrain_gpu.json", d / "pretrain_cpu.json")
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.is_file() else {}
    res["what"] = ("bench/device_check.sh on an accelerator machine: the whole test suite (pytest-xdist) with that "
                   "machine's JAX / Flax, and the pretraining-step benchmark on its GPU vs its CPU cores")
    res.setdefault("runs", {})[args.label] = run
    out.write_text(json.dumps(res, indent=1) + "\n")
    t = run["pytest"]
    print(f"{args.label}: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped")


if __name__ == "__main__":
    main()
