"""DyLoRA on peft's LoRA layers: rank truncation, α/b scaling, frozen mode, merge, save, load.

peft has no DyLoRA; this module adds it to a vanilla peft LoRA of rank ``r_max`` without
touching peft's layers. Every ``lora_A[adapter].weight`` (rank axis 0) and
``lora_B[adapter].weight`` (rank axis 1) gets a :mod:`torch.nn.utils.parametrize`
parametrization (:class:`RankTruncation`) that, at rank b, keeps components 0..b-1 (a slice:
``lora_A`` becomes b × d_in, ``lora_B`` d_out × b), and :meth:`DyLoRA.set_rank` sets peft's
own per-layer ``scaling`` to α/b (peft's α/r_max times r_max/b). The update is

    h = W₀x + (α / b) · B[:, :b] · A[:b, :] · x

(Valipour et al.; ``../shared/reference/algorithms.md`` §4). At b = r_max the factors are
untouched and the scaling is peft's, so the model is exactly plain peft LoRA. Since peft
computes both the forward and the merged delta from ``.weight`` and ``scaling``, everything
downstream (forward, ``merge``, ``get_delta_weight``) sees the truncated update. A slice, and a
scale that peft multiplies by anyway, add next to no work: a GPU step of a MiniLM-sized model
is bound by kernel launches, and masks cost several small kernels per factor and step
(``benchmarks/dylora_step.py``).

In frozen training (the paper's GLUE setting) at rank b, components 0..b-2 are detached, so
only row b-1 of A and column b-1 of B get gradient. Evaluation (``model.eval()``) always just
truncates. AdamW still moves the components without gradient through its momentum and its
decoupled weight decay (as in the reference implementation); :class:`DyLoRA` can put them
back after each step (``strict``, see :meth:`DyLoRA.snapshot_untrained`).

Merging: :meth:`DyLoRA.merge` merges at the current rank; :meth:`DyLoRA.set_rank` on a merged
model unmerges at the old rank and merges again at the new one, so a merged model never keeps a
stale delta from another rank (the reference implementation's pitfall).

Imports torch and peft at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from torch.nn.utils import parametrize

from archsearch.spaces._checkpoint_names import DYLORA_FILE
from archsearch.worker._lora_spec import LoraSpec

_ADAPTER = "default"


class RankState:
    """The rank shared by every truncation of one model (one b for every LoRA module).

    Attributes:
        r_max: The LoRA rank the factors were built with.
        rank: The current rank b in 1..r_max.
        frozen: Whether training detaches components 0..b-2 (eval always truncates only).
    """

    def __init__(self, r_max: int) -> None:
        self.r_max = r_max
        self.rank = r_max
        self.frozen = False


class RankTruncation(torch.nn.Module):
    """Parametrization of a LoRA factor: its components < b along ``axis``.

    It changes the factor's shape below r_max, so it is registered with ``unsafe=True``; the
    α/b scaling is peft's ``scaling``, which :meth:`DyLoRA.set_rank` sets.

    Args:
        state: The model's shared :class:`RankState`.
        axis: The rank axis: 0 for ``lora_A`` (r × d_in), 1 for ``lora_B`` (d_out × r).
    """

    def __init__(self, state: RankState, axis: int) -> None:
        super().__init__()
        self.state = state
        self.axis = axis

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        b, r_max = self.state.rank, self.state.r_max
        frozen = self.training and self.state.frozen
        if b == r_max and not frozen:
            return weight  # exactly plain LoRA
        kept = weight.narrow(self.axis, 0, b)
        if not torch.is_grad_enabled():
            # A view made under no_grad keeps requires_grad but has no grad_fn, which autograd
            # hooks (FlopCounterMode's module tracker) refuse; detach() costs nothing.
            return kept.detach()
        if not frozen:
            return kept
        # Only component b-1 is trainable; the others enter with their values alone.
        below = kept.narrow(self.axis, 0, b - 1).detach()
        return torch.cat((below, kept.narrow(self.axis, b - 1, 1)), dim=self.axis)


class DyLoRA:
    """Controls the rank of every LoRA module of one peft model (see the module docstring).

    Build it with :func:`attach_dylora` (or :func:`build_lora_model`, :func:`load_dylora`);
    :func:`dylora_of` finds the controller of a model.

    Args:
        model: A peft model with a LoRA adapter of rank ``spec.r_max`` on ``spec.targets``.
        spec: The LoRA settings.
    """

    def __init__(self, model: torch.nn.Module, spec: LoraSpec) -> None:
        self.model = model
        self.spec = spec
        self.state = RankState(spec.r_max)
        self.layers: list[LoraLayer] = [
            m for m in model.modules() if isinstance(m, LoraLayer) and _ADAPTER in m.lora_A
        ]
        if not self.layers:
            raise ValueError(f"no LoRA layers in the model: targets {list(spec.targets)}")
        #: peft's scaling of each layer at r_max (α/r_max), which rank b multiplies by r_max/b
        self._r_max_scaling = [float(layer.scaling[_ADAPTER]) for layer in self.layers]
        for layer in self.layers:
            for factor, axis in ((layer.lora_A[_ADAPTER], 0), (layer.lora_B[_ADAPTER], 1)):
                if not parametrize.is_parametrized(factor, "weight"):
                    parametrize.register_parametrization(
                        factor, "weight", RankTruncation(self.state, axis), unsafe=True
                    )
        model._archsearch_dylora = self  # type: ignore[assignment]

    @property
    def rank(self) -> int:
        """The current rank b."""
        return self.state.rank

    @property
    def merged(self) -> bool:
        """Whether the LoRA delta is merged into the base weights (at the current rank)."""
        return any(layer.merged for layer in self.layers)

    def set_rank(self, rank: int, frozen: bool | None = None) -> None:
        """Truncates every LoRA module to ``rank`` (and sets frozen training when given).

        A merged model is unmerged at the old rank first and merged again at the new one.

        Raises:
            ValueError: ``rank`` outside 1..r_max.
        """
        if not 1 <= rank <= self.state.r_max:
            raise ValueError(f"rank must be in 1..{self.state.r_max}, got {rank}")
        if frozen is not None:
            self.state.frozen = frozen
        if rank == self.state.rank:
            return
        merged = self.merged
        if merged:
            self.unmerge()  # at the old rank: the delta that was added is the one taken away
        self.state.rank = rank
        for layer, scaling in zip(self.layers, self._r_max_scaling, strict=True):
            layer.scaling[_ADAPTER] = (
                scaling if rank == self.state.r_max else scaling * (self.state.r_max / rank)
            )
        if merged:
            self.merge()

    @contextlib.contextmanager
    def at_rank(self, rank: int) -> Iterator[None]:
        """Truncates to ``rank`` inside the block; the previous rank is restored after it."""
        previous = self.rank
        self.set_rank(rank)
        try:
            yield
        finally:
            self.set_rank(previous)

    def merge(self) -> None:
        """Adds the update at the current rank into the base weights (faster inference)."""
        with torch.no_grad():
            for layer in self.layers:
                if not layer.merged:
                    layer.merge()

    def unmerge(self) -> None:
        """Takes the merged update out of the base weights again."""
        with torch.no_grad():
            for layer in self.layers:
                if layer.merged:
                    layer.unmerge()

    def lora_parameters(self, rank: int | None = None) -> int:
        """LoRA parameters a rank-``rank`` adapter has (default the current rank): b·(d_in +
        d_out) per module."""
        b = self.rank if rank is None else rank
        # peft types the sizes Optional (None before a layer is built); these are built
        sizes = [(layer.in_features or 0) + (layer.out_features or 0) for layer in self.layers]
        return sum(b * size for size in sizes)

    def trainable_parameters(self, rank: int | None = None) -> int:
        """What fine-tuning at ``rank`` trains: the LoRA parameters at that rank plus every
        other trainable parameter (the classifier head peft keeps trainable)."""
        factors = {
            id(p)
            for layer in self.layers
            for m in (layer.lora_A, layer.lora_B)
            for p in m[_ADAPTER].parameters()
        }
        others = sum(
            p.numel() for p in self.model.parameters() if p.requires_grad and id(p) not in factors
        )
        return self.lora_parameters(rank) + others

    def factors(self) -> Iterator[tuple[torch.Tensor, int]]:
        """The stored (untruncated) factors with their rank axis: ``(A, 0)``, ``(B, 1)``."""
        for layer in self.layers:
            yield _original(layer.lora_A[_ADAPTER]), 0
            yield _original(layer.lora_B[_ADAPTER]), 1

    def trained_components(self) -> range:
        """The components that get gradient at the current rank: b-1 alone when frozen, else
        0..b-1."""
        b = self.rank
        return range(b - 1, b) if self.state.frozen else range(b)

    def snapshot_untrained(self) -> list[tuple[torch.Tensor, int, range, torch.Tensor]]:
        """Copies of every factor, to put back the components that get no gradient at the
        current rank.

        :meth:`restore` puts them back after an optimiser step (``strict``): then only the
        components that received gradient change, whatever AdamW's momentum and weight decay do.
        """
        trained = self.trained_components()
        return [(w, axis, trained, w.detach().clone()) for w, axis in self.factors()]

    @staticmethod
    def restore(saved: list[tuple[torch.Tensor, int, range, torch.Tensor]]) -> None:
        """Puts back what :meth:`snapshot_untrained` copied, except the trained components
        (slices on the device: no masks, no host copies)."""
        with torch.no_grad():
            for weight, axis, trained, copy in saved:
                end = weight.shape[axis]
                for start, length in ((0, trained.start), (trained.stop, end - trained.stop)):
                    if length > 0:
                        weight.narrow(axis, start, length).copy_(copy.narrow(axis, start, length))


def dylora_of(model: torch.nn.Module) -> DyLoRA:
    """The :class:`DyLoRA` controller attached to ``model``.

    Raises:
        ValueError: The model has none.
    """
    controller = getattr(model, "_archsearch_dylora", None)
    if not isinstance(controller, DyLoRA):
        raise ValueError("the model has no DyLoRA controller: build it with attach_dylora")
    return controller


def lora_config(spec: LoraSpec) -> LoraConfig:
    """peft's LoRA configuration for ``spec`` (rank r_max; the classifier head stays trainable)."""
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec.r_max,
        lora_alpha=spec.alpha,
        target_modules=list(spec.targets),
        lora_dropout=spec.dropout,
    )


def attach_dylora(base: torch.nn.Module, spec: LoraSpec) -> torch.nn.Module:
    """Wraps a sequence classifier in peft LoRA (rank ``spec.r_max``) with rank truncation.

    The base weights are frozen; LoRA factors and the classifier head are trainable. The model
    starts at rank r_max (exactly plain LoRA).

    Raises:
        ValueError: No module of the model matches ``spec.targets`` (peft's message).
    """
    model = get_peft_model(base, lora_config(spec))
    DyLoRA(model, spec)
    return model


def _original(factor: torch.nn.Module) -> torch.Tensor:
    parametrized: Any = factor
    weight: torch.Tensor = parametrized.parametrizations["weight"].original
    return weight


@contextlib.contextmanager
def _plain_factors(controller: DyLoRA) -> Iterator[None]:
    """Inside the block the factors are plain parameters (the stored r_max values), so peft
    saves its usual keys; the truncations are put back after it."""
    for layer in controller.layers:
        for factor in (layer.lora_A[_ADAPTER], layer.lora_B[_ADAPTER]):
            parametrize.remove_parametrizations(factor, "weight", leave_parametrized=False)
    try:
        yield
    finally:
        for layer in controller.layers:
            for factor, axis in ((layer.lora_A[_ADAPTER], 0), (layer.lora_B[_ADAPTER], 1)):
                parametrize.register_parametrization(
                    factor, "weight", RankTruncation(controller.state, axis), unsafe=True
                )


def save_dylora(model: torch.nn.Module, folder: str | Path) -> Path:
    """Writes the adapter as peft does (``save_pretrained``: adapter_config.json and the full
    rank-r_max factors, which plain peft loads as a rank-r_max LoRA) plus
    :data:`DYLORA_FILE` (the LoRA settings and the current rank).

    Raises:
        ValueError: The model has no DyLoRA controller, or is merged (unmerge first: peft
            would save factors whose update is also in the base weights).
    """
    controller = dylora_of(model)
    if controller.merged:
        raise ValueError("unmerge the model before saving its adapter (DyLoRA.unmerge)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model: Any = model
    with _plain_factors(controller):
        peft_model.save_pretrained(str(folder))
    note = {"spec": controller.spec.to_dict(), "rank": controller.rank}
    (folder / DYLORA_FILE).write_text(json.dumps(note, indent=2) + "\n")
    return folder


def load_dylora(base: torch.nn.Module, folder: str | Path, *, trainable: bool = False) -> Any:
    """The model :func:`save_dylora` wrote, on ``base`` (the same pretrained classifier), at
    the rank it was saved at.

    Raises:
        FileNotFoundError: ``folder`` lacks :data:`DYLORA_FILE`.
    """
    from archsearch.worker._lora_spec import parse_lora_spec

    folder = Path(folder)
    note_file = folder / DYLORA_FILE
    if not note_file.is_file():
        raise FileNotFoundError(f"{note_file} does not exist: not a folder save_dylora wrote")
    note = json.loads(note_file.read_text())
    spec = parse_lora_spec(note["spec"])
    model = PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
    DyLoRA(model, spec).set_rank(int(note["rank"]))
    return model
