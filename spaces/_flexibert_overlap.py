"""FlexiBERT models described without building them: parameter shapes, counts, weight overlap.

Pure Python (no torch), so the server can rank trained neighbours of a query by how much of
it weight transfer would fill (:func:`weight_overlap`) without importing the worker.

The shapes are those of the worker's ``FlexiBertForSequenceClassification``
(``worker/_flexibert_model.py``), named exactly as its ``state_dict`` keys; the worker's tests
check the two agree for every operation and for width changes. Keep them in step.

Architectures use the ``flexibert`` format (space ``"flexibert"``)::

    {"l": L, "o": ["sa"|"l"|"c", ...], "p": [...], "h": [...], "n": [...], "f": [[...], ...]}

with ``p`` = ``"sdp"|"wma"`` for ``sa``, ``"dft"|"dct"`` for ``l`` and an odd kernel size
as a string (``"5"``, ``"9"``, ``"13"``) for ``c``. :func:`check_flexibert_architecture`
checks the structure any such model can be built from (not the sets of values one design
space allows, which ``FlexiBertSpace.validate`` checks); :func:`from_small_architecture`
converts the ``flexibert-small`` table format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from archsearch.spaces._errors import SpecError

#: Operation type -> the operation parameters it accepts (``c`` takes odd kernel sizes).
OPERATION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "sa": ("sdp", "wma"),
    "l": ("dft", "dct"),
}
#: The vocabulary of the uncased BERT tokenizer the worker uses by default.
DEFAULT_VOCAB_SIZE = 30522
DEFAULT_MAX_POSITIONS = 512
DEFAULT_TYPE_VOCAB_SIZE = 2
#: BOSHNAS fine-tunes a query directly from a trained neighbour at or above this overlap.
OVERLAP_THRESHOLD = 0.8

Shape = tuple[int, ...]
_ENCODER = "flexibert."
# Parameters of a layer's token-mixing block (the operation and its output projection):
# they transfer only between layers of the same operation type, since a projection trained
# to read one operation's output means nothing applied to another's.
_MIXER = re.compile(r"^flexibert\.layers\.(\d+)\.mixer(?:_output)?\.")


def check_flexibert_architecture(architecture: Any) -> dict[str, Any]:
    """The architecture, normalised (lists copied, ``p`` as strings), or SpecError.

    Checks what building a model needs: ``l`` a positive int; ``o``, ``p``, ``h``, ``n``
    and ``f`` lists of ``l`` entries; each operation type known with a parameter it takes;
    positive widths and head counts; ``h`` divisible by ``n``; for ``c`` an even ``n``
    (half the heads attend, half convolve) and an odd kernel; each ``f`` a non-empty list of
    positive widths.
    """
    if not isinstance(architecture, dict):
        raise SpecError("architecture", "must be a JSON object with keys l, o, p, h, n, f")
    extra = sorted(set(architecture) - {"l", "o", "p", "h", "n", "f"})
    if extra:
        raise SpecError(f"architecture.{extra[0]}", "unknown field", "keys are l, o, p, h, n, f")
    layers = architecture.get("l")
    if not _positive_int(layers):
        raise SpecError("architecture.l", f"must be a positive int, got {layers!r}")
    assert isinstance(layers, int)
    for key in ("o", "p", "h", "n", "f"):
        values = architecture.get(key)
        if not isinstance(values, list) or len(values) != layers:
            raise SpecError(f"architecture.{key}", f"must be a list of {layers} values (l)")
    out: dict[str, Any] = {"l": layers, "o": [], "p": [], "h": [], "n": [], "f": []}
    for i in range(layers):
        op, param = architecture["o"][i], architecture["p"][i]
        hidden, heads, ff = architecture["h"][i], architecture["n"][i], architecture["f"][i]
        if op == "c":
            if not (isinstance(param, str | int) and not isinstance(param, bool)):
                raise SpecError(f"architecture.p[{i}]", f"kernel {param!r} is not a size")
            kernel = str(param)
            if not kernel.isdigit() or int(kernel) % 2 == 0:
                raise SpecError(
                    f"architecture.p[{i}]", f"kernel {param!r} must be an odd size", 'e.g. "9"'
                )
            param = str(int(kernel))
        elif op in OPERATION_PARAMETERS:
            if param not in OPERATION_PARAMETERS[op]:
                raise SpecError(
                    f"architecture.p[{i}]",
                    f"{param!r} is not a parameter of operation {op!r}",
                    f"one of {', '.join(OPERATION_PARAMETERS[op])}",
                )
        else:
            raise SpecError(f"architecture.o[{i}]", f"unknown operation {op!r}", "sa, l or c")
        if not _positive_int(hidden):
            raise SpecError(f"architecture.h[{i}]", f"must be a positive int, got {hidden!r}")
        if not _positive_int(heads):
            raise SpecError(f"architecture.n[{i}]", f"must be a positive int, got {heads!r}")
        if hidden % heads:
            raise SpecError(
                f"architecture.n[{i}]", f"hidden size {hidden} is not divisible by {heads} heads"
            )
        if op == "c" and heads % 2:
            raise SpecError(
                f"architecture.n[{i}]",
                f"a convolution layer needs an even head count, got {heads}",
                "half the heads attend and half convolve",
            )
        if not isinstance(ff, list) or not ff or not all(_positive_int(w) for w in ff):
            raise SpecError(
                f"architecture.f[{i}]", f"must be a non-empty list of positive ints, got {ff!r}"
            )
        for key, value in (("o", op), ("p", param), ("h", hidden), ("n", heads), ("f", list(ff))):
            out[key].append(value)
    return out


def from_small_architecture(table_architecture: Mapping[str, Any]) -> dict[str, Any]:
    """The ``flexibert`` form of a ``flexibert-small`` table architecture
    (``{"l", "a": heads, "h", "s": "sdp"|"wma", "f": one width per layer}``): every layer
    self-attention with similarity ``s``, heads ``a`` and a one-layer feed-forward stack."""
    missing = [k for k in ("l", "a", "h", "s", "f") if k not in table_architecture]
    if missing:
        raise SpecError("architecture", f"lacks {missing}", "flexibert-small keys: l, a, h, s, f")
    layers = table_architecture["l"]
    for key in ("a", "h", "s", "f"):
        values = table_architecture[key]
        if not isinstance(values, list) or not _positive_int(layers) or len(values) != layers:
            raise SpecError(f"architecture.{key}", f"must be a list of {layers!r} values (l)")
    return check_flexibert_architecture(
        {
            "l": layers,
            "o": ["sa"] * layers,
            "p": list(table_architecture["s"]),
            "h": list(table_architecture["h"]),
            "n": list(table_architecture["a"]),
            "f": [[width] for width in table_architecture["f"]],
        }
    )


def flexibert_parameter_shapes(
    architecture: Mapping[str, Any],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    type_vocab: int = DEFAULT_TYPE_VOCAB_SIZE,
    num_labels: int = 2,
) -> dict[str, Shape]:
    """Every parameter of ``FlexiBertForSequenceClassification(architecture)``: its
    ``state_dict`` key and shape (the order carries no meaning).

    Args:
        architecture: A checked ``flexibert`` architecture.
        vocab_size: Rows of the word embedding.
        max_positions: Rows of the (absolute) position embedding.
        type_vocab: Rows of the token-type embedding.
        num_labels: Classifier outputs (1: regression).
    """
    return dict(_shapes(architecture, vocab_size, max_positions, type_vocab, num_labels))


def _shapes(
    arch: Mapping[str, Any], vocab: int, positions: int, types: int, labels: int
) -> Iterator[tuple[str, Shape]]:
    hidden = arch["h"]
    first, last = hidden[0], hidden[-1]
    yield "flexibert.embeddings.word_embeddings.weight", (vocab, first)
    yield "flexibert.embeddings.position_embeddings.weight", (positions, first)
    yield "flexibert.embeddings.token_type_embeddings.weight", (types, first)
    yield from _linear_norm("flexibert.embeddings.layer_norm", first)
    for i in range(arch["l"]):
        h, n, op = hidden[i], arch["n"][i], arch["o"][i]
        mixer = f"flexibert.layers.{i}.mixer"
        if op == "sa":
            for name in ("query", "key", "value"):
                yield from _linear(f"{mixer}.{name}", h, h)
            if arch["p"][i] == "wma":
                yield f"{mixer}.similarity", (h // n, h // n)
        elif op == "l":
            yield from _linear(f"{mixer}.value", h, h)
        else:  # "c": ConvBERT mixed attention, head ratio 2
            half, kernel = h // 2, int(arch["p"][i])
            for name in ("query", "key", "value"):
                yield from _linear(f"{mixer}.{name}", h, half)
            yield f"{mixer}.key_conv_depthwise.weight", (h, 1, kernel)
            yield f"{mixer}.key_conv_pointwise.weight", (half, h, 1)
            yield f"{mixer}.key_conv_bias", (half,)
            yield from _linear(f"{mixer}.conv_kernel", half, (n // 2) * kernel)
            yield from _linear(f"{mixer}.conv_out", h, half)
        yield from _linear(f"flexibert.layers.{i}.mixer_output", h, h)
        yield from _linear_norm(f"flexibert.layers.{i}.mixer_norm", h)
        widths = [h, *arch["f"][i], h]
        for j in range(len(widths) - 1):
            yield from _linear(f"flexibert.layers.{i}.feed_forward.{j}", widths[j], widths[j + 1])
        yield from _linear_norm(f"flexibert.layers.{i}.output_norm", h)
        if i + 1 < arch["l"] and hidden[i + 1] != h:
            yield from _linear(f"flexibert.layers.{i}.projection", h, hidden[i + 1])
    yield from _linear("pooler", last, last)
    yield from _linear("classifier", last, labels)


def _linear(name: str, inputs: int, outputs: int) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (outputs, inputs)
    yield f"{name}.bias", (outputs,)


def _linear_norm(name: str, width: int) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (width,)
    yield f"{name}.bias", (width,)


def flexibert_parameter_count(
    architecture: Mapping[str, Any],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    type_vocab: int = DEFAULT_TYPE_VOCAB_SIZE,
    num_labels: int = 2,
) -> int:
    """``params`` of ``FlexiBertForSequenceClassification(architecture)``: the sum of
    :func:`flexibert_parameter_shapes`' sizes. Per layer of width h, n heads, FF widths
    f₁…f_k (biases included, LayerNorms 2h each):

    * ``sa-sdp``: 3(h² + h); ``sa-wma`` adds (h/n)²; ``l``: h² + h (values only);
      ``c-k``: 3(h²/2 + h/2) + h·k + h²/2 + h/2 + (h/2 + 1)(n/2)k + h²/2 + h/2;
    * then h² + h + 2h (output projection, LayerNorm), Σ (a·b + b) over the FF chain
      h→f₁→…→f_k→h, 2h, and h·h' + h' when the next layer's width h' differs.

    Embeddings (V + P + T)·h₀ + 2h₀; pooler h_L² + h_L; classifier (h_L + 1)·num_labels.
    """
    shapes = flexibert_parameter_shapes(
        architecture, vocab_size, max_positions, type_vocab, num_labels
    )
    return sum(math.prod(shape) for shape in shapes.values())


def weight_overlap(
    source: Mapping[str, Any],
    target: Mapping[str, Any],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    type_vocab: int = DEFAULT_TYPE_VOCAB_SIZE,
    num_labels: int = 2,
    source_num_labels: int | None = None,
) -> float:
    """The share of ``target``'s parameters that ordered (OD) weight transfer from a trained
    ``source`` fills, computed from the two architectures alone.

    The rule (FlexiBERT's ``load_model_from_source``, OD variant): every parameter with the
    same name in both models receives the leading ``min`` slice along each axis; a layer's
    token-mixing block (its operation's weights and their output projection) only when both
    layers have the same operation type (``o``). Layer ``i`` maps to layer ``i``; a
    projection between layers exists, and transfers, only where both models change width
    there. The worker's ``transfer_weights`` copies exactly this and returns the same number.

    Args:
        source: The trained neighbour's architecture (``flexibert`` format, checked).
        target: The query's architecture.
        vocab_size, max_positions, type_vocab: Embedding rows (both models).
        num_labels: The target's classifier outputs.
        source_num_labels: The source's (default: ``num_labels``).

    Returns:
        Copied elements / all of the target's elements, in [0, 1]; 1.0 for equal
        architectures.
    """
    src = flexibert_parameter_shapes(
        source,
        vocab_size,
        max_positions,
        type_vocab,
        num_labels if source_num_labels is None else source_num_labels,
    )
    dst = flexibert_parameter_shapes(target, vocab_size, max_positions, type_vocab, num_labels)
    copied = 0
    for name, shape in dst.items():
        if transferable(name, source, target) and name in src:
            copied += math.prod(min(a, b) for a, b in zip(shape, src[name], strict=True))
    return copied / sum(math.prod(shape) for shape in dst.values())


def transferable(name: str, source: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether the parameter ``name`` may take weights from ``source`` at all: False only for
    a token-mixing parameter of a layer whose operation type differs (or is missing) in
    ``source``."""
    match = _MIXER.match(name)
    if match is None:
        return True
    layer = int(match.group(1))
    return layer < source["l"] and source["o"][layer] == target["o"][layer]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
