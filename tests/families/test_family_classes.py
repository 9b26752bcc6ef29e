"""A family is readable in its class: every built-in family's class body names each part it gives (its
module's functions listed as static methods, the rest written there), nothing is picked up from the module
behind the reader's back, and the base class is split into parts a reader can hold.

    python -m pytest tests/families/test_family_classes.py -q
"""
from __future__ import annotations

import inspect

import pytest

from prefinetune.families.family import (
    BUILT_IN,
    Family,
    FamilyData,
    FamilyEvaluation,
    FamilyExport,
    FamilyHead,
    FamilyLoss,
    get_family,
)

# what every family must give itself: the base only raises NotImplementedError for these
REQUIRED = ("to_record", "tokenize", "shard_schema", "collate", "loss", "evaluate", "build_head", "head_outputs")


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_built_in_class_body_gives_every_required_part(name):
    cls = type(get_family(name))
    missing = [part for part in REQUIRED if part not in cls.__dict__]
    assert missing == [], f"{cls.__name__} does not name {missing} in its body"
    module = inspect.getmodule(cls)
    for part in REQUIRED:      # a module function the class lists is that very function, not a copy
        given = cls.__dict__[part]
        if isinstance(given, staticmethod):
            assert given.__func__ is getattr(module, part)


def test_the_base_class_is_made_of_five_parts():
    assert Family.__mro__[1:6] == (FamilyData, FamilyHead, FamilyLoss, FamilyEvaluation, FamilyExport)
    owners = {part: next(c for c in Family.__mro__ if part in c.__dict__) for part in REQUIRED}
    assert owners == {"to_record": FamilyData, "tokenize": FamilyData, "shard_schema": FamilyData,
                      "collate": FamilyLoss, "loss": FamilyLoss, "evaluate": FamilyEvaluation,
                      "build_head": FamilyHead, "head_outputs": FamilyHead}


def loss(outputs, batch, task):
    """A module function named like a part: a class defined in this module must not pick it up."""
    return "picked up from the module"


def test_a_subclass_gets_nothing_from_its_module_unasked():
    class Bare(Family):
        name = "bare"

    with pytest.raises(NotImplementedError):
        Bare().loss(None, {}, None)
