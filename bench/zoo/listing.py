"""`fpbench zoo --list`: the planned zoo as a table, with what is built and each model's accuracy."""

from __future__ import annotations

import pandas as pd

from bench.zoo.plan import ZooPlan
from bench.zoo.store import ZooStore


def zoo_frame(plan: ZooPlan, store: ZooStore) -> pd.DataFrame:
    """One row per planned model: id, role, kind/attack, arch, test accuracy, change vs source, label
    agreement with the source on the test split (blank in zoos built before it was recorded), status."""
    records = store.records()
    source_acc = records.get(plan.source.model_id, {}).get("test_acc")
    rows = []
    for job in plan.jobs:
        record = records.get(job.model_id)
        acc = record["test_acc"] if record else None
        delta = acc - source_acc if acc is not None and source_acc is not None and job.role != "source" else None
        agree = record.get("source_agreement") if record else None
        rows.append({
            "model_id": job.model_id,
            "role": job.role,
            "kind/attack": job.kind or job.attack or "",
            "arch": job.arch,
            "test_acc": f"{acc:.4f}" if acc is not None else "",
            "vs_source": f"{delta:+.4f}" if delta is not None else "",
            "source_agreement": f"{agree:.4f}" if agree is not None else "",
            "train_s": f"{record['train_seconds']:.1f}" if record else "",
            "status": "built" if record and store.checkpoint_path(job.model_id).is_file() else "planned",
        })
    return pd.DataFrame(rows)


def zoo_table(plan: ZooPlan, store: ZooStore) -> str:
    """The zoo table as fixed-width text."""
    frame = zoo_frame(plan, store)
    built = int((frame["status"] == "built").sum())
    header = f"zoo {plan.name} ({plan.dataset}) at {store.root}: {len(frame)} models, {built} built"
    return header + "\n" + frame.to_string(index=False)
