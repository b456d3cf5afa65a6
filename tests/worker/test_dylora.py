"""DyLoRA on peft's LoRA layers (worker/_dylora.py, _lora_spec.py, _lora_model.py's hooks), on a
tiny random 2-layer BERT: exact at r_max, the α/b formula, frozen-mode gradients, what AdamW
does to components without gradient, merging at every rank, save and load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_lora import tiny_classifier
from peft import PeftModel, get_peft_model
from transformers import BertForSequenceClassification

from archsearch.worker import CandidateError
from archsearch.worker._cost import count_flops
from archsearch.worker._dylora import (
    DyLoRA,
    attach_dylora,
    dylora_of,
    load_dylora,
    lora_config,
    save_dylora,
)
from archsearch.worker._lora_model import lora_hooks
from archsearch.worker._lora_spec import LoraSpec, parse_lora_spec

R_MAX, ALPHA = 8, 16.0


@pytest.fixture(scope="module")
def base() -> BertForSequenceClassification:
    model: BertForSequenceClassification = tiny_classifier()
    return model


def spec(**given: Any) -> LoraSpec:
    return parse_lora_spec({"r_max": R_MAX, "alpha": ALPHA, **given})


def trained_like(model: torch.nn.Module, seed: int = 1) -> DyLoRA:
    """Random factors (B starts at zero in LoRA, which would hide everything) and head."""
    lora = dylora_of(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight, _ in lora.factors():
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    return lora


def dylora_model(base: torch.nn.Module, **given: Any) -> tuple[torch.nn.Module, DyLoRA]:
    model = attach_dylora(copy.deepcopy(base), spec(**given))
    return model, trained_like(model)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids).logits
    return out


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 100, (4, 9), generator=torch.Generator().manual_seed(5))


def test_dylora_at_r_max_is_exactly_plain_peft_lora(base, ids) -> None:
    model, _ = dylora_model(base)
    plain = get_peft_model(copy.deepcopy(base), lora_config(spec()))
    # the same factor values in both (plain keeps them as ordinary weights)
    stored = {
        name.replace(".parametrizations.weight.original", ".weight"): p
        for name, p in model.named_parameters()
    }
    with torch.no_grad():
        for name, p in plain.named_parameters():
            p.copy_(stored[name])
    model.eval()
    plain.eval()
    assert torch.equal(logits(model, ids), logits(plain, ids))
    # gradients too, in unfrozen training at r_max
    for m in (model, plain):
        m.train()
        torch.manual_seed(11)  # the same dropout masks
        m(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
    grads = {
        name.replace(".parametrizations.weight.original", ".weight"): p.grad
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    plain_grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    assert grads.keys() == plain_grads.keys() and grads
    assert all(torch.equal(grads[n], plain_grads[n]) for n in grads)


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_rank_b_adds_alpha_over_b_times_truncated_factors(base, rank) -> None:
    model, lora = dylora_model(base)
    model.eval()
    lora.set_rank(rank)
    layer = lora.layers[0]
    a = layer.lora_A["default"].parametrizations["weight"].original
    b = layer.lora_B["default"].parametrizations["weight"].original
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        delta = layer(x) - layer.get_base_layer()(x)
        expected = (ALPHA / rank) * x @ a[:rank].T @ b[:, :rank].T
        assert torch.allclose(delta, expected, atol=1e-6)
        assert torch.allclose(
            layer.get_delta_weight("default"), (ALPHA / rank) * b[:, :rank] @ a[:rank], atol=1e-6
        )


def _factor_grads(lora: DyLoRA) -> list[tuple[torch.Tensor, int]]:
    grads = []
    for weight, axis in lora.factors():
        assert weight.grad is not None
        grads.append((weight.grad, axis))
    return grads


def _components_with_gradient(grad: torch.Tensor, axis: int) -> list[int]:
    norms = grad.abs().sum(dim=1 - axis)
    return [i for i, n in enumerate(norms.tolist()) if n > 0]


@pytest.mark.parametrize(("frozen", "expected"), [(True, [2]), (False, [0, 1, 2])])
def test_frozen_mode_gives_gradient_to_component_b_minus_1_only(
    base, ids, frozen, expected
) -> None:
    model, lora = dylora_model(base)
    model.train()
    lora.set_rank(3, frozen=frozen)
    model(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
    for grad, axis in _factor_grads(lora):
        assert _components_with_gradient(grad, axis) == expected
    # evaluation truncates only: the forward at rank 3 is the same frozen or not
    model.eval()
    frozen_out = logits(model, ids)
    lora.set_rank(3, frozen=not frozen)
    assert torch.equal(frozen_out, logits(model, ids))


def _run_steps(
    model: torch.nn.Module, lora_spec: LoraSpec, ids: torch.Tensor, steps: int
) -> list[tuple[int, list[list[int]]]]:
    """Trains ``steps`` AdamW steps (weight decay 0.1) through :func:`lora_hooks`; returns each
    step's rank and, per factor, the components whose stored values changed in that step."""
    hooks = lora_hooks(lora_spec, seed=3, seq_len=8)
    assert hooks.init_fn and hooks.before_step and hooks.after_step
    hooks.init_fn(model)
    lora = dylora_of(model)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.05, weight_decay=0.1
    )
    model.train()
    changed = []
    for step in range(1, steps + 1):
        hooks.before_step(step)
        rank = lora.rank
        before = [(w.detach().clone(), axis) for w, axis in lora.factors()]
        model(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        hooks.after_step(step)
        assert lora.rank == R_MAX  # back at r_max for the loop's evaluations
        moved = [
            _components_with_gradient(w - old, axis)
            for (w, _), (old, axis) in zip(lora.factors(), before, strict=True)
        ]
        changed.append((rank, moved))
    return changed


def test_adamw_still_moves_components_without_gradient_by_default(base, ids) -> None:
    """The reference implementation's behaviour, kept by default: in frozen mode a component
    gets no gradient below b-1, but AdamW's momentum and decoupled weight decay move it."""
    model, _ = dylora_model(base)
    changed = _run_steps(model, spec(frozen=True), ids, steps=6)
    moved_without_gradient = [
        (rank, comps)
        for rank, per_factor in changed
        for comps in per_factor
        if set(comps) - {rank - 1}
    ]
    assert moved_without_gradient, changed


def test_strict_mode_changes_only_the_components_that_got_gradient(base, ids) -> None:
    model, _ = dylora_model(base)
    changed = _run_steps(model, spec(frozen=True, strict=True), ids, steps=6)
    for rank, per_factor in changed:
        for comps in per_factor:
            assert set(comps) <= {rank - 1}, (rank, comps)
    model, _ = dylora_model(base)
    for rank, per_factor in _run_steps(model, spec(frozen=False, strict=True), ids, steps=6):
        for comps in per_factor:
            assert set(comps) <= set(range(rank)), (rank, comps)


def test_the_rank_is_drawn_uniformly_from_the_trials_seed(base) -> None:
    def draws(seed: int) -> list[int]:
        model = attach_dylora(copy.deepcopy(base), spec())
        hooks = lora_hooks(spec(), seed, seq_len=8)
        assert hooks.init_fn and hooks.before_step
        hooks.init_fn(model)
        ranks = []
        for step in range(400):
            hooks.before_step(step)
            ranks.append(dylora_of(model).rank)
        return ranks

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    counts = [first.count(b) for b in range(1, R_MAX + 1)]
    assert sum(counts) == 400 and min(counts) >= 25, counts  # 50 expected each


def test_merged_equals_unmerged_at_every_rank_and_after_changing_rank(base, ids) -> None:
    model, lora = dylora_model(base)
    model.eval()
    base_weights = [layer.get_base_layer().weight.detach().clone() for layer in lora.layers]
    unmerged = {}
    for rank in range(1, R_MAX + 1):
        lora.set_rank(rank)
        unmerged[rank] = logits(model, ids)
        lora.merge()
        assert lora.merged
        assert torch.allclose(logits(model, ids), unmerged[rank], atol=1e-5)
        lora.unmerge()
    # merged once, then the rank changes: the merged delta must follow (the known pitfall)
    lora.set_rank(3)
    lora.merge()
    for rank in (5, 1, 8, 2, 3):
        lora.set_rank(rank)
        assert lora.merged
        assert torch.allclose(logits(model, ids), unmerged[rank], atol=1e-5), rank
    lora.unmerge()
    for layer, weight in zip(lora.layers, base_weights, strict=True):
        assert torch.allclose(layer.get_base_layer().weight, weight, atol=1e-6)


def test_save_and_load_round_trip(base, ids, tmp_path: Path) -> None:
    model, lora = dylora_model(base)
    with torch.no_grad():  # a trained head, too
        for name, p in model.named_parameters():
            if "classifier" in name and p.requires_grad:
                p.add_(0.5)
    model.eval()
    lora.set_rank(5)
    params = [id(p) for p in model.parameters()]
    save_dylora(model, tmp_path / "adapter")
    # saving leaves the model as it was (an optimiser holding its parameters keeps working)
    assert [id(p) for p in model.parameters()] == params
    assert lora.rank == 5 and all(
        hasattr(layer.lora_A["default"], "parametrizations") for layer in lora.layers
    )
    loaded = load_dylora(copy.deepcopy(base), tmp_path / "adapter").eval()
    assert dylora_of(loaded).rank == 5
    for rank in range(1, R_MAX + 1):
        lora.set_rank(rank)
        dylora_of(loaded).set_rank(rank)
        assert torch.equal(logits(model, ids), logits(loaded, ids)), rank
    # peft's own files: plain peft loads them as the rank-r_max LoRA
    plain = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "adapter")).eval()
    lora.set_rank(R_MAX)
    assert torch.equal(logits(plain, ids), logits(model, ids))
    lora.merge()
    with pytest.raises(ValueError, match="unmerge"):
        save_dylora(model, tmp_path / "merged")


def test_costs_can_be_measured_on_a_truncated_model(base) -> None:
    model, lora = dylora_model(base)
    lora.set_rank(2)
    assert count_flops(model, 8) > count_flops(base, 8)  # the LoRA branch is counted


def test_parameter_counts_per_rank(base) -> None:
    model, lora = dylora_model(base)
    per_module = 32 + 32  # d_in + d_out of query and value
    modules = 2 * 2
    head = 32 * 2 + 2
    for rank in (1, 4, 8):
        assert lora.lora_parameters(rank) == rank * per_module * modules
        assert lora.trainable_parameters(rank) == rank * per_module * modules + head
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        lora.trainable_parameters(R_MAX)
    )


def test_set_rank_outside_the_range_is_refused(base) -> None:
    _, lora = dylora_model(base)
    for rank in (0, R_MAX + 1):
        with pytest.raises(ValueError, match=f"1..{R_MAX}"):
            lora.set_rank(rank)


def test_defaults_and_baselines() -> None:
    dy = parse_lora_spec({})
    assert (dy.mode, dy.r_max, dy.alpha, dy.targets, dy.frozen) == (
        "dylora",
        8,
        16.0,
        ("query", "value"),
        False,  # unfrozen: chosen on SST-2 and MRPC, held out on STS-B (RESULTS.md)
    )
    assert dy.eval_ranks == tuple(range(1, 9))
    plain = parse_lora_spec({"mode": "lora", "r_max": 4})
    assert plain.eval_ranks == (4,) and not plain.frozen and not plain.dynamic
    truncated = parse_lora_spec({"mode": "lora", "r_max": 8, "eval_ranks": [4, 1, 2, 4]})
    assert truncated.eval_ranks == (1, 2, 4)
    assert parse_lora_spec(dy.to_dict()) == dy


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], "recipe.lora: must be a JSON object"),
        ({"rank": 4}, r"recipe.lora: has unknown keys \['rank'\]"),
        ({"mode": "adalora"}, "recipe.lora.mode: must be one of"),
        ({"r_max": 0}, "recipe.lora.r_max: must be an int >= 1"),
        ({"r_max": True}, "recipe.lora.r_max"),
        ({"alpha": -1}, "recipe.lora.alpha: must be a number > 0"),
        ({"alpha": float("nan")}, "recipe.lora.alpha"),
        ({"targets": []}, "recipe.lora.targets: must be a non-empty list"),
        ({"targets": "query"}, "recipe.lora.targets"),
        ({"frozen": "yes"}, "recipe.lora.frozen: must be true or false"),
        ({"mode": "lora", "frozen": True}, "recipe.lora.frozen: applies to mode 'dylora' only"),
        ({"mode": "lora", "strict": True}, "recipe.lora.strict: applies to mode 'dylora' only"),
        ({"rank_dist": "geometric"}, "recipe.lora.rank_dist: must be one of"),
        ({"eval_ranks": [0, 3]}, r"recipe.lora.eval_ranks: \[0\] are outside 1..r_max \(8\)"),
        ({"eval_ranks": []}, "recipe.lora.eval_ranks: must be a non-empty list"),
        ({"dropout": 1.0}, r"recipe.lora.dropout: must be a number in \[0, 1\)"),
        ({"model": ""}, "recipe.lora.model: must be a local folder or a hub name"),
    ],
)
def test_bad_lora_settings_are_candidate_errors(given, message) -> None:
    with pytest.raises(CandidateError, match=message):
        parse_lora_spec(given)
