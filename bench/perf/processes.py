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


def run_measured(command: list[str], log_path: Path, timeout_s: float, cwd: Path | None = None,
                 env: dict[str, str] | None = None, placeholders: dict[Path, str] | None = None) -> dict[str, Any]:
    """Run `command` (output to `log_path`); wall seconds, peak RSS (MB) of its largest process, exit code.

    Args:
        command: the program and its arguments.
        log_path: where its stdout and stderr go; its folder is recorded as `<workdir>`.
        timeout_s: killed after this many seconds (`timed_out` is then true).
        cwd: its working folder; None: this process's.
        env: its whole environment; None: this process's.
        placeholders: more folders recorded by a name instead of their path (a git worktree as `<baseline>`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    names = {str(log_path.parent): "<workdir>", **{str(folder): name for folder, name in (placeholders or {}).items()}}
    with open(log_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
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
    tail = [_named(line, names)  # the command's output names its scratch folder
            for line in log_path.read_text(errors="replace").splitlines()[-25:]]
    return {"wall_seconds": seconds, "peak_rss_mb": usage.ru_maxrss / scale, "returncode": proc.returncode,
            "timed_out": timed_out, "command": portable_command(command, log_path.parent, placeholders), "log_tail": tail}


def portable_command(command: list[str], workdir: Path, placeholders: dict[Path, str] | None = None) -> str:
    """The command as recorded: `python` for this interpreter, repository paths relative, the temporary
    work folder as `<workdir>` and each folder of `placeholders` by its name (records never hold this machine's paths)."""
    names = {str(workdir): "<workdir>", **{str(folder): name for folder, name in (placeholders or {}).items()}}
    words = ["python" if word == sys.executable else _named(word, names) for word in command]
    return " ".join(portable_argv(["python", *words[1:]]))


def _named(text: str, names: dict[str, str]) -> str:
    """`text` with each folder of `names` replaced by its name, the longest first (a folder inside another)."""
    for folder in sorted(names, key=len, reverse=True):
        text = text.replace(folder, names[folder])
    return text


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"fpbench-perf-{name}-"))


def scratch_paths(root: Path) -> list[str]:
    return [f"paths.zoo_dir={root / 'zoo'}", f"paths.results_dir={root / 'results'}", f"paths.cache_dir={root / 'cache'}",
            "compute.trainer.enable_progress_bar=false", "eval.progress=false"]
