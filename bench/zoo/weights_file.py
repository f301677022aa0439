"""Reading a user's weights file (docs/byo.md, "Formats and security"): never unpickled, every problem named.

The format is told from the file's first bytes, not its suffix: a zip or pickle stream is a
`torch.save` file, read with `torch.load(weights_only=True)` only; an 8-byte header length followed
by `{` is safetensors, whose header is checked against the file size before anything is loaded.
A Lightning checkpoint (`{'state_dict': {...}, 'optimizer_states': ...}`) gives its `state_dict`.
Every refusal is a `ConfigError` naming the file as the user wrote it, the problem and the fix.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from bench.errors import ConfigError

SAVE_COMMANDS = ("`torch.save(model.state_dict(), 'model.pt')` or "
                 "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`")
EXPORT_HINT = f"Export the weights instead of the module: {SAVE_COMMANDS}."
LIGHTNING_HINT = ("A Lightning checkpoint whose hyper-parameters hold Python objects: save the net's weights "
                  "instead, `torch.save(module.model.state_dict(), 'model.pt')`.")

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")  # safetensors, state dicts, Lightning checkpoints
LIGHTNING_PREFIXES = ("model.", "net.")  # the attribute a LightningModule keeps its net in (fpbench: `model`)
MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit on its JSON header, in bytes
_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFSOCK: "a socket"}


def resolve_file(value: str, base_dir: str | None, where: str) -> Path:
    """`value` (relative to `base_dir`, the recipe's folder) as an existing regular file, else a ConfigError.

    The file is only `stat`ed, never opened, so a FIFO or device cannot block or stream forever.
    """
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = Path(os.path.normpath(Path(base_dir) / path))  # `..` through a folder not made yet (zoo import)
    _stat_regular(path, value, where)
    return path


def _stat_regular(path: Path, value: str, where: str) -> os.stat_result:
    """`path`'s stat (symlinks followed) if it is a regular file; else a ConfigError naming `value`."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where}: weights file '{value}' not found (looked at {path}). Paths are relative to the "
                          "recipe's folder; fix the path or copy the file there.") from None
    except OSError as err:
        raise ConfigError(f"{where}: weights file '{value}' cannot be read ({err.strerror or err}; looked at "
                          f"{path}). Fix its permissions or the path.") from None
    if stat.S_ISDIR(info.st_mode):
        try:
            inside = sorted(p.name for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())[:5]
        except OSError:  # an unreadable folder: the message still says what it is
            inside = []
        hint = f"it holds {', '.join(inside)}" if inside else f"it holds no {'/'.join(WEIGHT_SUFFIXES)} file"
        raise ConfigError(f"{where}: weights file '{value}' is a directory, not a file ({hint}). Give the path of "
                          "the weights file itself.")
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "a special file")
        raise ConfigError(f"{where}: weights file '{value}' is {kind}, not a regular file; fpbench reads weights only "
                          f"from files ({', '.join(WEIGHT_SUFFIXES)}). Give the path of a saved weights file.")
    return info


def read_state_dict(path: Path, where: str, shown: str | None = None) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from a safetensors file, a torch state dict or a Lightning checkpoint.

    Never unpickles objects and never reads more than the file holds.

    Args:
        path: the file (resolved).
        where: the recipe entry or CLI flag, for messages.
        shown: the path as the user wrote it (default: `path`).

    Raises:
        ConfigError: not a regular file, empty, neither format, truncated or corrupted, pickled objects,
            not a flat state dict, a NaN/inf tensor, or all weights exactly zero.
    """
    shown = shown if shown is not None else str(path)
    name = f"{where}: weights file '{shown}'"
    size = _stat_regular(path, shown, where).st_size
    if size == 0:
        raise ConfigError(f"{name} is empty (0 bytes): the export or copy did not finish. Export it again.")
    with path.open("rb") as f:
        head = f.read(9)
    fits = len(head) == 9 and struct.unpack("<Q", head[:8])[0] <= size - 8
    if head[8:9] == b"{" and fits:  # safetensors first: a header length of 128 also starts with b"\x80"
        state = _read_safetensors(path, size, name)
    elif head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip, or a legacy pickle stream
        state = _read_torch(path, name)
    elif head[8:9] == b"{":
        state = _read_safetensors(path, size, name)  # says that its header length overruns the file
    else:
        raise ConfigError(_unknown_format(head, size, path.suffix, name))
    state = _from_checkpoint(state)
    _check_flat(state, name)
    _check_values(state, name)
    return state


def _unknown_format(head: bytes, size: int, suffix: str, name: str) -> str:
    starts = f"it starts with {head[:8]!r}"
    if suffix == ".safetensors" and len(head) >= 8:
        (length,) = struct.unpack("<Q", head[:8])
        starts = f"its 8-byte header length reads {length} bytes, the whole file has {size}; {starts}"
    return (f"{name} is neither a safetensors file nor a torch.save file ({starts}): not a weights file, or a "
            f"corrupted one. Give the weights file, or export it again with {SAVE_COMMANDS}.")


def _read_safetensors(path: Path, size: int, name: str) -> dict[str, Any]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ConfigError(f"{name} is a corrupted or truncated safetensors file: its header length field says "
                              f"{length} bytes, the whole file has {size}. Export it again.")
        header_bytes = f.read(length)  # bounded: at most the file's size
    try:
        header = json.loads(header_bytes)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ConfigError(f"{name} is a corrupted or truncated safetensors file: its JSON header is unreadable "
                          f"({type(err).__name__}: {str(err)[:120]}). Export it again.") from None
    if 8 + length + max(ends, default=0) > size:
        raise ConfigError(f"{name} is a corrupted or truncated safetensors file: its tensors need "
                          f"{8 + length + max(ends)} bytes, the file has {size}. Copy or export it again.")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError and friends: any failure of the reader is a bad file
        raise ConfigError(f"{name} is a corrupted or truncated safetensors file ({str(err)[:200]}). "
                          "Export it again.") from None


def _read_torch(path: Path, name: str) -> Any:
    try:
        with path.open("rb") as f:  # a file object: torch picks no reader from the file's suffix
            return torch.load(f, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:  # weights_only refuses any class but tensors and containers
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        hint = LIGHTNING_HINT if path.suffix == ".ckpt" else EXPORT_HINT
        raise ConfigError(f"{name} holds pickled Python objects, not only tensors ({first}); fpbench never "
                          f"unpickles them. {hint}") from None
    except Exception as err:  # the weights-only unpickler fails on damaged data with any error type
        detail = str(err).splitlines()[0][:200] if str(err) else ""
        raise ConfigError(f"{name} is not a readable torch.save file (corrupted or truncated: "
                          f"{type(err).__name__}{': ' + detail if detail else ''}). Export it again.") from None


def _from_checkpoint(state: Any) -> Any:
    """A Lightning checkpoint's (or any `{'state_dict': {...}}`'s) state dict, without the module's prefix."""
    if not (isinstance(state, dict) and isinstance(state.get("state_dict"), dict)):
        return state
    inner = state["state_dict"]  # optimizer states, loops, callbacks and hyper-parameters are ignored
    for prefix in LIGHTNING_PREFIXES:
        if inner and all(isinstance(k, str) and k.startswith(prefix) for k in inner):
            return {k[len(prefix):]: v for k, v in inner.items()}
    return inner


def _check_flat(state: Any, name: str) -> None:
    if not isinstance(state, dict):
        raise ConfigError(f"{name} holds a Python {type(state).__name__}, not a name -> tensor state dict. "
                          f"{EXPORT_HINT}")
    if not state:
        raise ConfigError(f"{name} holds no tensors (an empty state dict). {EXPORT_HINT}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            problem = (f"holds a Python {type(value).__name__}, not a tensor" if isinstance(key, str)
                       else f"is a Python {type(key).__name__}, not a string name")
            raise ConfigError(f"{name} is not a flat name -> tensor state dict: key {key!r} {problem} (e.g. a "
                              f"training checkpoint with an optimizer). {EXPORT_HINT}")
        if value.layout != torch.strided:
            raise ConfigError(f"{name}: tensor '{key}' is {value.layout}, not dense. Save dense weights "
                              "(`.to_dense()`) and export again.")


def _check_values(state: dict[str, torch.Tensor], name: str) -> None:
    """Refuse NaN/inf anywhere, and a model whose weights are all exactly zero (never trained, or blanked)."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ConfigError(f"{name}: tensor '{key}' holds {bad} non-finite value(s) (NaN or inf) of "
                              f"{value.numel()}: the training diverged or the file is damaged. Export weights of a "
                              "model that trained without NaN/inf.")
    weights = [key for key, value in state.items() if value.is_floating_point() and not key.startswith("normalize.")]
    if weights and not any(bool(state[key].any()) for key in weights):
        raise ConfigError(f"{name}: all {len(weights)} weight tensors are exactly zero (first: '{weights[0]}'): an "
                          "untrained or blanked model, not one to score. Export the trained model's weights.")
