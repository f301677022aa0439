"""Where `fpbench zoo pull` and `fpbench fingerprint pull` get an archive from.

A path, ``file://``, ``http(s)://``, ``wandb://`` or ``hf://``.

Each fetcher only brings the archive's bytes into a temporary folder (or names the local file);
nothing here trusts them: `bench.tar_archive` and its callers verify every member before anything is installed.
W&B and Hugging Face are imported only when their scheme is used.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench.tar_archive import ArchiveError

SCHEMES = ("a local path", "file://PATH", "https://URL", "http://URL", "wandb://entity/project/artifact:version",
           "hf://owner/repo[/file]", "hf://datasets/owner/repo[/file]")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
HTTP_TIMEOUT_S = 60.0  # per connect and per read: a stalled server fails instead of hanging
PROGRESS_FROM_BYTES = 32 << 20  # downloads this large (or of unknown size) show a tqdm bar
_BLOCK = 1 << 20


def fetch(uri: str, workdir: Path, progress: bool = True) -> Path:
    """The local archive file `uri` names, downloaded into `workdir` when it is remote.

    Args:
        uri: one of `SCHEMES`.
        workdir: an empty temporary folder for downloads (deleted by the caller).
        progress: show a progress bar for large downloads.

    Raises:
        ArchiveError: an unknown scheme, a missing file, a failed download; the message names the URI and the fix.
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme == "":
        return _local(Path(uri), uri)
    if scheme == "file":
        parts = urllib.parse.urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ArchiveError(f"{uri}: a file:// URI names a file of this machine (file:///path), not of host "
                               f"{parts.netloc!r}; use https:// for another machine.")
        return _local(Path(urllib.request.url2pathname(parts.path)), uri)
    if scheme in ("http", "https"):
        return _http(uri, workdir / "download.tar", progress)
    if scheme == "wandb":
        return _wandb(uri, workdir / "wandb")
    if scheme == "hf":
        return _huggingface(uri, workdir / "hf")
    raise ArchiveError(f"{uri}: unknown scheme '{scheme}://'. An archive is pulled from {', '.join(SCHEMES)}.")


def _local(path: Path, uri: str) -> Path:
    if not path.is_file():
        what = "a folder, not an archive file" if path.is_dir() else "not found"
        raise ArchiveError(f"{uri}: {what}. Give the .tar file `fpbench zoo export` or `fpbench fingerprint export` wrote "
                           "(or a URL of one).")
    return path


def _http(uri: str, target: Path, progress: bool) -> Path:
    """Stream `uri` to `target`, refusing before the download when its announced size exceeds the free disk."""
    request = urllib.request.Request(uri, headers={"User-Agent": "fpbench-pull"})
    try:
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)  # noqa: S310 (http/https only, checked above)
    except urllib.error.HTTPError as err:
        raise ArchiveError(f"{uri}: the server answered HTTP {err.code} ({err.reason}). Check the URL.") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ArchiveError(f"{uri}: cannot download ({reason}). Check the URL and the network, or download the "
                           "file another way and pull it by its path.") from None
    with response:
        size = int(response.headers.get("Content-Length") or 0) or None
        free = shutil.disk_usage(target.parent).free
        if size is not None and size > free:
            raise ArchiveError(f"{uri}: {size:,} bytes to download, {free:,} free there ({target.parent}). Free "
                               "disk space, or pull onto a larger disk (--zoo-dir / --cache-dir).")
        bar = _bar(size, uri) if progress and (size is None or size >= PROGRESS_FROM_BYTES) else None
        got = 0
        try:
            with open(target, "wb") as out:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    out.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
        except OSError as err:
            raise ArchiveError(f"{uri}: the download broke off after {got:,} bytes ({err}). Try again.") from None
        finally:
            if bar is not None:
                bar.close()
    if size is not None and got != size:
        raise ArchiveError(f"{uri}: the server announced {size:,} bytes and sent {got:,}. Try again.")
    return target


def _bar(total: int | None, uri: str):  # noqa: ANN202 (a tqdm bar)
    from tqdm import tqdm

    name = urllib.parse.urlsplit(uri).path.rsplit("/", 1)[-1] or "archive"
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}")


def _wandb(uri: str, folder: Path) -> Path:
    """A W&B artifact (`wandb://entity/project/artifact:version`) holding one archive."""
    spec = uri[len("wandb://"):]
    parts = spec.split("/")
    if len(parts) != 3 or not all(parts) or ":" not in parts[2]:
        raise ArchiveError(f"{uri}: expected wandb://entity/project/artifact:version (e.g. "
                           "wandb://my-team/fpbench/smoke-zoo:v0).")
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("disabled", "offline", "dryrun"):
        raise ArchiveError(f"{uri}: downloading a W&B artifact needs the network and a W&B account, but "
                           f"WANDB_MODE={mode}. Set WANDB_MODE=online and run `wandb login`, or download the artifact "
                           f"where that works (`wandb artifact get {spec}`) and pull its .tar file by path.")
    try:
        import wandb
    except ImportError:
        raise ArchiveError(f"{uri}: W&B is not installed; `pip install wandb`, then `wandb login`.") from None
    try:
        downloaded = wandb.Api().artifact(spec).download(root=str(folder))
    except Exception as err:  # wandb raises its own types for login, network and name errors
        raise ArchiveError(f"{uri}: W&B could not give the artifact ({type(err).__name__}: {err}). Check the name "
                           "(entity/project/artifact:version), `wandb login` and the network.") from None
    return _single_archive(Path(downloaded), uri)


def _huggingface(uri: str, folder: Path) -> Path:
    """A file of a Hugging Face repo: `hf://[datasets/]owner/repo[@revision][/path/in/repo]`."""
    rest, repo_type = uri[len("hf://"):], "model"
    if rest.startswith("datasets/"):
        rest, repo_type = rest[len("datasets/"):], "dataset"
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts):
        raise ArchiveError(f"{uri}: expected hf://owner/repo[/file] (or hf://datasets/owner/repo[/file]; "
                           "a revision as repo@rev).")
    repo, _, revision = parts[1].partition("@")
    repo_id, filename = f"{parts[0]}/{repo}", "/".join(parts[2:]) or None
    try:
        import huggingface_hub as hub
    except ImportError:
        raise ArchiveError(f"{uri}: the Hugging Face client is not installed; `pip install huggingface_hub`, "
                           "or download the file another way and pull it by its path.") from None
    try:
        if filename is None:
            names = [n for n in hub.list_repo_files(repo_id, repo_type=repo_type, revision=revision or None)
                     if n.endswith(ARCHIVE_SUFFIXES)]
            if len(names) != 1:
                raise ArchiveError(f"{uri}: the repo holds {len(names)} archive files ({names[:5]}); name one: "
                                   f"hf://{repo_id}/FILE.")
            filename = names[0]
        path = hub.hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision or None,
                                   local_dir=str(folder))
    except ArchiveError:
        raise
    except Exception as err:  # not found, gated, offline (HF_HUB_OFFLINE), network
        raise ArchiveError(f"{uri}: Hugging Face could not give {filename or 'the file list'} of {repo_id} "
                           f"({type(err).__name__}: {err}). Check the repo and file, the network and "
                           "`huggingface-cli login` for a private repo.") from None
    return Path(path)


def _single_archive(folder: Path, uri: str) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))
    if len(found) != 1:
        raise ArchiveError(f"{uri}: the artifact holds {len(found)} archive files "
                           f"({[p.name for p in found][:5]}); it should hold the one .tar `fpbench zoo export` or "
                           "`fpbench fingerprint export` wrote.")
    return found[0]
