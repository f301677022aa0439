"""The benchmark suite: each benchmark writes a well-formed JSON with positive figures.

`perf` tests (`pytest -m perf`) run the real sizes and write `local_results/perf/<name>.json` (or under
$FPBENCH_PERF_RESULTS_DIR, e.g. `results` to publish); they assert only that figures exist, never a
time (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from bench.config import ConfigError
from bench.perf import BENCHMARKS, DEFAULT_RUN_ATTR, default_order, in_default_run, parse_overrides, run_perf
from bench.registry import RegistryError
from tests.conftest import REPO, SMOKE

MACHINE_KEYS = {"cpu_count", "torch_threads", "torch", "device", "load_average"}


def _read(path: Path) -> dict:
    record = json.loads(path.read_text())
    assert record["schema_version"] == 1 and record["command"].startswith("fpbench perf ")
    assert MACHINE_KEYS <= set(record["machine"])
    return record


def test_train_throughput_writes_figures_and_a_ratio(tmp_path):
    """`fpbench perf` with the cheapest benchmark at tiny sizes: Fashion-MNIST owner images, one epoch each way."""
    overrides = [f"perf.recipe={SMOKE}", "data.name=fashion_mnist", "perf.train_images=256", "perf.train_epochs=1",
                 "perf.repeats=1", f"paths.cache_dir={tmp_path / 'cache'}", "compute.trainer.enable_progress_bar=false"]
    from bench.cli import main

    assert main(["-q", "perf", "--results-dir", str(tmp_path / "results"), "train_throughput", *overrides]) == 0
    record = _read(tmp_path / "results" / "perf" / "train_throughput.json")
    figures = record["figures"]
    assert record["status"] == "ok" and figures["images"] == 256 and figures["dataset"] == "fashion_mnist"
    for kind in ("lightning", "plain"):
        assert figures[kind]["images_per_second"] > 0 and figures[kind]["seconds_per_epoch"] > 0
    assert figures["ratio_time_per_epoch"] > 0 and isinstance(figures["within_target"], bool)


def test_bad_names_and_settings_fail_before_work(tmp_path):
    with pytest.raises(RegistryError, match="Did you mean 'generation'"):
        run_perf(["generaton"], tmp_path)
    with pytest.raises(ConfigError, match=r"Unknown key 'train_imgs' in the benchmark settings .* Did you mean 'train_images'"):
        parse_overrides(["perf.train_imgs=3"])
    settings, recipe = parse_overrides(["perf.repeats=2", "--zoo.source.epochs=1", "perf.methods=[akh]"])
    assert settings.repeats == 2 and settings.methods == ["akh"] and recipe == ["zoo.source.epochs=1"]
    assert not (tmp_path / "perf").exists()
    # text settings are kept as typed: a digits-only git sha is not YAML's octal number 0123456 = 42798
    settings, _ = parse_overrides(["perf.baseline_ref=0123456", "perf.recipe=007.yaml"])
    assert settings.baseline_ref == "0123456" and settings.recipe == "007.yaml"
    assert parse_overrides(["perf.baseline_ref=null"])[0].baseline_ref is None


# -- the suite (pytest -m perf) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def perf_dirs(tmp_path_factory):
    # Like `fpbench perf`, the suite writes local figures; FPBENCH_PERF_RESULTS_DIR=results publishes.
    results = Path(os.environ.get("FPBENCH_PERF_RESULTS_DIR", REPO / "local_results"))
    scratch = tmp_path_factory.mktemp("perf")
    overrides = [f"paths.zoo_dir={scratch / 'zoo'}", f"paths.cache_dir={scratch / 'cache'}",
                 f"paths.results_dir={scratch / 'results'}", "tracking.wandb.mode=disabled",
                 "compute.trainer.enable_progress_bar=false", "eval.progress=false"]
    return results, overrides


def _positive_numbers(figures: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures[key])


def _check_train_throughput(figures: dict) -> None:
    _positive_numbers(figures, "ratio_time_per_epoch")
    _positive_numbers(figures["lightning"], "images_per_second")
    _positive_numbers(figures["plain"], "images_per_second")


def _check_methods(rate: str):
    def check(figures: dict) -> None:
        assert figures["methods"] and not figures["errors"]
        for method, numbers in figures["methods"].items():
            assert numbers[rate] is None or numbers[rate] > 0, method
            _positive_numbers(numbers, "seconds")
    return check


def _check_adv_tra_batching(figures: dict) -> None:
    assert figures["runs"] and isinstance(figures["meets_target"], bool)
    for numbers in figures["runs"]:
        _positive_numbers(numbers, "ratio", "threads")
        assert numbers["batched"]["fingerprints"] > 0 and numbers["sequential"]["fingerprints"] > 0
        assert 0 < numbers["ratio_vs_fastest_sequential"] <= numbers["ratio"]  # its own one-at-a-time run is a candidate


def _check_zoo_throughput(figures: dict) -> None:
    assert not figures["errors"] and figures["accuracy"]["abs_diff_from_before"]["workers"]["max"] == 0.0
    _positive_numbers(figures["speedup"], "workers", "after")


def _check_executor_ray(figures: dict) -> None:
    assert figures["same_ids"] and figures["max_test_acc_diff"] <= 0.02
    _positive_numbers(figures, "speedup_ray_vs_local", "ratio_ray_to_local_time")


# What a benchmark's figures must hold beyond "status ok, some figures" (optional: a new benchmark runs without one).
FIGURE_CHECKS = {
    "train_throughput": _check_train_throughput,
    "generation": _check_methods("fingerprints_per_second"),
    "verification": _check_methods("queries_per_second"),
    "adv_tra_batching": _check_adv_tra_batching,
    "quickstart": lambda figures: _positive_numbers(figures, "wall_seconds", "peak_rss_mb"),
    "zoo_profile": lambda figures: (_positive_numbers(figures["breakdown"], "job_seconds"),
                                    _positive_numbers(figures["flops"], "step_gflops")),
    "zoo_throughput": _check_zoo_throughput,
    "executor_ray": _check_executor_ray,
}


def suite_names() -> list[str]:
    """Every registered benchmark: the default run in its order, then the opt-in ones by name."""
    default = default_order()
    return [*default, *(name for name in BENCHMARKS.names() if name not in default)]


@pytest.mark.perf
@pytest.mark.parametrize("name", suite_names())
def test_benchmark(name, perf_dirs, benchmark):
    if name == "executor_ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    results, overrides = perf_dirs
    paths = benchmark.pedantic(run_perf, args=([name], results, overrides), rounds=1, iterations=1)
    record = _read(paths[name])
    assert record["status"] == "ok", record.get("error")
    figures = record["figures"]
    assert isinstance(figures, dict) and figures, f"benchmark {name} returned no figures"
    FIGURE_CHECKS.get(name, lambda figures: None)(figures)
    benchmark.extra_info.update({k: v for k, v in figures.items() if isinstance(v, (int, float, bool))})


# -- what the runner needs of every registered benchmark (cheap, not perf) ------------------------
@pytest.mark.parametrize("name", BENCHMARKS.names())
def test_every_benchmark_is_runnable_and_described(name):
    """A name the registry and the JSON file share, a one-line description (`fpbench perf` lists it) and the
    `(run: PerfRun) -> dict` signature `run_perf` calls; a default-run position, when set, is an int."""
    import inspect

    benchmark = BENCHMARKS.get(name)
    assert name.isidentifier() and name == benchmark.__name__, f"{name}: register the function under its own name"
    assert BENCHMARKS.describe()[name], f"benchmark {name} has no docstring: its first line is its description"
    assert list(inspect.signature(benchmark).parameters) == ["run"], f"benchmark {name} must take (run: PerfRun)"
    position = getattr(benchmark, DEFAULT_RUN_ATTR, None)
    assert position is None or isinstance(position, int), f"{name}: in_default_run takes an int position"
    assert name not in FIGURE_CHECKS or name in default_order(), "FIGURE_CHECKS names a benchmark not in the default run"


def test_default_run_is_the_marked_benchmarks_in_order():
    """`fpbench perf` with no names runs today's eight, in today's order; the rest are opt-in."""
    assert default_order() == ["train_throughput", "generation", "verification", "adv_tra_batching", "quickstart",
                               "executor_ray", "zoo_profile", "zoo_throughput"]
    assert {"cli_start", "deployment"} <= set(BENCHMARKS.names()) - set(default_order())
    assert set(FIGURE_CHECKS) <= set(BENCHMARKS.names())


def test_a_new_benchmark_joins_the_default_run_by_its_position(tmp_path):
    """Marking a benchmark `in_default_run` is the only step: it then runs with no names, at its position."""
    @in_default_run(15)
    @BENCHMARKS.register("tiny_probe")
    def tiny_probe(run) -> dict:
        """A probe (test only)."""
        return {"calls": 1}

    try:
        order = default_order()
        assert order.index("tiny_probe") == order.index("train_throughput") + 1
        assert order.index("tiny_probe") == order.index("generation") - 1
        assert run_perf(["tiny_probe"], tmp_path) == {"tiny_probe": tmp_path / "perf" / "tiny_probe.json"}
        assert _read(tmp_path / "perf" / "tiny_probe.json")["figures"] == {"calls": 1}
    finally:
        BENCHMARKS._items.pop("tiny_probe")
        BENCHMARKS._descriptions.pop("tiny_probe")


def test_records_hold_no_path_of_this_machine(tmp_path):
    """Perf JSON is committed under results/: the command line, settings and subprocess commands are
    recorded relative to the repository, the interpreter as `python`, a scratch folder as `<workdir>`."""
    import sys
    import tempfile

    from bench.perf import REPO, portable_argv, portable_settings
    from bench.perf.processes import portable_command

    argv = [str(REPO / ".venv" / "bin" / "fpbench"), "perf", "generation", f"perf.recipe={REPO / 'recipes' / 'smoke.yaml'}"]
    assert portable_argv(argv) == ["fpbench", "perf", "generation", "perf.recipe=recipes/smoke.yaml"]
    settings = portable_settings({"recipe": str(REPO / "recipes" / "quickstart.yaml"), "repeats": 3})
    assert settings == {"recipe": "recipes/quickstart.yaml", "repeats": 3}
    command = [sys.executable, "-m", "bench", "run", str(REPO / "recipes" / "quickstart.yaml"),
               f"paths.zoo_dir={tmp_path / 'zoo'}"]
    assert portable_command(command, tmp_path) == "python -m bench run recipes/quickstart.yaml paths.zoo_dir=<workdir>/zoo"
    for path in (REPO / "results" / "perf").glob("*.json"):  # the committed records
        text = path.read_text()
        assert str(REPO) not in text and sys.executable not in text, path.name
        assert tempfile.gettempdir() + "/" not in text, f"{path.name} names a scratch folder of this machine"


def test_perf_writes_local_figures_unless_told_to_publish():
    """A plain `fpbench perf` never replaces the committed figures under results/perf/."""
    from bench.cli import _parse

    assert _parse(["perf", "generation"]).results_dir == "local_results"
    assert _parse(["perf", "--results-dir", "results", "generation"]).results_dir == "results"


def test_zoo_profile_splits_a_quickstart_job_into_parts(tmp_path):
    """`fpbench perf zoo_profile` in quick mode (a shrunk quickstart source job): every part timed, shares of
    the job's wall time consistent, FLOP counts from the hooks (no timing asserted)."""
    from bench.perf.zoo_profile import forward_macs

    overrides = ["data.splits.owner=512", "data.splits.test=256", "zoo.source.epochs=1", "perf.repeats=1",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    record = _read(run_perf(["zoo_profile"], tmp_path / "results", overrides)["zoo_profile"])
    assert record["status"] == "ok", record.get("error")
    figures = record["figures"]
    assert figures["images"] == 512 and figures["epochs"] == 1 and figures["dataset"] == "fashion_mnist"
    assert figures["torch_threads"] == 1 and figures["finish"]["behaviour_record_inputs"] == 256
    breakdown = figures["breakdown"]
    parts = breakdown["parts"]
    assert set(parts) == {"data_loading", "forward_backward", "optimizer", "plain_loop_rest", "lightning_overhead",
                          "evaluation", "checkpoint"}
    assert sum(p["seconds"] for p in parts.values()) == pytest.approx(breakdown["job_seconds"])
    assert sum(p["share"] for p in parts.values()) == pytest.approx(1.0)
    for key in ("data_loading", "forward_backward", "optimizer", "evaluation", "checkpoint"):
        assert parts[key]["seconds"] > 0, key
    _positive_numbers(figures["data"], "loader_seconds_per_epoch", "tensor_slicing_seconds_per_epoch")
    _positive_numbers(figures["flops"], "train_flops_per_image", "step_gflops", "job_gflops")
    _positive_numbers(figures["flops"]["matmul"], "gflops")
    _positive_numbers(figures["startup"]["import_bench_cli"], "seconds")
    assert figures["startup"]["ray"]["measured"] == (importlib.util.find_spec("ray") is not None)
    linear = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    assert forward_macs(linear, (1, 8, 8)) == 4 * 8 * 8 * 9 + 4 * 8 * 8 * 10


def test_zoo_throughput_builds_one_zoo_three_ways(tmp_path):
    """`fpbench perf zoo_throughput` on a tiny digits zoo: every path builds every model; the worker
    processes alone train the same weights (accuracy difference 0), and the figures add up."""
    from tests.zoo.test_executors import SMALL

    overrides = [f"perf.recipe={SMOKE}", *SMALL, "methods=[ipguard]", "perf.repeats=2", "tracking.wandb.mode=disabled",
                 f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    record = _read(run_perf(["zoo_throughput"], tmp_path / "results", overrides)["zoo_throughput"])
    assert record["status"] == "ok", record.get("error")
    figures = record["figures"]
    assert figures["models"] == 5 and not figures["errors"]
    for name in ("before", "workers", "after"):
        path = figures["paths"][name]
        assert path["models_built"] == 5 and path["returncode"] == 0 and path["rounds"] == 2, (name, path["runs"])
        _positive_numbers(path, "models_per_hour", "images_per_second", "gflops", "wall_seconds")
    assert figures["speedup"]["before"] == 1.0 and figures["speedup_per_round"]["before"] == [1.0, 1.0]
    accuracy = figures["accuracy"]
    assert accuracy["abs_diff_from_before"]["workers"]["max"] == 0.0  # the same bytes, so the same accuracies
    assert len(accuracy["per_model"]) == 5 and accuracy["abs_diff_from_before"]["after"]["n"] == 5
    _positive_numbers(figures["matmul_job_threads"], "gflops")
    logs = json.dumps([run["log_tail"] for path in figures["paths"].values() for run in path["runs"]])
    assert "<workdir>/zoo/smoke" in logs and "fpbench-perf-throughput-" not in logs  # the scratch folder, portable
    assert figures["baseline"] == {"ref": None, "how": "overrides: compute.workers=1 compute.trainer.memory_format=contiguous"}
    assert figures["paths"]["before"]["how"] == figures["baseline"]["how"]


def test_run_measured_runs_in_the_given_folder_and_environment(tmp_path):
    """`cwd` and `env` reach the subprocess; a folder of `placeholders` is recorded by its name, the log's as `<workdir>`."""
    import sys

    from bench.perf.processes import run_measured

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-c", "import os; print(os.getcwd()); print(os.environ['FPBENCH_PROBE'])",
               f"{tmp_path / 'scratch' / 'zoo'}", f"{elsewhere / 'recipe.yaml'}"]
    measured = run_measured(command, tmp_path / "scratch" / "run.log", 60, cwd=elsewhere,
                            env={**os.environ, "FPBENCH_PROBE": "probe-value"}, placeholders={elsewhere: "<baseline>"})
    assert measured["returncode"] == 0 and not measured["timed_out"]
    printed = (tmp_path / "scratch" / "run.log").read_text().splitlines()
    assert Path(printed[0]).samefile(elsewhere) and printed[1] == "probe-value"
    assert measured["log_tail"] == ["<baseline>", "probe-value"]
    assert measured["command"].endswith(" <workdir>/zoo <baseline>/recipe.yaml") and str(tmp_path) not in measured["command"]
    plain = run_measured([sys.executable, "-c", "import os; print(os.getcwd())"], tmp_path / "plain.log", 60)
    assert Path((tmp_path / "plain.log").read_text().strip()).samefile(os.getcwd()) and plain["returncode"] == 0


def _git_checkout() -> bool:
    from bench.perf import REPO as PACKAGE_REPO
    from bench.perf.zoo_throughput import _git

    top = _git(PACKAGE_REPO, "rev-parse", "--show-toplevel")
    return top is not None and Path(top).resolve() == PACKAGE_REPO.resolve()


def test_a_bad_baseline_ref_fails_before_any_work(tmp_path, monkeypatch):
    """perf.baseline_ref that is no commit of the checkout (or a recipe the revision lacks) is refused with the fix,
    before the zoo is planned, a work folder made or a build started."""
    from bench.perf import PerfRun
    from bench.perf import zoo_throughput as zt

    for name in ("run_measured", "prepare", "workdir", "add_worktree"):
        monkeypatch.setattr(zt, name, lambda *args, name=name, **kwargs: pytest.fail(f"{name} called"))
    settings, _ = parse_overrides([f"perf.recipe={SMOKE}", "perf.baseline_ref=no-such-ref-xyz"])
    assert settings.baseline_ref == "no-such-ref-xyz" and parse_overrides([])[0].baseline_ref is None
    with pytest.raises(ConfigError, match=r"perf\.baseline_ref='no-such-ref-xyz' .* leave perf\.baseline_ref unset"):
        zt.zoo_throughput(PerfRun(settings=settings, overrides=[], results_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"needs the bench package in a git checkout, and .* is not one"):
        zt.check_baseline("HEAD", str(SMOKE), repo=tmp_path)
    if _git_checkout():
        with pytest.raises(ConfigError, match=r"perf\.baseline_ref='HEAD' \([0-9a-f]{12}\) has no recipes/no_such\.yaml"):
            zt.check_baseline("HEAD", str(REPO / "recipes" / "no_such.yaml"))
        outside = str(tmp_path / "mine.yaml")
        assert zt.check_baseline("HEAD", outside)[2:] == (outside, False)  # a recipe outside the repository, as given
        assert zt.check_baseline("HEAD", "smoke")[2:] == ("recipes/smoke.yaml", True)  # a built-in name: its file


@pytest.mark.skipif(not _git_checkout(), reason="perf.baseline_ref needs the repository as a git checkout")
def test_zoo_throughput_builds_before_with_the_code_of_baseline_ref(tmp_path, monkeypatch):
    """perf.baseline_ref=HEAD: `before` runs in a worktree of that commit, first on PYTHONPATH, without the PATHS
    overrides; `workers` and `after` run here as before; the worktree is gone afterwards, and model ids the old
    code names otherwise are errors, not a crash. The builds are faked: each command is replaced by a probe
    that prints which `bench` it imports."""
    import subprocess
    import sys

    from bench.perf import REPO as PACKAGE_REPO
    from bench.perf import PerfRun
    from bench.perf import zoo_throughput as zt
    from bench.perf.processes import portable_command, run_measured
    from tests.zoo.test_executors import SMALL

    planned: list[str] = []
    real_prepare = zt.prepare

    def prepare(*args, **kwargs):
        dm, plan, pools = real_prepare(*args, **kwargs)
        planned.extend(job.model_id for job in plan.jobs)
        return dm, plan, pools

    calls = []
    probe = [sys.executable, "-c", "import bench, os; print(bench.__file__); print(os.getcwd())"]

    def fake_run_measured(command, log_path, timeout_s, cwd=None, env=None, placeholders=None):
        checked_out = subprocess.run(["git", "-C", str(cwd), "rev-parse", "HEAD"], capture_output=True, text=True,
                                     check=True).stdout.strip() if cwd else None
        calls.append({"command": command, "cwd": cwd, "env": env, "checked_out": checked_out})
        measured = run_measured(probe, log_path, timeout_s, cwd=cwd, env=env, placeholders=placeholders)
        return {**measured, "command": portable_command(command, log_path.parent, placeholders)}

    def fake_accuracies(zoo_dir):
        old_code = zoo_dir.parent.parent.name == "before"
        return {**{model_id: 0.5 for model_id in planned}, **({"an-old-id": 0.5} if old_code else {})}

    work = tmp_path / "work"
    monkeypatch.setattr(zt, "prepare", prepare)
    monkeypatch.setattr(zt, "run_measured", fake_run_measured)
    monkeypatch.setattr(zt, "_accuracies", fake_accuracies)
    monkeypatch.setattr(zt, "workdir", lambda name: work)
    monkeypatch.setattr(zt, "_matmul_gflops", lambda repeats, threads: {"threads": threads, "seconds": 1.0, "gflops": 1.0})
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    settings, _ = parse_overrides([f"perf.recipe={SMOKE}", "perf.baseline_ref=HEAD", "perf.repeats=1"])
    overrides = [*SMALL, "methods=[ipguard]", f"paths.data_dir={tmp_path / 'data'}"]
    figures = zt.zoo_throughput(PerfRun(settings=settings, overrides=overrides, results_dir=tmp_path))

    commit = figures["baseline"]["commit"]
    assert figures["baseline"] == {"ref": "HEAD", "commit": commit, "how": f"code of {commit[:12]}"} and len(commit) == 40
    assert figures["paths"]["before"]["how"] == f"code of {commit[:12]}"
    before, workers, after = calls
    worktree = work / "baseline"
    assert before["cwd"] == worktree and before["checked_out"] == commit
    assert before["env"]["PYTHONPATH"] == os.pathsep.join([str(worktree), "/already/there"])
    assert before["command"][5] == str(worktree / "recipes" / "smoke.yaml")  # python -m bench -q zoo <recipe>
    assert before["command"][6:] == [*overrides, f"paths.data_dir={(tmp_path / 'data').resolve()}",
                                     *zt.scratch_paths(work / "before" / "0")]  # no PATHS["before"] overrides
    for call, name in ((workers, "workers"), (after, "after")):
        assert call["cwd"] is None and call["env"] is None and call["command"][5] == str(SMOKE), name
        assert call["command"][-2:] == zt.PATHS[name]
    runs = {name: figures["paths"][name]["runs"][0] for name in zt.PATHS}
    assert runs["before"]["log_tail"] == ["<baseline>/bench/__init__.py", "<baseline>"]  # the worktree's code ran
    assert runs["after"]["log_tail"][0] == str(PACKAGE_REPO / "bench" / "__init__.py")
    assert runs["before"]["command"].startswith("python -m bench -q zoo <baseline>/recipes/smoke.yaml ")
    assert str(work) not in json.dumps(figures["paths"])  # the scratch folder and the worktree, portable
    assert list(figures["errors"]) == ["before[0] model ids"] and "an-old-id" in figures["errors"]["before[0] model ids"]
    assert figures["accuracy"]["abs_diff_from_before"]["workers"] == {"n": 5, "mean": 0.0, "median": 0.0, "max": 0.0}
    assert not work.exists()
    listed = subprocess.run(["git", "-C", str(PACKAGE_REPO), "worktree", "list", "--porcelain"], capture_output=True,
                            text=True, check=True).stdout
    assert str(worktree) not in listed
