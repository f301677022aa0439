"""Running a benchmark's command in a subprocess: wall time, peak memory, exit code, a portable record."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.perf.base import portable_argv


def run_measured(command: list[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run `command` (output to `log_path`); wall seconds, peak RSS (MB) of its largest process, exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        timed_out = False
        while True:  # os.wait4 gives this child's own rusage (getrusage would mix in earlier children)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout_s:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    tail = [line.replace(str(log_path.parent), "<workdir>")  # the command's output names its scratch folder
            for line in log_path.read_text(errors="replace").splitlines()[-25:]]
    return {"wall_seconds": seconds, "peak_rss_mb": usage.ru_maxrss / scale, "returncode": proc.returncode,
            "timed_out": timed_out, "command": portable_command(command, log_path.parent), "log_tail": tail}


def portable_command(command: list[str], workdir: Path) -> str:
    """The command as recorded: `python` for this interpreter, repository paths relative, the temporary
    work folder as `<workdir>` (records never hold this machine's paths)."""
    words = ["python" if word == sys.executable else word.replace(str(workdir), "<workdir>") for word in command]
    return " ".join(portable_argv(["python", *words[1:]]))


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"fpbench-perf-{name}-"))


def scratch_paths(root: Path) -> list[str]:
    return [f"paths.zoo_dir={root / 'zoo'}", f"paths.results_dir={root / 'results'}", f"paths.cache_dir={root / 'cache'}",
            "compute.trainer.enable_progress_bar=false", "eval.progress=false"]
