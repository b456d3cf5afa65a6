"""``predict_scored``: the loop's dev predictions and dev loss, against Hugging Face's own
loss of the same model on the same split (one batch, no length sorting)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _loop_data import DEV, _Tokenizer
from _tiny import TINY_BERT

from archsearch.spaces import get_task
from archsearch.worker._batches import EncodedSplit, collate
from archsearch.worker._dev_scores import predict_scored, with_dev_loss
from archsearch.worker._models import model_factory
from archsearch.worker._precision import FP32

CPU = torch.device("cpu")


def scored(task: str, split: EncodedSplit) -> tuple[torch.nn.Module, np.ndarray, float]:
    torch.manual_seed(0)
    model = model_factory("bert").build(TINY_BERT, get_task(task), _Tokenizer())
    model.train()
    predictions, loss = predict_scored(
        model, get_task(task), split, batch_size=5, pad_id=0, device=CPU, precision=FP32
    )
    assert model.training  # left in the mode it was in
    return model, predictions, loss


def hf_loss(model: torch.nn.Module, split: EncodedSplit) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(**collate(split, np.arange(len(split)), 0, CPU)).loss)


def test_classification_the_cross_entropy_of_the_gold_labels() -> None:
    model, predictions, loss = scored("sst2", DEV)
    assert loss == pytest.approx(hf_loss(model, DEV), rel=1e-5)
    model.eval()
    with torch.no_grad():
        logits = model(**collate(DEV, np.arange(len(DEV)), 0, CPU, with_labels=False)).logits
    assert predictions.tolist() == logits.argmax(-1).tolist()


def test_regression_the_squared_error_of_the_gold_scores() -> None:
    scores = np.linspace(0, 5, len(DEV)).astype(np.float32)
    split = EncodedSplit(DEV.input_ids, DEV.token_type_ids, DEV.offsets, scores)
    model, predictions, loss = scored("stsb", split)
    assert predictions.dtype == np.float32
    assert loss == pytest.approx(float(np.mean((predictions - scores) ** 2)), rel=1e-5)
    assert loss == pytest.approx(hf_loss(model, split), rel=1e-5)


def test_a_label_outside_the_classes_gives_no_dev_loss() -> None:
    split = EncodedSplit(DEV.input_ids, DEV.token_type_ids, DEV.offsets, DEV.labels - 1)
    _, _, loss = scored("sst2", split)
    assert np.isnan(loss)
    assert with_dev_loss({"accuracy": 0.5}, loss) == {"accuracy": 0.5}
    assert with_dev_loss({"accuracy": 0.5}, 0.7) == {"accuracy": 0.5, "dev_loss": 0.7}
