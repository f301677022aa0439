"""A model built by the user's own Python function: the arch string `factory:<package.module:function>`.

The function is called as `function(in_channels=..., num_classes=..., image_size=..., **arch_params)`
and returns either

- `(features, feature_dim)`, the contract of a registered architecture (`bench/nets/base.py`):
  fpbench adds its `Normalize` first layer and a linear head, so every attack works on it; or
- a whole `nn.Module` that maps normalised images to `num_classes` logits: fpbench adds only its
  `Normalize` first layer, and the model has no separate linear head (`head` is an identity), so
  the attacks that retrain or reset the last layer (FTLL, RTLL, RTAL) refuse it.

A whole model's own state dict (`conv.weight`, `fc.weight`) loads as is; see docs/byo.md.
Importing the module runs its code: name only code you trust.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from bench.callables import load_callable

FACTORY_PREFIX = "factory:"
FACTORY_ARGS = ("in_channels", "num_classes", "image_size")  # what build_model passes to every factory


def is_factory_arch(arch: str) -> bool:
    """True for arch strings of the form `factory:<package.module:function>`."""
    return arch.startswith(FACTORY_PREFIX)


def check_factory_arch(arch: str, params: dict[str, Any]) -> Any:
    """Import the factory of `factory:<package.module:function>` and check its signature; return the function.

    Raises:
        ValueError: the name does not import, is not callable, does not take `in_channels`, `num_classes`
            and `image_size` by keyword, or does not accept one of `params`.
    """
    target = arch[len(FACTORY_PREFIX):]
    function = load_callable(target, f"arch {arch!r}", key="factory")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check before calling it
        return function
    accepted = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return function
    missing = [name for name in FACTORY_ARGS if name not in accepted]
    if missing:
        raise ValueError(f"arch {arch!r}: the factory must accept {', '.join(FACTORY_ARGS)} by keyword (missing: "
                         f"{', '.join(missing)}); write `def {target.split(':')[-1].split('.')[-1]}(in_channels, "
                         "num_classes, image_size, **params)`.")
    unknown = sorted(set(params) - set(accepted) - set(FACTORY_ARGS))
    if unknown:
        allowed = [n for n in accepted if n not in FACTORY_ARGS]
        raise ValueError(f"Unknown param(s) {unknown} for arch {arch!r}. Accepted: {', '.join(allowed) or '(none)'}.")
    return function


def factory_parts(arch: str, in_channels: int, num_classes: int, image_size: int,
                  params: dict[str, Any]) -> tuple[nn.Module, int | None]:
    """Call the factory: `(features, feature_dim)`, or `(whole model, None)` when it returned a whole model.

    Raises:
        ValueError: the factory raised, or returned something else.
    """
    function = check_factory_arch(arch, params)
    try:
        out = function(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **params)
    except Exception as err:  # the user's code: report it as the recipe's problem
        raise ValueError(f"arch {arch!r}: the factory raised {type(err).__name__}: {err}") from None
    if isinstance(out, nn.Module):
        return out, None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module) and isinstance(out[1], int):
        return out[0], int(out[1])
    raise ValueError(f"arch {arch!r}: the factory returned a {type(out).__name__}; it must return an nn.Module "
                     "(the whole model, logits out) or (features module, feature_dim).")
