"""The worker's trainer registry: trainer name → class, filled where each trainer lives.

A trainer module registers its class with :func:`register_trainer` (a class decorator reading
the class's ``name``); a worker builds the trainers it was asked for with
:func:`create_trainer` and advertises their names when it registers with the server (the
server learns trainer names from the workers, not from a list of its own).

Trainer modules may import torch, so they are imported only when a name is first looked up
(:data:`TRAINER_MODULES`, in order: a ``table``-only worker never imports torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from archsearch.spaces import Registry
from archsearch.worker._trainer import Trainer

#: Registered trainer classes by name (the registry style of spaces and loops).
TRAINERS: Registry[type[Trainer]] = Registry("trainer")
#: Modules that register the built-in trainers, imported on first look-up (cheap ones first).
TRAINER_MODULES = (
    "archsearch.worker._table_trainer",
    "archsearch.worker._bert_trainer",
    "archsearch.worker._lora_trainer",
    "archsearch.worker._autodistil_trainer",
)

_T = TypeVar("_T", bound=type[Trainer])


def register_trainer(cls: _T) -> _T:
    """Class decorator: registers a :class:`Trainer` subclass under its ``name``.

    Raises:
        ValueError: The class has no name, or another class has it.
    """
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name to register")
    TRAINERS.register(cls.name, cls)  # ValueError when another class has the name
    return cls


def trainer_class(name: str) -> type[Trainer]:
    """The class registered as ``name``, importing the built-in trainer modules as needed.

    Raises:
        KeyError: No trainer has that name; the message lists the known ones.
    """
    for module in TRAINER_MODULES:
        if name in TRAINERS:
            break
        importlib.import_module(module)
    if name not in TRAINERS:
        raise KeyError(f"unknown trainer {name!r}: use one of {', '.join(trainer_names())}")
    return TRAINERS[name]


def trainer_names() -> tuple[str, ...]:
    """Every trainer name, built-in ones included (their modules are imported)."""
    for module in TRAINER_MODULES:
        importlib.import_module(module)
    return TRAINERS.names()  # sorted: registration order depends on what was imported first


def create_trainer(name: str, options: Mapping[str, Any]) -> Trainer:
    """A ``name`` trainer built from a worker's ``options`` (``Trainer.from_options``).

    Raises:
        KeyError: Unknown name.
        ValueError: The options do not suffice for that trainer; the message says what to give.
    """
    return trainer_class(name).from_options(options)
