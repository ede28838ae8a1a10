from __future__ import annotations

import importlib
import inspect

from importlib.metadata import version

import pytest

import prom_async
import prom_async.aio


PUBLIC_MODULES = [
    "prom_async",
    "prom_async.aio",
    "prom_async.aio.sd",
    "prom_async.aio.web",
    "prom_async.types",
]


class TestExports:
    @pytest.mark.parametrize("name", PUBLIC_MODULES)
    def test_all_names_exist(self, name):
        """Every name in a public module's __all__ can be imported."""
        module = importlib.import_module(name)

        missing = [n for n in module.__all__ if not hasattr(module, n)]

        assert [] == missing

    @pytest.mark.parametrize("name", PUBLIC_MODULES)
    def test_public_definitions_are_exported(self, name):
        """Every public class and function a module offers is in __all__."""
        module = importlib.import_module(name)

        offered = {
            attribute
            for attribute, value in vars(module).items()
            if not attribute.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", "").startswith("prom_async")
        }

        assert set() == offered - set(module.__all__)

    def test_version_from_metadata(self):
        """__version__ is the installed distribution's version."""
        assert version("prom-async") == prom_async.__version__

    def test_aio_submodules_on_attribute_access(self):
        """prom_async.aio.web and .sd are reachable as attributes."""
        assert "start_http_server" in dir(prom_async.aio.web)
        assert "ConsulAgent" in dir(prom_async.aio.sd)
