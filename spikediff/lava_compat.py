"""Make lava-nc 0.10 and lava-dl 0.6 importable on Python 3.11 without torchvision or OpenCV.

Both releases declare Python < 3.11 and the upstream repositories are archived, so no fixed release will
come. spikediff installs them with ``--no-deps --ignore-requires-python`` and fixes, at import time and only
for code that imports Lava through this module, the three things that break:

1. ``lava/magma/compiler/var_model.py`` declares dataclasses (``CoreEncoder``, ``ChipEncoder``,
   ``AxonEncoder``) whose fields default to a ``ByteEncoder()`` instance. Python 3.11 rejects any unhashable
   default ("mutable default ... use default_factory"); 3.10 only rejected list/dict/set. While that one
   module executes, ``dataclasses.dataclass`` is wrapped so that the class ``ByteEncoder`` gets
   ``object.__hash__``: the defaults are then accepted and behave exactly as on Python 3.10 (one shared
   instance, which Lava never mutates through these defaults).
2. ``lava.lib.dl.slayer`` eagerly imports its ``object_detection`` package, which needs torchvision and
   OpenCV; netx does not use it. When those are not installed, a placeholder module stands in, and any use
   of it raises an ImportError that says why.
3. Lava's ``message_infrastructure/multiprocessing.py`` calls ``multiprocessing.set_start_method('fork')``
   at import, which raises "context has already been set" if anything in the process asked for the start
   method first (``multiprocessing.get_start_method()`` fixes it; diffusers' imports do). While that module
   executes, the call is made with ``force=True``: the result is what Lava gets in a fresh process.

Everything here is idempotent; call :func:`import_lava` or :func:`import_netx` instead of importing Lava
directly.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.abc
import importlib.util
import multiprocessing
import sys
import types
from contextlib import contextmanager

from . import SpikediffError

VAR_MODEL = "lava.magma.compiler.var_model"
MP_INFRASTRUCTURE = "lava.magma.runtime.message_infrastructure.multiprocessing"
OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
_HASHED_CLASSES = {"ByteEncoder"}


class LavaUnavailableError(SpikediffError):
    pass


@contextmanager
def _byteencoder_hashable():
    """Fix 1: while var_model executes, dataclass() gives ByteEncoder object.__hash__."""
    real = dataclasses.dataclass

    def dataclass(cls=None, /, **kwargs):
        def wrap(c):
            made = real(c, **kwargs)
            if made.__name__ in _HASHED_CLASSES and made.__hash__ is None:
                made.__hash__ = object.__hash__
            return made

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = dataclass
    try:
        yield
    finally:
        dataclasses.dataclass = real


@contextmanager
def _forced_start_method():
    """Fix 3: Lava's set_start_method('fork') succeeds even if the context was already fixed."""
    real = multiprocessing.set_start_method

    def set_start_method(method, force=False):
        real(method, force=True)

    multiprocessing.set_start_method = set_start_method
    try:
        yield
    finally:
        multiprocessing.set_start_method = real


_PATCHES = {VAR_MODEL: _byteencoder_hashable, MP_INFRASTRUCTURE: _forced_start_method}


class _PatchedLoader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        with self.patch():
            self.inner.exec_module(module)


class _LavaFinder(importlib.abc.MetaPathFinder):
    """Finds the patched Lava modules through the normal machinery, then wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _PatchedLoader(spec.loader, patch)
                return spec
        return None


def _placeholder_object_detection() -> types.ModuleType:
    module = types.ModuleType(OBJECT_DETECTION)
    module.__doc__ = "Placeholder installed by spikediff.lava_compat (torchvision/OpenCV are not installed)."
    module.__path__ = []

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"lava.lib.dl.slayer.object_detection.{name} needs torchvision and OpenCV, which spikediff does "
            "not install (see README, Installation notes)"
        )

    module.__getattr__ = __getattr__
    return module


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def apply() -> None:
    """Install the fixes (idempotent). Must run before the first ``import lava``."""
    if not any(isinstance(f, _LavaFinder) for f in sys.meta_path):
        early = [name for name in _PATCHES if name in sys.modules]
        if early:
            raise LavaUnavailableError(
                f"{early[0]} was imported before spikediff.lava_compat.apply(); import Lava through "
                "spikediff.lava_compat"
            )
        sys.meta_path.insert(0, _LavaFinder())
    if OBJECT_DETECTION not in sys.modules and not (_has("torchvision") and _has("cv2")):
        sys.modules[OBJECT_DETECTION] = _placeholder_object_detection()


def import_lava():
    """Import the ``lava`` namespace package with the fixes applied."""
    apply()
    try:
        # The compiler (var_model) and the runtime (multiprocessing) behind every Lava process:
        import lava
        import lava.magma.core.process.process  # noqa: F401
        import lava.magma.core.run_configs  # noqa: F401
    except ImportError as exc:
        raise LavaUnavailableError(
            f"Lava is not installed or incomplete ({exc}); run `make install` (see README)"
        ) from None
    return lava


def import_netx():
    """Import ``lava.lib.dl.netx`` with the fixes applied."""
    import_lava()
    try:
        from lava.lib.dl import netx
    except ImportError as exc:
        raise LavaUnavailableError(f"lava-dl netx cannot be imported ({exc}); run `make install` (see README)") from None
    return netx
