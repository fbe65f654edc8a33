"""hf_transfer/_exports.py: the subpackages' public names resolve, lazily, to the objects their modules define."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

SUBPACKAGES = ("hf_transfer.data", "hf_transfer.modeling", "hf_transfer.training", "hf_transfer.evaluation",
               "hf_transfer.publish")


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_public_name_resolves_to_what_its_module_defines(package):
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__) and module.__all__
    for name in module.__all__:
        value = getattr(module, name)
        # A name that is also a submodule's (training.save was one) would give the module, not the function.
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module: rename the function"
        assert getattr(value, "__name__", name) == name, (package, name)
        assert name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'not_there'"):
        module.not_there  # noqa: B018


def test_importing_the_subpackages_imports_no_torch():
    """`import hf_transfer.training` is instant: names import their modules (torch, transformers) on first use."""
    code = ("import sys, hf_transfer, " + ", ".join(SUBPACKAGES) +
            "\nheavy = [m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules]"
            "\nassert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

