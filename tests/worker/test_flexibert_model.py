"""FlexiBERT modules on tiny shapes: every operation, width changes, padding, parameter counts,
weight transfer and MLM pre-training (a few seconds on two CPU cores)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.fft
import torch
from _tiny import POSITIONS, VOCAB, arch_with, batch, build

from archsearch.spaces import SpecError
from archsearch.spaces._flexibert_overlap import (
    check_flexibert_architecture,
    flexibert_parameter_count,
    flexibert_parameter_shapes,
    from_small_architecture,
    weight_overlap,
)
from archsearch.worker._cost import count_flops
from archsearch.worker._flexibert_config import FlexiBertConfig
from archsearch.worker._flexibert_model import (
    DynamicConvMixer,
    FlexiBertForMaskedLM,
    FlexiBertForSequenceClassification,
    LinearTransformMixer,
    WmaSelfAttention,
)
from archsearch.worker._flexibert_transfer import load_checkpoint, transfer_weights
from archsearch.worker._mlm_pretrain import MlmCorpus, MlmTraining, mask_tokens, pretrain_mlm

OPERATIONS = [
    ("sa", "sdp"),
    ("sa", "wma"),
    ("l", "dft"),
    ("l", "dct"),
    ("c", "5"),
    ("c", "9"),
    ("c", "13"),
]


@pytest.mark.parametrize(("op", "param"), OPERATIONS)
def test_each_operation_forward_backward_with_width_changes(op: str, param: str) -> None:
    arch = arch_with(op, param)
    model = build(arch, labels=3)
    inputs = batch([16, 11, 5])
    out = model(**inputs, labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3)
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    no_gradient = [
        name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)
    ]
    assert no_gradient == []
    # Every word-embedding row a real token reads gets a gradient.
    word = model.flexibert.embeddings.word_embeddings.weight.grad
    assert word is not None
    used = inputs["input_ids"][inputs["attention_mask"].bool()].unique()
    assert torch.all(word[used].abs().sum(dim=1) > 0)
    hidden = model.flexibert(**{k: v for k, v in inputs.items()})
    assert hidden.shape == (3, 16, 128)  # h_last
    assert model.flexibert.layers[0].projection is not None  # 128 -> 256
    assert model.flexibert.layers[1].projection is not None  # 256 -> 128
    assert model.flexibert.layers[2].projection is None  # last layer


@pytest.mark.parametrize(("op", "param"), OPERATIONS)
def test_padding_does_not_change_real_tokens(op: str, param: str) -> None:
    model = build(arch_with(op, param)).eval()
    inputs = batch([12, 7, 3], seed=1)
    with torch.no_grad():
        padded = model.flexibert(**inputs)
        for row, length in enumerate([12, 7, 3]):
            alone = model.flexibert(**{k: v[row : row + 1, :length] for k, v in inputs.items()})
            torch.testing.assert_close(padded[row, :length], alone[0], atol=2e-5, rtol=1e-4)


def test_linear_transforms_are_the_orthonormal_2d_dft_and_dct() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16)
    full = torch.ones(2, 7, dtype=torch.bool)
    for kind in ("dft", "dct"):
        mixer = LinearTransformMixer(16, kind)
        mean_v = mixer.value(x).mean(dim=1, keepdim=True)  # uniform attention over all tokens
        mixed = mixer(x, full) - mean_v
        if kind == "dft":
            expected = torch.fft.fft2(x, norm="ortho").real
        else:
            expected = torch.from_numpy(
                scipy.fft.dctn(x.numpy(), type=2, axes=(1, 2), norm="ortho")
            ).float()
        torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)
    # A padded row is transformed over its own length: equal to the unpadded transform.
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    mixer = LinearTransformMixer(16, "dft")
    out = mixer(x, mask)
    mean_short = mixer.value(x[1:, :4]).mean(dim=1, keepdim=True)
    expected_short = torch.fft.fft2(x[1:, :4], norm="ortho").real + mean_short
    torch.testing.assert_close(out[1:, :4], expected_short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["dft", "dct"])
def test_a_linear_transform_trains_after_an_inference_forward(kind: str) -> None:
    """A PUDF curriculum scores the model under inference_mode before it trains: the
    transform's cached hidden-axis matrices must stay usable for training (they were inference
    tensors, and every training step failed)."""
    model = build(arch_with("l", kind, [32, 64, 32]))
    inputs = batch([5, 8, 8])
    with torch.inference_mode():
        model.eval()(**inputs)
    model.train()(**inputs, labels=torch.tensor([0, 1, 0])).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_wma_similarity_is_one_shared_matrix_in_range() -> None:
    torch.manual_seed(0)
    mixer = WmaSelfAttention(128, 4)
    assert mixer.similarity.shape == (32, 32)  # d_head x d_head, one for all heads
    assert mixer.similarity.min() >= -0.1 and mixer.similarity.max() <= 0.1
    assert mixer.similarity.std() > 0.05  # uniform on [-0.1, 0.1] has std 0.058


def test_dynamic_convolution_halves_and_locality() -> None:
    torch.manual_seed(0)
    mixer = DynamicConvMixer(64, 4, 5).eval()
    x = torch.randn(1, 20, 64)
    mask = torch.ones(1, 20, dtype=torch.bool)
    out = mixer(x, mask)
    assert out.shape == (1, 20, 64)
    # The convolution half of token 0 sees only tokens 0..2 (kernel 5, zero padding):
    # changing token 10 leaves it alone, while the attention half (global) moves.
    changed = x.clone()
    changed[0, 10] += 1.0
    moved = mixer(changed, mask) - out
    assert moved[0, 0, 32:].abs().max() < 1e-6
    assert moved[0, 0, :32].abs().max() > 1e-4
    with pytest.raises(ValueError, match="even heads"):
        DynamicConvMixer(64, 3, 5)


def test_parameter_count_by_hand() -> None:
    # One sdp layer, h=4, n=2, FF [8]; vocab 10, 6 positions, 2 types, 2 labels:
    # embeddings (10+6+2)*4 + LayerNorm 8 = 80; Q, K, V 3*(16+4) = 60;
    # output projection 20 + LayerNorm 8 = 28; FF 4*8+8 + 8*4+4 = 76, LayerNorm 8;
    # pooler 16+4 = 20; classifier 8+2 = 10.  Total 282.
    sdp = {"l": 1, "o": ["sa"], "p": ["sdp"], "h": [4], "n": [2], "f": [[8]]}
    assert flexibert_parameter_count(sdp, 10, 6, 2, 2) == 282
    # wma adds W (h/n)^2 = 4; l keeps only V (h^2+h = 20 instead of 60): 282 + 4, 282 - 40.
    assert flexibert_parameter_count({**sdp, "p": ["wma"]}, 10, 6, 2, 2) == 286
    assert flexibert_parameter_count({**sdp, "o": ["l"], "p": ["dct"]}, 10, 6, 2, 2) == 242
    # c-3 at h=4, n=2 (one attention head of 2, one convolution head of 2) replaces the
    # 60 of Q, K, V by: Q, K, V Linear(4->2) 3*(8+2) = 30; depthwise 4*3 = 12; pointwise
    # 2*4 = 8; key bias 2; kernel Linear(2 -> 1*3) 6+3 = 9; conv_out Linear(4->2) 10: 71.
    assert flexibert_parameter_count({**sdp, "o": ["c"], "p": ["3"]}, 10, 6, 2, 2) == 293
    # Two layers of widths 4 -> 6 add a projection 4*6+6 = 30 after layer 0.
    two = {
        "l": 2,
        "o": ["sa", "sa"],
        "p": ["sdp", "sdp"],
        "h": [4, 6],
        "n": [2, 2],
        "f": [[8], [8]],
    }
    # layer 1 (h=6): QKV 3*(36+6)=126, out 42+12=54, FF 6*8+8+8*6+6=110, LN 12: 302;
    # pooler 42 and classifier 14 on width 6 instead of 20 and 10: +26.
    assert flexibert_parameter_count(two, 10, 6, 2, 2) == 282 + 30 + 302 + 26
    for arch in (sdp, two, {**sdp, "o": ["c"], "p": ["3"]}):
        model = FlexiBertForSequenceClassification(FlexiBertConfig(arch, 10, 6, 2, 2))
        assert sum(p.numel() for p in model.parameters()) == flexibert_parameter_count(
            arch, 10, 6, 2, 2
        )


def random_arch(rng: random.Random) -> dict[str, Any]:
    layers = rng.randint(1, 4)
    ops = [rng.choice(OPERATIONS) for _ in range(layers)]
    return {
        "l": layers,
        "o": [o for o, _ in ops],
        "p": [p for _, p in ops],
        "h": [rng.choice([32, 64, 128]) for _ in range(layers)],
        "n": [rng.choice([2, 4]) for _ in range(layers)],
        "f": [[rng.choice([16, 48, 96]) for _ in range(rng.randint(1, 3))] for _ in range(layers)],
    }


def test_parameter_shapes_and_counts_match_built_models() -> None:
    rng = random.Random(0)
    seen_ops: set[tuple[str, str]] = set()
    for _ in range(40):
        arch = random_arch(rng)
        seen_ops.update(zip(arch["o"], arch["p"], strict=True))
        labels = rng.choice([1, 2, 3])
        model = FlexiBertForSequenceClassification(
            FlexiBertConfig(arch, VOCAB, POSITIONS, 2, labels)
        )
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        assert shapes == flexibert_parameter_shapes(arch, VOCAB, POSITIONS, 2, labels)
        assert sum(p.numel() for p in model.parameters()) == flexibert_parameter_count(
            arch, VOCAB, POSITIONS, 2, labels
        )
    assert seen_ops == set(OPERATIONS)


def test_regression_loss_is_mse() -> None:
    model = build(arch_with("sa", "sdp"), labels=1).eval()
    inputs = batch([8, 8])
    targets = torch.tensor([0.5, 3.0])
    out = model(**inputs, labels=targets)
    assert out.loss is not None
    expected = ((out.logits.squeeze(-1) - targets) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)


def test_mlm_head_is_tied_only_at_equal_widths() -> None:
    same = FlexiBertForMaskedLM(FlexiBertConfig(arch_with("l", "dct"), VOCAB, POSITIONS))
    assert same.tied
    assert same.mlm_decoder.weight is same.flexibert.embeddings.word_embeddings.weight
    other = FlexiBertForMaskedLM(
        FlexiBertConfig(arch_with("l", "dct", [128, 256]), VOCAB, POSITIONS)
    )
    assert not other.tied and other.mlm_decoder.weight.shape == (VOCAB, 256)
    out = other(**batch([6, 4]))
    assert out.logits.shape == (2, 6, VOCAB)


def test_flops_count_every_operation() -> None:
    for op, param in OPERATIONS:
        arch = {"l": 1, "o": [op], "p": [param], "h": [64], "n": [2], "f": [[128]]}
        model = build(arch)
        # Q/K/V or V, output projection, FF: at least the FF's 2 * 2*s*h*f and the output
        # projection's 2*s*h^2 at s = 16; the transforms are matrix products and count too.
        assert count_flops(model, 16) > 2 * 2 * 16 * 64 * 128 + 2 * 16 * 64 * 64


def test_architecture_checks_name_the_field() -> None:
    good = arch_with("c", "9")
    assert check_flexibert_architecture(good) == good
    bad_cases = [
        ({**good, "o": ["sa", "x", "c"]}, r"architecture\.o\[1\]"),
        ({**good, "p": ["sdp", "8", "5"]}, r"architecture\.p\[1\].*odd"),
        ({**good, "p": ["dft", "9", "5"]}, r"architecture\.p\[0\]"),
        ({**good, "n": [2, 3, 2]}, r"architecture\.n\[1\]"),
        ({**good, "h": [128, 256]}, r"architecture\.h"),
        ({**good, "f": [[256], [], [128]]}, r"architecture\.f\[1\]"),
        ({**good, "l": 0}, r"architecture\.l"),
        ({**good, "x": 1}, r"architecture\.x"),
    ]
    for arch, field in bad_cases:
        with pytest.raises(SpecError, match=field):
            check_flexibert_architecture(arch)
    small = {"l": 2, "a": [2, 4], "h": [128, 256], "s": ["sdp", "wma"], "f": [512, 1024]}
    assert from_small_architecture(small) == {
        "l": 2,
        "o": ["sa", "sa"],
        "p": ["sdp", "wma"],
        "h": [128, 256],
        "n": [2, 4],
        "f": [[512], [1024]],
    }


def test_transfer_from_identical_architecture_copies_everything(tmp_path: Path) -> None:
    arch = arch_with("c", "9")
    source = build(arch, seed=1).eval()
    source.save_pretrained(tmp_path / "ckpt")
    config, state = load_checkpoint(tmp_path / "ckpt")
    assert config.architecture == arch
    target = build(arch, seed=2).eval()
    inputs = batch([10, 6])
    assert not torch.allclose(target(**inputs).logits, source(**inputs).logits)
    assert transfer_weights(state, config.architecture, target) == 1.0
    assert weight_overlap(arch, arch, VOCAB, POSITIONS) == 1.0
    torch.testing.assert_close(target(**inputs).logits, source(**inputs).logits)


def test_partial_transfer_matches_the_analytic_overlap() -> None:
    source_arch = arch_with("sa", "wma")
    # Layer 1's operation changes (sa -> l: its mixer stays random), layer 0 widens, and a
    # fourth layer has no counterpart.
    target_arch = {
        "l": 4,
        "o": ["sa", "l", "c", "sa"],
        "p": ["sdp", "dft", "9", "sdp"],
        "h": [256, 256, 128, 128],
        "n": [4, 4, 2, 2],
        "f": [[512], [128], [128, 64], [64]],
    }
    source = build(source_arch, seed=1)
    target = build(target_arch, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    measured = transfer_weights(source.state_dict(), source_arch, target)
    expected = weight_overlap(source_arch, target_arch, VOCAB, POSITIONS)
    assert 0 < measured < 1
    assert measured == pytest.approx(expected, rel=1e-12)
    after = target.state_dict()
    src = source.state_dict()
    # Ordered rule: the leading 128 of layer 0's 256 query rows come from the 128-wide source.
    query = "flexibert.layers.0.mixer.query.weight"
    torch.testing.assert_close(after[query][:128, :128], src[query])
    torch.testing.assert_close(after[query][128:], before[query][128:])
    # Different operation type in layer 1: its token-mixing block keeps its initialisation,
    # while its feed-forward stack takes the leading slices.
    value = "flexibert.layers.1.mixer.value.weight"
    torch.testing.assert_close(after[value], before[value])
    ff = "flexibert.layers.1.feed_forward.0.weight"
    torch.testing.assert_close(after[ff][:128, :256], src[ff][:128, :256])
    # A layer the source lacks keeps everything it had.
    last = "flexibert.layers.3.feed_forward.0.weight"
    torch.testing.assert_close(after[last], before[last])
    # The analytic overlap is directional: 0 < both, and the source fills less of a bigger
    # target than the target would fill of the source.
    assert 0 < weight_overlap(target_arch, source_arch, VOCAB, POSITIONS) < 1
    # A dry run measures the same share and copies nothing.
    fresh = build(target_arch, seed=2)
    assert transfer_weights(source.state_dict(), source_arch, fresh, apply=False) == measured
    torch.testing.assert_close(fresh.state_dict()[query], before[query])


def test_masking_is_80_10_10_of_15_percent() -> None:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 256), generator=generator)
    ids[:, 0] = 1  # special
    mask = torch.ones_like(ids)
    mask[:, 200:] = 0  # padding
    corrupted, labels = mask_tokens(ids, mask, torch.tensor([1]), 3, 1000, generator)
    picked = labels != -100
    eligible = 64 * 199
    assert not picked[:, 0].any() and not picked[:, 200:].any()
    assert picked.sum().item() / eligible == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[picked], ids[picked])
    share_mask = (corrupted[picked] == 3).float().mean().item()
    share_kept = (corrupted[picked] == ids[picked]).float().mean().item()
    assert share_mask == pytest.approx(0.8, abs=0.03)
    assert share_kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.03)
    assert torch.equal(corrupted[~picked], ids[~picked])


def test_mlm_pretraining_reduces_the_loss() -> None:
    torch.manual_seed(0)
    arch = {
        "l": 2,
        "o": ["sa", "c"],
        "p": ["sdp", "5"],
        "h": [32, 32],
        "n": [2, 2],
        "f": [[64], [64]],
    }
    model = FlexiBertForMaskedLM(FlexiBertConfig(arch, VOCAB, POSITIONS))
    rows = [np.array([1, *range(5 + i, 15 + i), 2], dtype=np.int32) for i in range(8)]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.concatenate(rows)
    corpus = MlmCorpus(flat, np.zeros_like(flat, dtype=np.int8), offsets)

    probe = torch.from_numpy(np.stack(rows).astype(np.int64))
    masked, labels = mask_tokens(
        probe, torch.ones_like(probe), torch.tensor([1, 2]), 3, VOCAB, torch.Generator()
    )

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = model(input_ids=masked, labels=labels).loss
        assert loss is not None
        return float(loss)

    before = probe_loss()
    run = MlmTraining(model, corpus, 25, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0)
    losses = pretrain_mlm(run, mask_id=3, special_ids=[0, 1, 2, 3]).losses
    assert len(losses) == 25 and all(math.isfinite(x) for x in losses)
    assert probe_loss() < before - 0.5
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.parametrize("kind", ["dft", "dct"])
def test_device_sequence_matrices_equal_the_cached_ones(kind: str) -> None:
    """The GPU path builds the padded per-example matrices from the lengths tensor; on the CPU
    it must give exactly what the cached numpy matrices give."""
    from archsearch.worker._flexibert_mixers import (
        _device_sequence_matrices,
        _transform_matrices,
    )

    lengths = torch.tensor([9, 1, 4, 9, 6])
    built = _device_sequence_matrices(kind, lengths, 9, torch.float64)
    assert [m.shape for m in built] == [(5, 9, 9)] * len(_transform_matrices(kind, 1))
    for part, matrix in enumerate(built):
        for row, n in enumerate(lengths.tolist()):
            expected = np.zeros((9, 9))
            expected[:n, :n] = _transform_matrices(kind, n)[part]
            np.testing.assert_allclose(matrix[row].numpy(), expected, atol=1e-12)


def test_masked_only_head_gives_the_same_loss_and_gradients() -> None:
    """``masked_only`` runs the vocabulary projection on the masked rows alone: same loss,
    same gradients as the full head (tied and untied), logits only for those rows."""
    for arch in (arch_with("l", "dct"), arch_with("l", "dct", [128, 256])):
        torch.manual_seed(0)
        model = FlexiBertForMaskedLM(FlexiBertConfig(arch, VOCAB, POSITIONS)).eval()
        ids = torch.randint(5, VOCAB, (3, 12))
        labels = torch.full_like(ids, -100)
        labels[0, 2], labels[1, 5], labels[2, 0], labels[2, 11] = 7, 9, 11, 13
        grads = []
        for masked_only in (False, True):
            model.zero_grad()
            out = model(ids, labels=labels, masked_only=masked_only)
            out.loss.backward()
            grads.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
        assert out.logits.shape == (4, VOCAB)
        torch.testing.assert_close(grads[0][0], grads[1][0])
        for full, masked in zip(grads[0][1], grads[1][1], strict=True):
            torch.testing.assert_close(full, masked, atol=1e-6, rtol=1e-5)


def test_a_saved_classifier_loads_back_as_it_was(tmp_path: Path) -> None:
    """What a user does with a FlexiBERT checkpoint `archsearch fetch` downloaded."""
    from archsearch.worker import FlexiBertForSequenceClassification

    arch = arch_with("c", "9")
    source = build(arch, seed=1).eval()
    source.save_pretrained(tmp_path / "ckpt")
    loaded = FlexiBertForSequenceClassification.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training and loaded.architecture == arch
    inputs = batch([10, 6])
    torch.testing.assert_close(loaded(**inputs).logits, source(**inputs).logits, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="not a FlexiBERT checkpoint"):
        FlexiBertForSequenceClassification.from_pretrained(tmp_path)
