"""Performance benchmarks: `fpbench perf [NAME ...] [key=value ...]` or `pytest -m perf`.

Each benchmark writes `<results_dir>/perf/<name>.json`: its figures (rates and ratios, not only
times), the machine (CPUs, torch threads and version, device, load average) and the command.
`perf.<key>=value` overrides set the sizes (`PerfConfig`); every other override goes to the recipe
the benchmarks load (`perf.recipe`, the quickstart). No benchmark asserts a time (docs/architecture.md, style rule 10).

`base` holds the machinery (`BENCHMARKS`, `PerfConfig`, `PerfRun`, `run_perf`); each other module is
one benchmark, and this package imports every module it holds, sorted by name (`import_submodules`), so a
new benchmark is one new file. The modules named in `HELPERS` register nothing: `base`, and the perf zoo
and subprocess helpers the benchmarks share. `fpbench perf` with no names runs `default_order()`: the
benchmarks marked `@in_default_run(<position>)`, by position.
"""

from bench.perf.base import (
    BENCHMARKS,
    DEFAULT_RUN_ATTR,
    GUARDS,
    REPO,
    SCHEMA_VERSION,
    Benchmark,
    PerfConfig,
    PerfRun,
    default_order,
    in_default_run,
    machine_info,
    parse_overrides,
    portable_argv,
    portable_settings,
    run_perf,
    usable_cpus,
)
from bench.registry import import_submodules

HELPERS = ("base", "perf_zoo", "processes")  # modules that register nothing
import_submodules(__name__, __path__, HELPERS)

__all__ = ["BENCHMARKS", "DEFAULT_RUN_ATTR", "GUARDS", "REPO", "SCHEMA_VERSION", "Benchmark", "PerfConfig", "PerfRun",
           "default_order", "in_default_run", "machine_info", "parse_overrides", "portable_argv", "portable_settings",
           "run_perf", "usable_cpus"]
