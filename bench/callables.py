"""Import a user's Python object named `package.module:attribute` (endpoint callables, model factories).

Importing runs the module's code: recipes name only code their author trusts (docs/byo.md, "Security").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_callable(target: str, where: str, key: str = "callable") -> Callable[..., Any]:
    """Import `package.module:function` (the attribute may be dotted, `module:Class.method`) and check it is callable.

    Args:
        target: the `package.module:function` string.
        where: the recipe location, for messages.
        key: the recipe key that named it, for messages (`callable`, `factory`).

    Raises:
        ValueError: a malformed name, a module that does not import, a missing attribute, or not a callable.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{where}: {key}={target!r} must read 'package.module:function'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"{where}: cannot import module '{module_name}' of {key}={target!r}: "
                         f"{type(err).__name__}: {err}. Check the name and that it is on PYTHONPATH.") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}: module '{module_name}' has no attribute '{attr}' ({key}={target!r}).")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{where}: {key}={target!r} is a {type(obj).__name__}, not a function.")
    return obj
