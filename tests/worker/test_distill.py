"""Teacher loading and caching, AutoDistil extraction, and the distillation losses.

Tiny random BERTs for almost everything; the packaged all-MiniLM-L6-v2 only for the loading
test and one exact-extraction test. A few seconds on two CPU cores.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertModel

from archsearch.spaces import get_task
from archsearch.worker._distill import Distiller
from archsearch.worker._distill_losses import (
    default_relation_heads,
    logit_kd_loss,
    minilm_v1_loss,
    minilm_v2_loss,
)
from archsearch.worker._extract import (
    head_unit_indices,
    init_student_from_teacher,
    teacher_layer_indices,
)
from archsearch.worker._qkv_capture import QKV, QKVCapture
from archsearch.worker._teacher import (
    TEACHER_RECIPES,
    load_teacher_encoder,
    resolve_teacher,
    teacher_recipe,
)
from archsearch.worker._teacher_cache import (
    CACHE_DIR_ENV,
    TeacherCache,
    TeacherJob,
    default_cache_root,
)

VOCAB = 100


def config(
    layers: int = 4,
    hidden: int = 32,
    heads: int = 4,
    intermediate: int = 64,
    labels: int = 3,
    **extra: Any,
) -> BertConfig:
    options: dict[str, Any] = {"attn_implementation": "eager", **extra}
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=64,
        id2label={i: str(i) for i in range(labels)},
        **options,
    )


def classifier(seed: int = 0, **shape: Any) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(config(**shape)).eval()


def batch(size: int = 3, length: int = 10, seed: int = 0, labels: int = 3) -> dict[str, Any]:
    """Random inputs whose later rows carry padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (size, length), generator=g)
    mask = torch.ones_like(ids)
    for row in range(1, size):
        mask[row, length - 3 * row :] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.randint(0, labels, (size,), generator=g),
    }


def inputs_of(b: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in b.items() if k != "labels"}


def last_qkv(model: torch.nn.Module, b: dict[str, Any], layer: int = -1) -> QKV:
    with QKVCapture(model, layer) as capture:
        model(**inputs_of(b))
    return capture.qkv


@pytest.fixture(scope="module")
def minilm() -> BertModel:
    return load_teacher_encoder()


# ----------------------------------------------------------------------------- teacher


def test_loads_packaged_teacher_offline(minilm: BertModel) -> None:
    c = minilm.config
    shape = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size)
    assert shape == (6, 384, 12, 1536) and c.vocab_size == 30522
    assert c._attn_implementation == "eager" and not minilm.training
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        out = minilm(input_ids=ids, output_attentions=True)
    # Under SDPA this tuple would be empty; eager returns one map per layer.
    assert len(out.attentions) == 6 and out.attentions[0].shape == (1, 12, 4, 4)


def test_teacher_names_resolve_or_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source, local = resolve_teacher(None)
    assert local and Path(source, "config.json").is_file()
    # its name (what an autodistil space writes) is the packaged copy, not a hub download
    assert resolve_teacher("all-MiniLM-L6-v2") == (source, True)
    assert resolve_teacher("sentence-transformers/all-MiniLM-L6-v2") == (source, True)
    assert resolve_teacher(tmp_path) == (str(tmp_path.resolve()), True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_teacher(str(tmp_path / "missing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        load_teacher_encoder("someone/some-bert")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_teacher("someone/some-bert") == ("someone/some-bert", False)


def test_teacher_recipes_cover_glue() -> None:
    assert set(TEACHER_RECIPES) >= {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}
    assert TEACHER_RECIPES["sst2"]["epochs"] == 3 and TEACHER_RECIPES["mrpc"]["epochs"] == 5
    assert all(
        r["max_seq_length"] == 128 and r["batch_size"] == 32 for r in TEACHER_RECIPES.values()
    )
    assert teacher_recipe("rte", learning_rate=3e-5)["learning_rate"] == 3e-5
    assert TEACHER_RECIPES["rte"]["learning_rate"] == 1e-4  # overrides do not leak
    with pytest.raises(ValueError, match="custom task"):
        teacher_recipe("my-task")


# ----------------------------------------------------------------------------- extraction


def test_full_shape_extraction_reproduces_minilm_exactly(minilm: BertModel) -> None:
    torch.manual_seed(1)
    student = BertModel(minilm.config).eval()
    assert not torch.equal(
        student.embeddings.word_embeddings.weight, minilm.embeddings.word_embeddings.weight
    )
    init_student_from_teacher(student, minilm)
    ids = torch.randint(1000, 5000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        t = minilm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        s = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(s.last_hidden_state, t.last_hidden_state)
    assert torch.equal(s.pooler_output, t.pooler_output)
    assert all(torch.equal(a, b) for a, b in zip(s.hidden_states, t.hidden_states, strict=True))


def test_full_shape_extraction_reproduces_classifier_logits() -> None:
    teacher, student = classifier(seed=0), classifier(seed=1)
    init_student_from_teacher(student, teacher)
    b = batch()
    with torch.no_grad():
        assert torch.equal(student(**inputs_of(b)).logits, teacher(**inputs_of(b)).logits)


def test_layer_indices_are_evenly_spaced() -> None:
    assert teacher_layer_indices(6, 12) == [0, 2, 4, 6, 8, 10]
    assert teacher_layer_indices(3, 6) == [0, 2, 4]
    assert teacher_layer_indices(4, 6) == [0, 1, 3, 4]
    assert teacher_layer_indices(1, 6) == [0]
    assert teacher_layer_indices(6, 6) == list(range(6))
    assert teacher_layer_indices(7, 12) == [0, 1, 3, 5, 6, 8, 10]  # floor(i * 12 / 7)
    for bad in (0, 7):
        with pytest.raises(ValueError, match="6-layer teacher"):
            teacher_layer_indices(bad, 6)
    assert head_unit_indices(2, 3, 5).tolist() == [0, 1, 2, 5, 6, 7]


def test_smaller_extraction_copies_leading_slices() -> None:
    # Teacher: 6 layers, hidden 64, 8 heads of 8; student: 3 layers, hidden 24, 6 heads of 4.
    teacher = classifier(layers=6, hidden=64, heads=8, intermediate=128)
    student = classifier(seed=1, layers=3, hidden=24, heads=6, intermediate=40)
    init_student_from_teacher(student, teacher)
    t: Any = teacher.bert
    s: Any = student.bert
    t_layer, s_layer = t.encoder.layer[2], s.encoder.layer[1]  # student layer 1 <- teacher 2
    for name in ("query", "key", "value"):
        sw = getattr(s_layer.attention.self, name)
        tw = getattr(t_layer.attention.self, name)
        # Student unit 5 = head 1, dim 1 = teacher unit 1 * 8 + 1 = 9; first 24 input columns.
        assert torch.equal(sw.weight[5], tw.weight[9, :24])
        assert torch.equal(sw.bias[23], tw.bias[5 * 8 + 3])
    out_w = s_layer.attention.output.dense.weight
    assert torch.equal(out_w[:, 5], t_layer.attention.output.dense.weight[:24, 9])
    assert torch.equal(
        s_layer.intermediate.dense.weight, t_layer.intermediate.dense.weight[:40, :24]
    )
    assert torch.equal(s_layer.output.dense.weight, t_layer.output.dense.weight[:24, :40])
    assert torch.equal(s_layer.output.LayerNorm.bias, t_layer.output.LayerNorm.bias[:24])
    last = s.encoder.layer[2].attention.self.query.weight
    assert torch.equal(last[:4], t.encoder.layer[4].attention.self.query.weight[:4, :24])
    emb_s, emb_t = s.embeddings, t.embeddings
    assert torch.equal(emb_s.word_embeddings.weight, emb_t.word_embeddings.weight[:, :24])
    assert torch.equal(emb_s.position_embeddings.weight, emb_t.position_embeddings.weight[:, :24])
    assert torch.equal(emb_s.LayerNorm.weight, emb_t.LayerNorm.weight[:24])
    assert torch.equal(s.pooler.dense.weight, t.pooler.dense.weight[:24, :24])
    assert torch.equal(student.classifier.weight, teacher.classifier.weight[:, :24])
    assert torch.equal(student.classifier.bias, teacher.classifier.bias)


def test_extraction_refuses_what_the_teacher_cannot_provide() -> None:
    teacher = classifier(layers=2, hidden=32, heads=4, intermediate=64)
    cases = {
        "num_hidden_layers 3": classifier(layers=3),
        "head size 16": classifier(layers=2, hidden=32, heads=2),  # wider heads than 8
        "num_attention_heads 8": classifier(layers=2, hidden=64, heads=8),
        "intermediate_size 128": classifier(layers=2, intermediate=128),
        "classifier has 2 outputs": classifier(layers=2, labels=2),
    }
    for message, student in cases.items():
        with pytest.raises(ValueError, match=message):
            init_student_from_teacher(student, teacher)
    other_vocab = BertModel(
        BertConfig(
            vocab_size=VOCAB + 1,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
    )
    with pytest.raises(ValueError, match="tokenizer"):
        init_student_from_teacher(other_vocab, teacher)
    with pytest.raises(TypeError):
        init_student_from_teacher(torch.nn.Linear(2, 2), teacher)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- losses


def test_logit_kd_matches_hand_computation() -> None:
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.5]])
    t = torch.tensor([[0.5, 1.5, -1.0], [0.0, 0.0, 2.0]])
    y = torch.tensor([1, 2])
    temperature, alpha = 2.0, 0.7

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / temperature) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist(), strict=True):
        ps, pt = softmax(srow), softmax(trow)
        kl += sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
        ce += -srow[label] + math.log(sum(math.exp(v) for v in srow))
    expected = alpha * temperature**2 * kl / 2 + (1 - alpha) * ce / 2
    got = logit_kd_loss(s, t, y, temperature, alpha, is_regression=False)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    only_kd = logit_kd_loss(s, t, None, temperature, alpha, is_regression=False)
    assert only_kd.item() == pytest.approx(temperature**2 * kl / 2, rel=1e-6)

    scores, teacher_scores, gold = (
        torch.tensor([[1.0], [3.0]]),
        torch.tensor([[2.0], [1.0]]),
        torch.tensor([0.0, 4.0]),
    )
    expected_regression = 0.25 * (1 + 4) / 2 + 0.75 * (1 + 1) / 2
    got_regression = logit_kd_loss(scores, teacher_scores, gold, 5.0, 0.25, is_regression=True)
    assert got_regression.item() == pytest.approx(expected_regression)
    with pytest.raises(ValueError, match="alpha"):
        logit_kd_loss(s, t, y, 1.0, 1.5, False)


def test_minilm_v2_is_zero_for_a_copy_and_trains_the_student() -> None:
    teacher = classifier(layers=4, hidden=32, heads=4)
    copy = classifier(seed=1, layers=4, hidden=32, heads=4)
    init_student_from_teacher(copy, teacher)
    b = batch()
    with torch.no_grad():
        t_qkv = last_qkv(teacher, b)
    assert minilm_v2_loss(last_qkv(copy, b), t_qkv, 4, b["attention_mask"]).item() <= 1e-6

    student = classifier(seed=2, layers=2, hidden=32, heads=4).train()
    loss = minilm_v2_loss(last_qkv(student, b), t_qkv, 4, b["attention_mask"])
    assert loss.item() > 1e-5  # random BERTs attend almost uniformly: small but clearly > 0
    loss.backward()
    attention = student.bert.encoder.layer[-1].attention.self
    for name in ("query", "key", "value"):
        grad = getattr(attention, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0
    assert student.bert.embeddings.word_embeddings.weight.grad is not None


def test_minilm_v2_relation_heads_bridge_widths_and_head_counts() -> None:
    teacher = classifier(layers=4, hidden=64, heads=8)
    student = classifier(seed=3, layers=2, hidden=48, heads=3).train()
    relation_heads = default_relation_heads(64, 48, 8)
    assert relation_heads == 8  # gcd(64, 48) = 16; the largest divisor <= 8 heads
    assert default_relation_heads(384, 128, 12) == 8 and default_relation_heads(384, 192, 12) == 12
    b = batch()
    with torch.no_grad():
        t_qkv = last_qkv(teacher, b)
    loss = minilm_v2_loss(last_qkv(student, b), t_qkv, relation_heads, b["attention_mask"])
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    assert student.bert.encoder.layer[-1].attention.self.key.weight.grad is not None
    with pytest.raises(ValueError, match="relation heads do not divide"):
        minilm_v2_loss(last_qkv(student, b), t_qkv, 5, b["attention_mask"])
    with pytest.raises(ValueError, match="attention heads"):
        minilm_v1_loss(last_qkv(student, b), t_qkv, b["attention_mask"])


def test_relation_losses_ignore_padding() -> None:
    teacher, student = classifier(layers=2), classifier(seed=1, layers=2)
    b = batch()
    noisy = dict(b)
    noisy["input_ids"] = b["input_ids"].masked_fill(b["attention_mask"] == 0, 7)
    losses = []
    with torch.no_grad():
        for inputs in (b, noisy):
            s, t = last_qkv(student, inputs), last_qkv(teacher, inputs)
            mask = inputs["attention_mask"]
            losses.append((minilm_v2_loss(s, t, 4, mask), minilm_v1_loss(s, t, mask)))
    # Padded tokens change their own Q/K/V, which must not reach the loss.
    assert not torch.equal(last_qkv(student, b).value, last_qkv(student, noisy).value)
    for clean, dirty in zip(losses[0], losses[1], strict=True):
        assert torch.allclose(clean, dirty, atol=1e-6)


def test_minilm_v1_is_zero_for_a_copy_and_matches_eager_attention() -> None:
    teacher, copy = classifier(), classifier(seed=1)
    init_student_from_teacher(copy, teacher)
    b = batch()
    with torch.no_grad():
        t_qkv = last_qkv(teacher, b)
        assert minilm_v1_loss(last_qkv(copy, b), t_qkv, b["attention_mask"]).item() <= 1e-6
        student = classifier(seed=2)
        assert minilm_v1_loss(last_qkv(student, b), t_qkv, b["attention_mask"]).item() > 1e-5
        # The distributions the loss compares are the model's own attention maps.
        maps = teacher(**inputs_of(b), output_attentions=True).attentions[-1]
    q = t_qkv.query.view(3, 10, 4, 8).transpose(1, 2)
    k = t_qkv.key.view(3, 10, 4, 8).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(b["attention_mask"][:, None, None, :] == 0, -1e9)
    assert torch.allclose(F.softmax(scores, -1), maps, atol=1e-6)


# ----------------------------------------------------------------------------- Distiller


def test_distiller_modes() -> None:
    teacher, student = classifier(), classifier(seed=1, layers=2, hidden=16, heads=4)
    b = batch()
    with torch.no_grad():
        hf_loss = student(**b).loss
        plain = Distiller(student, None, "none")(b)
        assert torch.allclose(plain.loss, hf_loss)
        assert plain.logits is not None and set(plain.parts) == {"hard"}

        teacher.train()
        logits = Distiller(student, teacher, "logits", temperature=3.0, alpha=0.4)(b)
        assert not teacher.training  # the distiller runs its teacher in eval mode
        expected = logit_kd_loss(
            student(**inputs_of(b)).logits, teacher(**inputs_of(b)).logits, b["labels"], 3.0, 0.4
        )
        assert torch.allclose(logits.loss, expected)
        assert set(logits.parts) == {"kd", "hard"}

        v2 = Distiller(student, teacher, "minilmv2", logit_weight=0.0)
        assert v2.num_relation_heads == 4  # gcd(32, 16) = 16 -> 4 (the teacher's heads)
        out = v2(b)
        relation = minilm_v2_loss(
            last_qkv(student, b), last_qkv(teacher, b), 4, b["attention_mask"]
        )
        assert torch.allclose(out.loss, relation) and set(out.parts) == {"relation"}

        both = Distiller(student, teacher, "minilm", alpha=0.0, relation_weight=2.0)(b)
        v1 = minilm_v1_loss(last_qkv(student, b), last_qkv(teacher, b), b["attention_mask"])
        assert torch.allclose(both.loss, hf_loss + 2.0 * v1)

    copy = classifier(seed=5)
    init_student_from_teacher(copy, teacher)
    zero = Distiller(copy, teacher.bert, "minilmv2", logit_weight=0.0)(inputs_of(b))
    assert zero.loss.item() <= 1e-6

    with pytest.raises(ValueError, match="BertForSequenceClassification"):
        Distiller(student, teacher.bert, "minilmv2")  # alpha > 0 needs the teacher's logits
    with pytest.raises(ValueError, match="minilmv2"):
        Distiller(classifier(layers=2, hidden=16, heads=2), teacher, "minilm")
    with pytest.raises(ValueError, match="unknown distillation mode"):
        Distiller(student, teacher, "hidden")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outputs"):
        Distiller(classifier(layers=2, labels=2), teacher, "logits")


def test_distiller_gradients_reach_the_student() -> None:
    teacher, student = classifier(), classifier(seed=1, layers=2).train()
    out = Distiller(student, teacher, "minilmv2", alpha=0.5)(batch())
    out.loss.backward()
    assert student.classifier.weight.grad is not None
    assert student.bert.encoder.layer[-1].attention.self.query.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


# ----------------------------------------------------------------------------- cache


class CountingFineTune:
    """A stand-in for real fine-tuning: returns a tiny random classifier, counts calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls: list[TeacherJob] = []
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()

    def __call__(self, job: TeacherJob) -> BertForSequenceClassification:
        with self.lock:
            self.calls.append(job)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("training diverged")
        return classifier(seed=len(self.calls), layers=1, hidden=16, heads=2, labels=2)


def never(job: TeacherJob) -> BertForSequenceClassification:
    raise AssertionError("the cached teacher should have been loaded from disk")


def test_cache_fine_tunes_once_and_loads_from_disk(tmp_path: Path) -> None:
    fine_tune = CountingFineTune()
    cache = TeacherCache(tmp_path)
    first = cache.get("sst2", fine_tune, data_hash="abc")
    second = cache.get("sst2", fine_tune, data_hash="abc")
    assert len(fine_tune.calls) == 1
    job = fine_tune.calls[0]
    assert job.task == "sst2" and job.recipe == TEACHER_RECIPES["sst2"]
    assert Path(job.teacher, "config.json").is_file()
    assert (tmp_path / job.key / "config.json").is_file()
    # Another process: a new cache object on the same folder never fine-tunes.
    third = TeacherCache(tmp_path).get(get_task("sst2"), never, data_hash="abc")
    assert not first.training and first.config._attn_implementation == "eager"
    for model in (second, third):
        for a, b in zip(first.parameters(), model.parameters(), strict=True):
            assert torch.equal(a, b)
    # Other data or another recipe is another teacher.
    cache.get("sst2", fine_tune, data_hash="other")
    cache.get("sst2", fine_tune, recipe=teacher_recipe("sst2", epochs=1), data_hash="abc")
    assert len(fine_tune.calls) == 3
    assert len({c.key for c in fine_tune.calls}) == 3
    custom = {"id": "mine", "labels": ["a", "b"]}
    with pytest.raises(ValueError, match="explicit recipe"):
        cache.get(custom, fine_tune)
    cache.get(custom, fine_tune, recipe={"learning_rate": 1e-4})
    assert fine_tune.calls[-1].task == custom


def test_cache_leaves_nothing_behind_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = TeacherCache(tmp_path)
    with pytest.raises(RuntimeError, match="diverged"):
        cache.get("rte", CountingFineTune(fail=True))

    def broken_save(self: Any, directory: str, **kwargs: Any) -> None:
        Path(directory, "config.json").write_text("{}")  # half written, then the disk fills
        raise OSError("no space left on device")

    monkeypatch.setattr(BertForSequenceClassification, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="no space"):
        cache.get("rte", CountingFineTune())
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    key = TeacherCache.key("rte", TEACHER_RECIPES["rte"])
    assert not cache.contains(key) and cache.load(key) is None
    monkeypatch.undo()
    fine_tune = CountingFineTune()
    cache.get("rte", fine_tune)
    assert len(fine_tune.calls) == 1 and cache.contains(key)


def test_cache_lock_lets_one_of_two_workers_fine_tune(tmp_path: Path) -> None:
    fine_tune = CountingFineTune(delay=0.3)
    results: list[BertForSequenceClassification] = []

    def worker() -> None:  # separate cache objects, separate lock-file handles
        results.append(TeacherCache(tmp_path).get("mrpc", fine_tune))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fine_tune.calls) == 1 and len(results) == 2
    assert torch.equal(results[0].classifier.weight, results[1].classifier.weight)


def test_cache_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_cache_root() == tmp_path / "teachers"
    assert TeacherCache().root == tmp_path / "teachers"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_cache_root() == Path.home() / ".cache" / "archsearch" / "teachers"
