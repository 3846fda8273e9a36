"""The benchmark harness (torch-free): scenarios, timing, results, reports; ``edgeft.bench(...)`` runs it."""


# ``edgeft.bench`` is both this package and the public verb (edgeft.bench([...], data=...)): once the package is
# imported it shadows the API function on ``edgeft``, so the package itself is made callable (a module subclass,
# the mechanism Python supports for module-level behaviour) and calls :func:`edgeft.api.bench`.
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ..api import bench

        return bench(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
