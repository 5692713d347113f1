"""Collect `geofm kg` run folders into bench/results/kg_<job>.json and the CAT / best-model summary.

    python bench/kg_collect.py --runs DIR [--runs DIR2 ...] --machine "one NVIDIA H200, 13 jobs at once"

Each DIR holds one folder per job (as written by bench/kg_device.sh: DIR/<job>/results.json and
DIR/<job>.log); a later --runs overrides an earlier one for the same job. Writes one JSON per job
(the run's results.json minus the per-relation breakdown of the router, plus the published
reference, the machine and the command) and bench/results/kg_summary.json: the CAT comparison
(relative test MRR over its best fixed-geometry variant, parameter overhead) and the best-model
targets. A job whose run died is recorded with its log tail, never dropped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Published test metrics (MRR, H@1, H@3, H@10) for the rows we reproduce or compare with.
PUBLISHED = {
    "atth_fb15k237": {"source": "Chami et al. 2020, Table 3 (d=32)", "mrr": 0.324, "hits@1": 0.236, "hits@3": 0.354, "hits@10": 0.501},
    "roth_fb15k237": {"source": "Chami et al. 2020, Table 3 (d=32)", "mrr": 0.314, "hits@1": 0.223, "hits@3": 0.346, "hits@10": 0.497},
    "complex_big_fb15k237": {"source": "Lacroix et al. 2018 (ComplEx-N3, rank 1000, 100 epochs)", "mrr": 0.37, "hits@10": 0.56},
    "complex_big_wn18rr": {"source": "Lacroix et al. 2018 (ComplEx-N3, rank 2000)", "mrr": 0.48, "hits@10": 0.57},
    "complex_rp_fb15k237": {"source": "Chen et al. 2021 (ComplEx-N3 + relation prediction, rank 1000, 500 epochs)", "mrr": 0.388},
    "complex_b1000_fb15k237": {"source": "Chen et al. 2021 (ComplEx-N3 without relation prediction, their grid)", "mrr": 0.366},
}
REPRODUCTIONS = ("atth_fb15k237", "roth_fb15k237")
CAT = {ds: {"cat": f"cat_{ds}", **{v: f"cat_{v.lower()}_{ds}" for v in ("E", "H", "S")}} for ds in ("wn18rr", "fb15k237")}
BEST_TARGETS = {"wn18rr": 0.50, "fb15k237": 0.37}
BEST_CANDIDATES = {"wn18rr": ("complex_big_text_wn18rr", "complex_big_wn18rr", "roth_wn18rr_d32", "atth_wn18rr_d32", "ensemble_wn18rr"),
                   "fb15k237": ("complex_big_fb15k237", "complex_rp_fb15k237", "complex_b1000_fb15k237", "atth_fb15k237",
                                "roth_fb15k237", "ensemble_fb15k237")}


def _job_record(job: str, folder: Path, machine: str) -> dict:
    res_path, log_path = folder / job / "results.json", folder / f"{job}.log"
    log_tail = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
    config = Path(__file__).resolve().parents[1] / "configs" / "kg" / f"{job}.yaml"
    command = f"geofm kg --config configs/kg/{job}.yaml --json" if config.exists() else None  # else: see the note
    if not res_path.exists():
        return {"job": job, "status": "failed", "log_tail": log_tail, "machine": machine, "command": command}
    res = json.loads(res_path.read_text())
    if "weights" in res:  # a fusion written by `geofm kg-ensemble` (kg_device.sh FUSE=)
        command = res.get("command")
    rec = {"job": job, "status": "ok", **res, "machine": machine, "command": command}
    if job in PUBLISHED:
        rec["published"] = PUBLISHED[job]
        if job in REPRODUCTIONS:
            rec["reproduced_within_0.01"] = abs(res["test"]["mrr"] - PUBLISHED[job]["mrr"]) <= 0.01
    return rec


def _record(records: dict[str, dict], job: str) -> dict | None:
    """This collection's record of `job`, else the committed one (e.g. an earlier session's runs)."""
    if job in records:
        return records[job]
    path = RESULTS / f"kg_{job}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _mrr(records: dict[str, dict], job: str) -> float | None:
    rec = _record(records, job)
    if not rec or rec.get("status", "ok") != "ok":
        return None
    return (rec["test"] if "test" in rec else rec["ensemble"]["test"])["mrr"]  # bench/kg_ensemble.py nests it


def summarize(records: dict[str, dict]) -> dict:
    """CAT vs its fixed-geometry variants, and the best model per dataset vs its target."""
    cat = {}
    for ds, jobs in CAT.items():
        variants = {v: _mrr(records, j) for v, j in jobs.items() if v != "cat"}
        ok = {v: m for v, m in variants.items() if m is not None}
        best_v = max(ok, key=ok.get) if ok else None
        m_cat = _mrr(records, jobs["cat"])
        params = {v: (_record(records, j) or {}).get("num_params") for v, j in jobs.items()}
        cat[ds] = {
            "test_mrr": {"cat": m_cat, **variants},
            "best_fixed_variant": best_v,
            "relative_gain_over_best_variant": (m_cat / ok[best_v] - 1) if m_cat is not None and best_v else None,
            "target_relative_gain": 0.10,
            "num_params": params,
            "param_overhead_vs_best_variant": (params["cat"] / params[best_v] - 1) if best_v and params.get("cat") and params.get(best_v) else None,
            "epochs_run": {v: (_record(records, j) or {}).get("epochs_run") for v, j in jobs.items()},
        }
    best = {}
    for ds, jobs in BEST_CANDIDATES.items():
        scores = {j: _mrr(records, j) for j in jobs}
        scores = {j: m for j, m in scores.items() if m is not None}
        top = max(scores, key=scores.get) if scores else None
        best[ds] = {"candidates_test_mrr": scores, "best": top, "best_test_mrr": scores.get(top), "target": BEST_TARGETS[ds],
                    "met": bool(top and scores[top] >= BEST_TARGETS[ds])}
    jobs = sorted({j for v in CAT.values() for j in v.values()} | {j for v in BEST_CANDIDATES.values() for j in v})
    machines = {j: machine_dict(rec.get("machine")) for j in jobs if (rec := _record(records, j)) is not None}
    return {"cat": cat, "best_model": best, "machine_per_job": machines}


def machine_dict(machine: str | dict | None) -> dict | None:
    """One shape for every job's machine: a CPU bench's `machine_info()` dict as it is, a device
    run's --machine words as {"description": words}."""
    return {"description": machine} if isinstance(machine, str) else machine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", action="append", required=True, help="folder of job folders (repeatable; later wins)")
    p.add_argument("--machine", required=True, help="what ran them, in words (device, how many jobs shared it)")
    p.add_argument("--note", default="", help="free text stored in every record")
    p.add_argument("--no-summary", action="store_true", help="write the per-job JSONs only (kg_summary.json untouched)")
    args = p.parse_args(argv)
    records: dict[str, dict] = {}
    for folder in map(Path, args.runs):
        for job in sorted({q.stem for q in folder.glob("*.log")}):
            records[job] = _job_record(job, folder, args.machine) | ({"note": args.note} if args.note else {})
    RESULTS.mkdir(exist_ok=True)
    for job, rec in records.items():
        (RESULTS / f"kg_{job}.json").write_text(json.dumps(rec, indent=1))
    for job, rec in sorted(records.items()):
        t = rec.get("test", {})
        print(f"{job:28s} {rec['status']:6s} test MRR {t.get('mrr', float('nan')):.4f} epochs {rec.get('epochs_run')}")
    if args.no_summary:
        return 0
    summary = summarize(records) | {"machine": args.machine, "jobs": sorted(records), "note": args.note}  # jobs: this collection
    (RESULTS / "kg_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: {d: {kk: vv for kk, vv in v.items() if kk in ('relative_gain_over_best_variant', 'best', 'best_test_mrr', 'met')}
                          for d, v in summary[k].items()} for k in ("cat", "best_model")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
