"""CRC-32C (Castagnoli), the checksum of a RecordBatch v2.

The ``crc32c`` package computes it in hardware, but its package ``__init__`` imports
``importlib.metadata`` just to read its own version, which costs tens of milliseconds on every CLI
start. We load its compiled extension directly instead and fall back to the normal import when the
package is laid out differently (zip, editable install, a future release).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

_CrcFunction = Callable[..., int]


def _load_extension() -> _CrcFunction:
    """Return the extension's ``crc32c`` function without running the package ``__init__``."""
    module_name = "crc32c._crc32c"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded.crc32c  # type: ignore[no-any-return]
    try:
        from importlib.machinery import ExtensionFileLoader, PathFinder

        package = PathFinder.find_spec("crc32c")
        if package is None or not package.submodule_search_locations:
            raise ImportError("crc32c is not a package on sys.path")
        spec = PathFinder.find_spec(module_name, list(package.submodule_search_locations))
        if spec is None or not isinstance(spec.loader, ExtensionFileLoader):
            raise ImportError("crc32c has no compiled extension")
        module: Any = spec.loader.create_module(spec)
        spec.loader.exec_module(module)
        function: _CrcFunction = module.crc32c
    except Exception:
        import crc32c as package_module

        function = package_module.crc32c
    return function


_crc32c = _load_extension()


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C of ``data``, continuing from ``value`` (the CRC of the bytes before it)."""
    return _crc32c(data, value)
