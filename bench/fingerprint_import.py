"""External fingerprints: arrays made elsewhere, checked against a method's format and scored by the loop.

An imported fingerprint is an ordinary cached `Fingerprint` stored under
`<cache_dir>/fingerprints/<method>/imported-<id>/`, where `<id>` is the first 16 hex digits of the
sha256 of its tensors. A method entry `{name: adv_tra, fingerprint: imported-<id>}` (the loop-level
key `IMPORT_KEY`, kept out of the method's Config) makes the loop score it instead of generating one;
the key is part of the entry, so the result has its own config hash, file and leaderboard row.

Only methods whose score reads nothing but `inputs` and the source's `labels` can import
(`IMPORT_FORMATS`); docs/byo.md, "External fingerprints", says why the others cannot.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes

from bench.io import sha256_file
from bench.methods.base import IMPORT_KEY, Fingerprint, FingerprintIntegrityError

log = logging.getLogger(__name__)

IMPORT_ID = re.compile(r"^imported-[0-9a-f]{16}$")  # its value: imported-<16 hex of the tensors' sha256>
SUFFIXES = (".npy", ".safetensors")


@dataclass(frozen=True)
class ImportFormat:
    """The tensors a method's score reads: `inputs` of rank `input_rank`, `labels` of rank `input_rank - 3`.

    Attributes:
        input_rank: 5 for ADV-TRA ([N, S, C, H, W]: N trajectories of S samples), 4 for single points ([N, C, H, W]).
        shape_text: the shapes as the error messages and docs write them.
    """

    input_rank: int
    shape_text: str

    @property
    def label_rank(self) -> int:
        return self.input_rank - 3


POINTS = ImportFormat(4, "inputs [N, C, H, W] float in [0,1], labels [N] int")
IMPORT_FORMATS: dict[str, ImportFormat] = {
    "adv_tra": ImportFormat(5, "inputs [N, S, C, H, W] float in [0,1], labels [N, S] int"),
    "ipguard": POINTS,
    "akh": POINTS,
    "cae": POINTS,
}


class FingerprintImportError(ValueError):
    """External fingerprint arrays that do not fit the method's format or the recipe's data (CLI: exit 2)."""


def check_import_id(method: str, value: Any) -> str:
    """The entry's `fingerprint:` value, checked (a cheap recipe-time check; the files are checked by the loop).

    Raises:
        FingerprintImportError: the method cannot import, or the value is not `imported-<16 hex>`.
    """
    if method not in IMPORT_FORMATS:
        raise FingerprintImportError(
            f"method '{method}' cannot score an imported fingerprint (key '{IMPORT_KEY}'); methods that can: "
            f"{', '.join(IMPORT_FORMATS)}. Drop '{IMPORT_KEY}' from its entry.")
    if not isinstance(value, str) or not IMPORT_ID.match(value):
        raise FingerprintImportError(
            f"method '{method}': {IMPORT_KEY}={value!r} is not an imported fingerprint id (imported-<16 hex digits>); "
            "use the id `fpbench fingerprint import` printed.")
    return value


def imported_dir(cache_dir: str | os.PathLike, method: str, import_id: str) -> Path:
    """Where an imported fingerprint lives: `<cache_dir>/fingerprints/<method>/<import_id>/`."""
    return Path(cache_dir) / "fingerprints" / method / import_id


def load_imported(cache_dir: str | os.PathLike, method: str, import_id: str) -> Fingerprint:
    """The imported fingerprint an entry names, sha256-verified.

    Raises:
        FingerprintImportError: it is not in the cache, its files changed, or it is not an import.
    """
    folder = imported_dir(cache_dir, method, import_id)
    if not Fingerprint.exists(folder):
        raise FingerprintImportError(f"{method}: imported fingerprint {import_id} is not at {folder}. Import it "
                                     f"first: fpbench fingerprint import RECIPE --method {method} --inputs X --labels Y "
                                     "(with this recipe's paths.cache_dir).")
    try:
        fingerprint = Fingerprint.load(folder)
    except FingerprintIntegrityError as err:
        raise FingerprintImportError(f"{method}: imported fingerprint {import_id} is damaged: {err} Import it again.") from None
    if not fingerprint.meta.get("imported") or fingerprint.method != method:
        raise FingerprintImportError(f"{folder} holds a {fingerprint.method} fingerprint that was not imported; "
                                     "it cannot stand for an import.")
    return fingerprint


def check_imports_exist(entries: list[dict[str, Any]], cache_dir: str | os.PathLike) -> None:
    """Load (and so verify) every imported fingerprint the method entries name: a cheap check before any work.

    Raises:
        FingerprintImportError: one is missing or damaged.
    """
    for entry in entries:
        if entry.get(IMPORT_KEY):
            load_imported(cache_dir, entry["name"], entry[IMPORT_KEY])


def read_array(path: str | os.PathLike, role: str) -> torch.Tensor:
    """One array from `.npy` (no pickle) or `.safetensors` (one tensor, or one named `role`).

    Raises:
        FingerprintImportError: the file is missing, of another type, truncated or corrupted.
    """
    file = Path(path)
    if file.suffix not in SUFFIXES:
        raise FingerprintImportError(f"--{role} {file}: unsupported file type '{file.suffix}'; use one of "
                                     f"{', '.join(SUFFIXES)} (numpy.save or safetensors).")
    if not file.is_file():
        raise FingerprintImportError(f"--{role} {file} does not exist.")
    try:
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
                raise ValueError(f"dtype {getattr(array, 'dtype', type(array).__name__)} is not numeric")
            return torch.from_numpy(np.ascontiguousarray(array))
        tensors = load_file(str(file))
    except (ValueError, OSError, EOFError, SafetensorError) as err:
        raise FingerprintImportError(f"--{role} {file} cannot be read ({type(err).__name__}: {err}); it is truncated, "
                                     "corrupted or not an array file. Export it again.") from None
    if role in tensors:
        return tensors[role]
    if len(tensors) != 1:
        raise FingerprintImportError(f"--{role} {file} holds tensors {sorted(tensors)}; it needs one tensor, or one "
                                     f"named '{role}'.")
    return next(iter(tensors.values()))


def check_arrays(method: str, inputs: torch.Tensor, labels: torch.Tensor, image_shape: tuple[int, int, int],
                 num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels checked against the method's format and the recipe's data; returns them as float32/int64.

    Raises:
        FingerprintImportError: naming the bad shape, dtype or value and what is expected.
    """
    fmt = IMPORT_FORMATS[method]
    expect = f"{method} expects {fmt.shape_text} with [C, H, W] = {list(image_shape)} and {num_classes} classes"
    if inputs.dim() != fmt.input_rank or labels.dim() != fmt.label_rank:
        raise FingerprintImportError(f"inputs have shape {list(inputs.shape)} and labels {list(labels.shape)}: {expect}.")
    if tuple(inputs.shape[fmt.label_rank:]) != tuple(image_shape):
        raise FingerprintImportError(f"inputs' [C, H, W] are {list(inputs.shape[fmt.label_rank:])}, not the recipe's "
                                     f"data {list(image_shape)}: {expect}.")
    if tuple(inputs.shape[:fmt.label_rank]) != tuple(labels.shape) or labels.numel() == 0:
        raise FingerprintImportError(f"inputs' leading dims {list(inputs.shape[:fmt.label_rank])} do not match labels "
                                     f"{list(labels.shape)} (or they are empty): {expect}.")
    if not inputs.is_floating_point():
        raise FingerprintImportError(f"inputs have dtype {inputs.dtype}; {expect} (pixels as floats, not 0..255).")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise FingerprintImportError(f"labels have dtype {labels.dtype}; {expect} (class indices as integers).")
    inputs, labels = inputs.float(), labels.long()
    if not bool(torch.isfinite(inputs).all()):
        raise FingerprintImportError(f"inputs contain {int((~torch.isfinite(inputs)).sum())} NaN/inf values; {expect}.")
    if float(inputs.min()) < 0.0 or float(inputs.max()) > 1.0:
        raise FingerprintImportError(f"inputs range over [{float(inputs.min()):.4g}, {float(inputs.max()):.4g}]; "
                                     f"{expect} (fpbench's pixel space; normalisation is inside the model).")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise FingerprintImportError(f"labels range over [{int(labels.min())}, {int(labels.max())}]; {expect} "
                                     f"(0..{num_classes - 1}).")
    return inputs.contiguous(), labels.contiguous()


def build_imported(method: str, inputs_path: str | os.PathLike, labels_path: str | os.PathLike,
                   image_shape: tuple[int, int, int], num_classes: int) -> tuple[str, Fingerprint]:
    """Read and check the files; return `(import_id, fingerprint)` (nothing written).

    Raises:
        FingerprintImportError: an unknown method, an unreadable file or arrays that do not fit.
    """
    if method not in IMPORT_FORMATS:
        raise FingerprintImportError(f"method '{method}' cannot import a fingerprint; methods that can: "
                                     f"{', '.join(IMPORT_FORMATS)} (docs/byo.md, External fingerprints).")
    inputs, labels = check_arrays(method, read_array(inputs_path, "inputs"), read_array(labels_path, "labels"),
                                  image_shape, num_classes)
    tensors = {"inputs": inputs, "labels": labels}
    import_id = f"imported-{hashlib.sha256(tensors_to_bytes(tensors)).hexdigest()[:16]}"
    count = int(labels.shape[0])
    per = int(labels[0].numel())
    meta = {"imported": True, "import_id": import_id, "inputs_file": Path(inputs_path).name,
            "inputs_sha256": sha256_file(Path(inputs_path)), "labels_file": Path(labels_path).name,
            "labels_sha256": sha256_file(Path(labels_path)), "n_fingerprints": count, "n_requested": count,
            "queries_per_suspect": int(labels.numel()), "generation_seconds": 0.0}
    if method == "adv_tra":
        meta["samples_per_fingerprint"] = per
    return import_id, Fingerprint(method=method, tensors=tensors, meta=meta)


def write_imported(cache_dir: str | os.PathLike, import_id: str, fingerprint: Fingerprint) -> Path:
    """Save a checked import under the cache (the same id twice: the files are identical, rewritten atomically)."""
    folder = fingerprint.save(imported_dir(cache_dir, fingerprint.method, import_id))
    log.info("%s: imported fingerprint %s (%d queries per suspect) -> %s", fingerprint.method, import_id,
             fingerprint.meta["queries_per_suspect"], folder)
    return folder
