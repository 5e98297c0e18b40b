"""TorchServe's own rule for the handler module: it must define exactly one class (its loader
refuses a module with more: "Expected only one class in custom service code")."""

from __future__ import annotations

from ts.utils.util import list_classes_from_module

import ner_handler


def test_the_handler_module_defines_only_the_handler_class():
    assert list_classes_from_module(ner_handler) == [ner_handler.KoreanNerHandler]
