"""The worker's trainer registry: trainer name → class, filled where each trainer lives.

A trainer module registers its class with :func:`register_trainer` (a class decorator reading
the class's ``name``); a worker builds the trainers it was asked for with
:func:`create_trainer` and advertises their names when it registers with the server (the
server learns trainer names from the workers, not from a list of its own).

Trainer modules may import torch, so they are imported only when a name is first looked up
(:data:`TRAINER_MODULES`, in order: a ``table``-only worker never imports torch). A plugin's
trainer is found through its ``archsearch.trainers`` entry point (the one the server reads
its TrainerInfo from): ``archsearch worker --trainer NAME`` imports that module, whose
``@register_trainer`` class is then the trainer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from typing import Any, TypeVar

from archsearch.spaces import Registry
from archsearch.spaces._trainer_info import TRAINER_NAME_RE
from archsearch.worker._trainer import Trainer

#: Registered trainer classes by name (the registry style of spaces and loops).
TRAINERS: Registry[type[Trainer]] = Registry("trainer")
#: The built-in trainers and the modules that register them, imported on first look-up
#: (cheap ones first); no other class may take these names.
BUILT_IN = {
    "table": "archsearch.worker._table_trainer",
    "bert": "archsearch.worker._bert_trainer",
    "lora": "archsearch.worker._lora_trainer",
    "autodistil": "archsearch.worker._autodistil_trainer",
}
TRAINER_MODULES = tuple(BUILT_IN.values())
#: Entry-point group of installed trainers (as the server's ``server/_trainers.py``): a
#: plugin's entry point names its TrainerInfo, in the module that registers its class.
ENTRY_POINT_GROUP = "archsearch.trainers"

_T = TypeVar("_T", bound=type[Trainer])


def register_trainer(cls: _T) -> _T:
    """Class decorator: registers a :class:`Trainer` subclass under its ``name``.

    Raises:
        ValueError: The class has no name, or another class has it.
    """
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name to register")
    if not TRAINER_NAME_RE.fullmatch(cls.name):
        raise ValueError(
            f"{cls.__qualname__}: invalid trainer name {cls.name!r} (1-32 of [a-z0-9_-], "
            "starting with a letter)"
        )
    owner = BUILT_IN.get(cls.name)
    if owner is not None and cls.__module__ != owner:
        raise ValueError(
            f"{cls.__qualname__}: {cls.name!r} is the name of archsearch's own trainer; "
            "give yours another name"
        )
    TRAINERS.register(cls.name, cls)  # ValueError when another class has the name
    return cls


def trainer_class(name: str) -> type[Trainer]:
    """The class registered as ``name``, importing the built-in trainer modules as needed.

    Raises:
        KeyError: No trainer has that name; the message lists the known ones.
    """
    if name not in TRAINERS and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
    if name not in TRAINERS:
        _load_plugin(name)
    if name not in TRAINERS:
        raise KeyError(
            f"unknown trainer {name!r}: use one of {', '.join(trainer_names())}, or install "
            f"a plugin that publishes it (an {ENTRY_POINT_GROUP!r} entry point)"
        )
    return TRAINERS[name]


def _load_plugin(name: str) -> None:
    """Imports the module of the ``archsearch.trainers`` entry point called ``name`` (a
    plugin's TrainerInfo, beside the class it registers with :func:`register_trainer`).

    Raises:
        KeyError: The entry point does not load, or its module registers no class of that
            name; the message says which.
    """
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    ep = next((ep for ep in eps if ep.name == name), None)
    if ep is None:
        return
    try:
        ep.load()
    except Exception as e:  # the plugin's own import error, said in one line
        raise KeyError(f"trainer {name!r}: its entry point {ep.value} does not load: {e}") from e
    if name not in TRAINERS:
        raise KeyError(
            f"trainer {name!r}: its entry point {ep.value} loads, but that module registers no "
            f"Trainer named {name!r} (decorate the class with @register_trainer)"
        )


def trainer_names() -> tuple[str, ...]:
    """Every trainer name: the built-in ones (their modules are imported) and those installed
    plugins publish (named, not imported: a plugin's import can be slow or broken)."""
    for module in TRAINER_MODULES:
        importlib.import_module(module)
    published = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return tuple(sorted(set(TRAINERS.names()) | published))


def create_trainer(name: str, options: Mapping[str, Any]) -> Trainer:
    """A ``name`` trainer built from a worker's ``options`` (``Trainer.from_options``).

    Raises:
        KeyError: Unknown name.
        ValueError: The options do not suffice for that trainer; the message says what to give.
    """
    return trainer_class(name).from_options(options)
