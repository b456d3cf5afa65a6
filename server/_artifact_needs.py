"""What a spec needs the server's artifact store for, refused at launch on a server without one.

A server keeps uploads beside its SQLite file, or in ``--artifact-dir``; on PostgreSQL without
that flag it keeps none, and every upload is refused (FAILED_PRECONDITION). A study that
depends on uploads would then fail every trial (AutoDistil's students come from uploaded
supernets; ``trial:`` references and BOSHNAS weight transfer download a neighbour's
checkpoint; a PUDF crowd of the study's own trials downloads their answers) or lose what the
user asked to keep (``recipe.keep_checkpoint``): said once at launch instead.
"""

from __future__ import annotations

from archsearch.server._errors import FailedPrecondition
from archsearch.server._spec import SearchSpec


def artifact_needs(spec: SearchSpec) -> list[str]:
    """The spec's settings that need uploads, each as its field."""
    needs = []
    if spec.space == "autodistil":
        needs.append("space autodistil (its students come from uploaded supernets)")
    if spec.recipe.get("keep_checkpoint"):
        needs.append("recipe.keep_checkpoint")
    if str(spec.recipe.get("transfer_from", "")).startswith("trial:"):
        needs.append("recipe.transfer_from trial:...")
    if spec.loop_options.get("weight_transfer"):
        needs.append("loop_options.weight_transfer")
    curriculum = spec.data.get("curriculum") or {}
    if isinstance(curriculum, dict) and curriculum.get("crowd_trials"):
        needs.append("data.curriculum.crowd_trials")
    return needs


def check_artifact_store(spec: SearchSpec, keeps_artifacts: bool) -> None:
    """Raises FailedPrecondition when ``spec`` needs uploads and the server keeps none."""
    needs = artifact_needs(spec)
    if needs and not keeps_artifacts:
        raise FailedPrecondition(
            f"{', '.join(needs)} needs the server to keep uploads, and this server keeps none "
            "(its storage is not a SQLite file); restart it with --artifact-dir DIR (a folder "
            "on shared storage), or leave these settings out"
        )
