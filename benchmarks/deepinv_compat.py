"""Import deepinv's DeepImagePrior on machines where torchvision cannot be imported.

deepinv 0.5.0 imports torchvision in its top-level ``__init__`` (and in a few plotting, transform and
dataset helpers), but ``deepinv.models.DeepImagePrior`` and ``ConvDecoder`` use none of it. PyPI's
torchvision 0.28 is a CUDA build that fails to import beside CPU torch 2.13, so on such machines we
register a placeholder ``torchvision`` package before importing deepinv. Every line deepinv runs in the
benchmark is deepinv's own code; only the unused torchvision names are placeholders. Where a working
torchvision exists, it is used and nothing is patched.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _Placeholder:
    """Stands in for any torchvision attribute at import time; fails loudly if actually used."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is a placeholder: torchvision is not importable here")

    def __mro_entries__(self, bases):  # allow `class X(torchvision.Something)` in deepinv
        return (object,)


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(f"{self.__name__}.{item}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        module.__version__ = "0+placeholder"
        return module

    def exec_module(self, module):
        pass


STATUS: dict = {"available": False, "torchvision": None, "error": None, "version": None}


def _torchvision_works() -> tuple[bool, str | None]:
    try:
        importlib.import_module("torchvision")
        return True, None
    except Exception as exc:  # ImportError, or RuntimeError from a CUDA-only build
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0]


def load():
    """Return ``(DeepImagePrior, ConvDecoder, physics_module)`` or ``None``; see :data:`STATUS`."""
    if STATUS["available"]:
        import deepinv

        return deepinv.models.DeepImagePrior, deepinv.models.ConvDecoder, deepinv.physics
    if importlib.util.find_spec("deepinv") is None:
        STATUS["error"] = "deepinv is not installed (bash benchmarks/install_extras.sh)"
        return None
    ok, why = _torchvision_works()
    if ok:
        STATUS["torchvision"] = "real"
    else:
        STATUS["torchvision"] = f"placeholder ({why})"
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    try:
        import deepinv
    except Exception as exc:
        STATUS["error"] = f"import deepinv failed: {type(exc).__name__}: {exc}".splitlines()[0]
        return None
    STATUS.update(available=True, version=getattr(deepinv, "__version__", "?"))
    return deepinv.models.DeepImagePrior, deepinv.models.ConvDecoder, deepinv.physics
