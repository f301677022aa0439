"""Performance benchmarks: `fpbench perf [NAME ...] [key=value ...]` or `pytest -m perf`.

Each benchmark writes `<results_dir>/perf/<name>.json`: its figures (rates and ratios, not only
times), the machine (CPUs, torch threads and version, device, load average) and the command.
`perf.<key>=value` overrides set the sizes (`PerfConfig`); every other override goes to the recipe
the benchmarks load (`perf.recipe`, the quickstart). No benchmark asserts a time (docs/architecture.md, style rule 10).

`base` holds the machinery (`BENCHMARKS`, `PerfConfig`, `PerfRun`, `run_perf`); each other module is
one benchmark, and this package imports them all so that the registry is complete.
"""

from bench.perf import (  # noqa: F401  (imported to register their benchmarks)
    adv_tra_batching,
    cli_start,
    deployment,
    executor_ray,
    generation,
    quickstart,
    train_throughput,
    verification,
    zoo_profile,
    zoo_throughput,
)
from bench.perf.base import (
    BENCHMARKS,
    GUARDS,
    ORDER,
    REPO,
    SCHEMA_VERSION,
    PerfConfig,
    PerfRun,
    machine_info,
    parse_overrides,
    portable_argv,
    portable_settings,
    run_perf,
    usable_cpus,
)

__all__ = ["BENCHMARKS", "GUARDS", "ORDER", "REPO", "SCHEMA_VERSION", "PerfConfig", "PerfRun", "machine_info",
           "parse_overrides", "portable_argv", "portable_settings", "run_perf", "usable_cpus"]
