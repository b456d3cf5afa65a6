"""The value sets of the FlexiBERT design spaces, and what one layer of an architecture chooses.

``VARIANTS`` holds the reference's two spaces (``design_space_test.yaml`` and
``design_space.yaml``); :class:`LayerChoice` is one layer's (or one stack's) choice.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Operation types and the parameters they take (convolution kernels come from the variant).
OPERATIONS = ("sa", "l", "c")
ATTENTION_PARAMS = ("sdp", "wma")
LINEAR_PARAMS = ("dft", "dct")


@dataclass(frozen=True)
class FlexiBertVariant:
    """The value sets of one FlexiBERT design space (one reference ``design_space*.yaml``)."""

    layers: tuple[int, ...]
    hidden: tuple[int, ...]
    heads: tuple[int, ...]
    ff_depths: tuple[int, ...]
    ff_widths: tuple[int, ...]
    kernels: tuple[int, ...]

    @property
    def operations(self) -> tuple[str, ...]:
        """Operation/parameter pairs as Optuna values: ``sa-sdp``, ``l-dct``, ``c-9`` ..."""
        return (
            *(f"sa-{p}" for p in ATTENTION_PARAMS),
            *(f"l-{p}" for p in LINEAR_PARAMS),
            *(f"c-{k}" for k in self.kernels),
        )

    def params_of(self, op: str) -> tuple[str, ...]:
        """The legal parameters of operation type ``op``."""
        if op == "sa":
            return ATTENTION_PARAMS
        if op == "l":
            return LINEAR_PARAMS
        return tuple(str(k) for k in self.kernels)


VARIANTS = {
    "test": FlexiBertVariant(
        layers=(2, 4),
        hidden=(128, 256),
        heads=(2, 4),
        ff_depths=(1, 3),
        ff_widths=(512, 1024),
        kernels=(5, 9),
    ),
    "large": FlexiBertVariant(
        layers=(2, 4, 6),
        hidden=(128, 256, 512),
        heads=(2, 4, 8),
        ff_depths=(1, 2, 3),
        ff_widths=(512, 1024, 2048, 4096),
        kernels=(5, 9, 13),
    ),
}


@dataclass(frozen=True)
class LayerChoice:
    """Everything one layer (or one stack of layers) chooses."""

    op: str  # "sa" | "l" | "c"
    param: str  # "sdp" | "wma" | "dft" | "dct" | kernel size as a string
    hidden: int
    heads: int
    ff: tuple[int, ...]  # feed-forward widths, one per FF layer

    @property
    def operation(self) -> str:
        """The Optuna value of the op/param pair, e.g. ``"sa-sdp"``."""
        return f"{self.op}-{self.param}"

    def describe(self) -> str:
        """``2x256 sa-sdp f512-512-512``: heads x hidden, operation, feed-forward widths."""
        return f"{self.heads}x{self.hidden} {self.operation} f{'-'.join(map(str, self.ff))}"
