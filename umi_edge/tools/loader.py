"""`--tools module:ATTR` (or `path/to/file.py:ATTR`) → a ToolSet, with one-line errors naming what failed."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..errors import ToolError
from .core import ToolSet, as_toolset

DEFAULT_ATTR = "TOOLS"


def load_tools(spec: str) -> ToolSet:
    """Import `module` (or a .py file) and read `ATTR` (default TOOLS): a ToolSet, Tool, function or list."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep:
        module_name, attr = spec, ""
    if not module_name:
        raise ToolError(f"--tools {spec!r}: expected module:ATTR or path/to/file.py:ATTR")
    attr = attr or DEFAULT_ATTR
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ToolError(f"--tools {spec}: file {path} not found")
            mod_spec = importlib.util.spec_from_file_location(f"umi_edge_user_tools_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module  # so dataclasses/pickle inside it can find their module
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_spec.name, None)
                raise
        else:
            module = importlib.import_module(module_name)
    except ToolError:
        raise
    except BaseException as e:  # noqa: BLE001 - a user module can fail in any way while importing
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ToolError(f"--tools {spec}: cannot import {module_name!r} ({type(e).__name__}: {e})") from None
    try:
        value = getattr(module, attr)
    except AttributeError:
        found = ", ".join(n for n in dir(module) if n.isupper()) or "none"
        raise ToolError(f"--tools {spec}: {module_name!r} has no attribute {attr!r} (upper-case names: {found})") from None
    try:
        return as_toolset(value)
    except ToolError as e:
        raise ToolError(f"--tools {spec}: {e}") from None
