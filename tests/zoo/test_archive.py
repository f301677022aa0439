"""`fpbench zoo export` / `fpbench zoo pull` (bench/zoo/archive.py, docs/sharing.md) on the session's smoke zoo.

Every archive is exported once from the smoke zoo; hostile variants are rewritten from it in memory.
A refused pull must leave an existing zoo byte for byte as it was and extract nothing anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import secrets
import shutil
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.cli import main
from bench.zoo.archive import ArchiveError, export_zoo, pull_zoo
from bench.zoo.store import ZooStore
from tests.conftest import SMOKE, smoke_overrides
from tests.tar_helpers import Member, flip, members, rehash, rewrite, write


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (the store's lock file aside) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def archive(smoke_zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = smoke_zoo.store.root
    return export_zoo(root.name, root.parent, tmp_path_factory.mktemp("archive") / "smoke.tar").path


def first_checkpoint(items: list[Member]) -> int:
    return next(i for i, (m, _) in enumerate(items) if m.name.endswith(".safetensors"))


def test_export_pull_round_trip_is_byte_identical(archive, smoke_zoo, smoke_root, tmp_path):
    records = smoke_zoo.store.records()
    index = json.loads(members(archive)[0][1])
    source = next(r for r in records.values() if r["role"] == "source")
    head = (index["format"], index["zoo"], index["dataset"], index["models"])
    assert head == ("fpbench-zoo-archive", "smoke", "digits", len(records))
    assert index["split_hashes"] == source["split_hashes"] and index["recipe"] is None and index["fpbench_version"]
    original = tree(smoke_zoo.store.root)
    assert set(index["files"]) == set(original)  # manifest, every checkpoint and its .json
    assert all(index["files"][k] == {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)} for k, v in original.items())
    assert str(smoke_root).encode() not in archive.read_bytes()  # no absolute path of this machine

    report = pull_zoo(str(archive), tmp_path / "zoo", progress=False)
    assert tree(tmp_path / "zoo" / "smoke") == original and report.models == len(records) and not report.identical
    again = export_zoo("smoke", tmp_path / "zoo", tmp_path / "again.tar")
    assert again.path.read_bytes() == archive.read_bytes()  # the same zoo gives the same archive bytes
    assert sorted(os.listdir(tmp_path / "zoo")) == ["smoke"]  # no temp folder left


def test_pulled_zoo_is_built_for_the_recipe(archive, smoke_zoo, tmp_path, capsys):
    assert main(["zoo", "pull", f"file://{archive}", "--zoo-dir", str(tmp_path / "zoo")]) == 0
    # methods without defender pools: the recipe plans the session zoo's models less any pools other tests added
    n = sum(r["role"] != "pool" for r in smoke_zoo.store.records().values())
    assert main(["zoo", str(SMOKE), "--list", *smoke_overrides(tmp_path, "methods=[random]")]) == 0
    assert f"{n} models, {n} built" in capsys.readouterr().out
    store = ZooStore(tmp_path / "zoo" / "smoke")
    assert store.unbuilt(smoke_zoo.plan.jobs) == []


@pytest.fixture
def http_root(archive) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_pull_over_http(archive, smoke_zoo, http_root, tmp_path, capsys):
    url = f"{http_root}/smoke.tar?download=1"  # a query string: taken for a key=value override by the parser
    assert main(["zoo", "pull", url, "--zoo-dir", str(tmp_path / "zoo"), "--name", "shared"]) == 0
    assert tree(tmp_path / "zoo" / "shared") == tree(smoke_zoo.store.root)
    assert "verified and installed" in capsys.readouterr().out
    assert main(["zoo", "pull", f"{http_root}/missing.tar", "--zoo-dir", str(tmp_path / "zoo")]) == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_existing_zoo_identical_or_refused(archive, tmp_path, capsys):
    zoo = tmp_path / "zoo"
    assert main(["zoo", "pull", str(archive), "--zoo-dir", str(zoo)]) == 0
    assert main(["zoo", "pull", str(archive), "--zoo-dir", str(zoo)]) == 0
    assert "already there, identical" in capsys.readouterr().out
    meta = next((zoo / "smoke" / "models").glob("*.json"))
    meta.write_text(meta.read_text() + " ")
    before = tree(zoo / "smoke")
    assert main(["zoo", "pull", str(archive), "--zoo-dir", str(zoo)]) == 2
    err = capsys.readouterr().err
    assert "already exists with other content" in err and "--name smoke-2" in err
    assert tree(zoo / "smoke") == before and sorted(os.listdir(zoo)) == ["smoke"]


def _flip_with_index(items: list[Member]) -> list[Member]:
    i = first_checkpoint(items)
    items[i] = (items[i][0], flip(items[i][1]))
    return rehash(items)


def _flip_only(items: list[Member]) -> list[Member]:
    i = first_checkpoint(items)
    items[i] = (items[i][0], flip(items[i][1]))
    return items


def _index_hash_edited(items: list[Member]) -> list[Member]:
    index = json.loads(items[0][1])
    name = items[first_checkpoint(items)][0].name
    index["files"][name]["sha256"] = "0" * 64
    return [(items[0][0], json.dumps(index).encode()), *items[1:]]


def _named(name: str, **attrs: object) -> Callable[[list[Member]], list[Member]]:
    def edit(items: list[Member]) -> list[Member]:
        info = tarfile.TarInfo(name)
        for key, value in attrs.items():
            setattr(info, key, value)
        return rehash([*items, (info, b"evil" if info.isfile() else b"")])
    return edit


# an absolute member name unique to this test run, so a leftover of another run cannot fail it
EVIL_ABSOLUTE = f"/tmp/fpbench-evil-{os.getpid()}-{secrets.token_hex(4)}"
HOSTILE = {
    "checkpoint flipped, archive.json rehashed": (_flip_with_index, "manifest.jsonl records sha256"),
    "checkpoint flipped": (_flip_only, "tampered with"),
    "archive.json hash edited": (_index_hash_edited, "0" * 64),
    "../evil": (_named("../evil"), "'../evil' is not a safe relative name"),
    "absolute name": (_named(EVIL_ABSOLUTE), "not a safe relative name"),
    "symlink": (_named("models/link.safetensors", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a link"),
    "hard link": (_named("models/hard.json", type=tarfile.LNKTYPE, linkname="manifest.jsonl"), "is a link"),
    "device": (_named("models/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=5), "not a plain file"),
    "extra file": (_named("notes.txt"), "files the manifest does not name"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_refused_and_existing_zoo_untouched(case, archive, tmp_path, capsys):
    edit, needle = HOSTILE[case]
    zoo = tmp_path / "work" / "zoo"
    assert pull_zoo(str(archive), zoo, progress=False).models > 0
    before = tree(zoo / "smoke")
    bad = rewrite(archive, tmp_path / "bad.tar", edit)
    assert main(["zoo", "pull", str(bad), "--zoo-dir", str(zoo)]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(bad) in err
    assert tree(zoo / "smoke") == before and sorted(os.listdir(zoo)) == ["smoke"]
    assert not (tmp_path / "work" / "evil").exists() and not Path(EVIL_ABSOLUTE).exists()
    assert not (tmp_path / "evil").exists()


def test_tampered_checkpoint_message_names_both_hashes(archive, tmp_path):
    items = members(archive)
    i = first_checkpoint(items)
    flipped = flip(items[i][1])
    bad = write(tmp_path / "bad.tar", rehash([*items[:i], (items[i][0], flipped), *items[i + 1:]]))
    with pytest.raises(ArchiveError) as err:
        pull_zoo(str(bad), tmp_path / "zoo", progress=False)
    assert items[i][0].name in str(err.value) and hashlib.sha256(flipped).hexdigest() in str(err.value)
    assert hashlib.sha256(items[i][1]).hexdigest() in str(err.value)  # what the manifest records
    assert not (tmp_path / "zoo").exists()  # the --zoo-dir a refused pull made is gone again


@pytest.fixture
def zoo_copy(smoke_zoo, tmp_path) -> Path:
    target = tmp_path / "zoo" / "smoke"
    shutil.copytree(smoke_zoo.store.root, target)
    return target


def _corrupt(zoo: Path) -> str:
    path = next((zoo / "models").glob("*.safetensors"))
    path.write_bytes(flip(path.read_bytes()))
    return path.name


def _remove(zoo: Path) -> str:
    path = next((zoo / "models").glob("*.safetensors"))
    path.unlink()
    return "unbuilt"


def _orphan(zoo: Path) -> str:
    (zoo / "models" / "0123456789ab.safetensors").write_bytes(b"x")
    return "not part of the zoo's manifest"


def _local_path(zoo: Path) -> str:
    text = (zoo / "manifest.jsonl").read_text()
    (zoo / "manifest.jsonl").write_text(text.replace('"provenance": "', f'"provenance": "{zoo.parent.resolve()}/', 1))
    return "absolute path"


@pytest.mark.parametrize("damage", [_corrupt, _remove, _orphan, _local_path], ids=lambda f: f.__name__)
def test_export_refuses_a_zoo_that_is_not_whole(damage, zoo_copy, tmp_path, capsys):
    needle = damage(zoo_copy)
    out = tmp_path / "out"
    assert main(["zoo", "export", "smoke", "--zoo-dir", str(zoo_copy.parent), "--out", str(out / "s.tar")]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() or os.listdir(out) == []  # no archive, no temp file


def test_export_refuses_unknown_zoo_and_bad_usage(smoke_zoo, tmp_path, capsys):
    zoo_dir = str(smoke_zoo.store.root.parent)
    assert main(["zoo", "export", "nope", "--zoo-dir", zoo_dir]) == 2
    assert "No zoo 'nope'" in capsys.readouterr().err
    assert main(["zoo", "export", "--zoo-dir", zoo_dir]) == 2
    assert main(["zoo", "pull"]) == 2
    assert main(["zoo", "pull", str(tmp_path / "missing.tar")]) == 2
    assert "not found" in capsys.readouterr().err


def test_wandb_needs_network_in_offline_modes(tmp_path, monkeypatch, capsys):
    for mode in ("disabled", "offline"):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert main(["zoo", "pull", "wandb://team/proj/smoke-zoo:v0", "--zoo-dir", str(tmp_path / "zoo")]) == 2
        err = capsys.readouterr().err
        assert f"WANDB_MODE={mode}" in err and "needs the network and a W&B account" in err
    assert main(["zoo", "pull", "wandb://team/smoke-zoo", "--zoo-dir", str(tmp_path / "zoo")]) == 2
    assert "wandb://entity/project/artifact:version" in capsys.readouterr().err


def test_huggingface_client_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(ArchiveError, match="pip install huggingface_hub"):
        pull_zoo("hf://owner/repo/smoke.tar", tmp_path / "zoo", progress=False)
    with pytest.raises(ArchiveError, match="hf://owner/repo"):
        pull_zoo("hf://owner", tmp_path / "zoo", progress=False)
    with pytest.raises(ArchiveError, match="unknown scheme 'ftp://'"):
        pull_zoo("ftp://host/smoke.tar", tmp_path / "zoo", progress=False)
