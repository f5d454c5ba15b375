"""Public signatures read well in help() and inspect: no ``<object object at 0x...>`` defaults."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle

import pytest

from clipguide.model.registry import UNSET

PACKAGES = ["clipguide", "clipguide.model", "clipguide.conditioning", "clipguide.guidance"]
PACKAGES += ["clipguide.scoring"]


def _public_callables():
    for name in PACKAGES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            value = getattr(module, attr)
            if callable(value):
                yield f"{name}.{attr}", value


CALLABLES = dict(_public_callables())


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_signature_has_no_anonymous_default(name):
    func = CALLABLES[name]
    try:
        text = str(inspect.signature(func))
    except (TypeError, ValueError):  # builtins and some classes have no signature to show
        return
    assert " at 0x" not in text, f"{name}{text}"


def test_load_clip_says_what_pretrained_defaults_to():
    from clipguide import load_clip

    signature = inspect.signature(load_clip)
    assert repr(signature.parameters["pretrained"].default) == "<the source's default>"
    assert "= <the source's default>, *," in str(signature), signature


def test_the_default_marker_stays_one_object():
    assert copy.deepcopy(UNSET) is UNSET and copy.copy(UNSET) is UNSET
    assert pickle.loads(pickle.dumps(UNSET)) is UNSET
