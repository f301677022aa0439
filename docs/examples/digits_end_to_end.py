"""fpbench's Python API end to end on sklearn's 8x8 digits (CPU, a few minutes the first time).

    python docs/examples/digits_end_to_end.py [--workdir DIR] [key=value ...]

Builds the smoke zoo (a source, its attacked copies, independent negatives), fingerprints the source
with AKH and IPGuard, verifies one derived and one independent suspect, then runs the benchmark and
prints the per-suspect scores. Everything is written under --workdir (default ./fpbench_example);
key=value overrides go to the recipe (e.g. paths.zoo_dir=zoo to reuse a zoo you built).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import bench

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "smoke.yaml"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="fpbench_example", help="where the zoo, cache and results go")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    paths = [f"paths.{key}={work / key.removesuffix('_dir')}" for key in ("zoo_dir", "results_dir", "cache_dir", "data_dir")]
    quiet = ["tracking.wandb.mode=disabled", "compute.trainer.enable_progress_bar=false", "eval.progress=false"]
    # Two cheap, gradient-light methods; IPGuard shrunk to 20 points so the example stays quick on a CPU.
    cfg = bench.load_recipe(RECIPE, [*paths, *quiet, *args.overrides, "methods=[akh,ipguard]",
                                     "methods.ipguard.n_fingerprints=20", "methods.ipguard.max_steps=200"])

    zoo = bench.build_zoo(cfg)  # trains what is missing; a second run reuses every model
    print(f"zoo {zoo.plan.name}: {len(zoo.plan.by_role('positive'))} positives, "
          f"{len(zoo.plan.by_role('negative'))} negatives under {zoo.store.root}")

    fingerprints = {name: bench.fingerprint(entry, cfg, zoo=zoo) for name, entry in
                    [("akh", "akh"), ("ipguard", dict(cfg.methods[1]))]}
    positive, negative = zoo.plan.by_role("positive")[0], zoo.plan.by_role("negative")[0]
    for job in (positive, negative):
        model = zoo.store.load_model(job.model_id)
        for name, fp in fingerprints.items():
            outcome = bench.verify(fp, model)
            print(f"{name:<8} {job.role:<8} {job.model_id}: score {outcome['score']:.3f} ({outcome['queries']} queries)")

    results, scores = bench.benchmark(cfg)  # every suspect, a result file per method, the leaderboard
    print(scores.groupby(["method", "role"])["score"].mean().unstack().round(3).to_string())

    akh_result = next(path for path, result in results.items() if result["method"]["name"] == "akh")
    decision = bench.verify(akh_result, zoo.store.load_model(positive.model_id), cache_dir=cfg.paths.cache_dir)
    print(f"akh on {positive.model_id}: {decision['decision']} (score {decision['score']:.3f} vs threshold "
          f"{decision['threshold']['threshold']:.3f} over {decision['threshold']['n_negative']} negatives)")
    return {"results": results, "scores": scores, "decision": decision}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("pytorch_lightning", "lightning.pytorch"):  # Lightning logs every fit at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    main()
