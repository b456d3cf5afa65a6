"""Pre-trained FlexiBERT encoders shared by the trials of a study, through the server.

:class:`~archsearch.worker._pretrain_cache.PretrainCache` keeps a finished masked-LM
pre-training on the disk of the machine that ran it. On a worker connected to a server, the
encoder also goes to the study: the trial that pre-trained it (or that found it in its local
cache while no trial of the study holds it) uploads the cache entry's two files as
``pretrain-<key[:32]>.safetensors`` and then ``pretrain-<key[:32]>.json`` (the second marks a
whole upload), and a trial on another machine whose cache misses downloads them from the newest
trial holding them instead of pre-training again.

Sharing is an optimisation only: a refusal, a lost file or an unreachable server is logged and
the trial pre-trains (or keeps its encoder to itself).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from archsearch.worker._pretrain_cache import ENCODER_FILE, META_FILE, PretrainCache
from archsearch.worker._trainer import TrainContext

log = logging.getLogger("archsearch.worker")


def artifact_names(key: str) -> tuple[str, str]:
    """The artifact names of the encoder of cache key ``key``: (weights, metadata)."""
    return f"pretrain-{key[:32]}.safetensors", f"pretrain-{key[:32]}.json"


def fetch_encoder(cache: PretrainCache, key: str, context: TrainContext) -> int | None:
    """Downloads the study's upload of ``key``'s encoder into ``cache``; the number of the
    trial it came from, or None when no trial holds it (or it could not be had)."""
    if not (context.has_server and context.study_name):
        return None
    from archsearch.server.client import ClientError

    weights, meta = artifact_names(key)
    staging = cache.root / f".{key}.download-{os.getpid()}"
    try:
        holder = context.newest_holder(meta)
        if holder is None:
            return None
        staging.mkdir(parents=True, exist_ok=True)
        context.download(holder, weights, staging / ENCODER_FILE)
        context.download(holder, meta, staging / META_FILE)
        state = load_file(str(staging / ENCODER_FILE))  # both must read before they count
        cache.put(key, state, json.loads((staging / META_FILE).read_text()))
    except (ClientError, OSError, RuntimeError, ValueError, SafetensorError) as e:
        log.warning("pre-trained encoder %s not downloaded: %s", key, e)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("pre-trained encoder %s downloaded from trial %d", key, holder)
    return holder


def share_encoder(cache: PretrainCache, key: str, context: TrainContext) -> bool:
    """Uploads ``key``'s cached encoder as artifacts of ``context``'s trial unless a trial of
    the study already holds it; whether this trial uploaded it."""
    if not (context.has_server and context.study_name):
        return False
    from archsearch.server.client import ClientError

    weights, meta = artifact_names(key)
    folder: Path = cache.root / key
    try:
        if context.newest_holder(meta) is not None:
            return False
        context.upload(folder / ENCODER_FILE, weights)
        context.upload(folder / META_FILE, meta)  # last: marks a whole upload
    except (ClientError, OSError, RuntimeError) as e:
        log.warning("pre-trained encoder %s not uploaded: %s", key, e)
        return False
    return True
