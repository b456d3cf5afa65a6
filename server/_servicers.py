"""The search service's gRPC servicer (the worker service's: ``_worker_servicer.py``):
validate each request, call the study manager, convert the answer.

Each method checks every field it receives before touching the storage, so a malformed request
changes nothing; domain errors become one precise status (``_errors`` names the mapping).
"""

from __future__ import annotations

import logging

import grpc

from archsearch.server._convert import (
    states_from_pb,
    study_to_pb,
    trial_to_pb,
)
from archsearch.server._delete import StudyDeleted, unless_deleted
from archsearch.server._errors import ResourceExhausted
from archsearch.server._rpc import _require, _study_name, rpc
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

log = logging.getLogger("archsearch.server")
MAX_SPEC_BYTES = 256 * 1024
MAX_PAGE = 1000
#: What a ListTrials page may hold, at most: the default gRPC message limit, which every
#: client accepts (a server with a larger --max-message-bytes still sends pages a default
#: client can read), less room for the response's own framing.
PAGE_BYTES = 4 * 1024 * 1024
PAGE_MARGIN = 64 * 1024


class SearchServicer(pb_grpc.SearchServiceServicer):
    """SearchService: what people and scripts call.

    Args:
        manager: the study manager.
        max_message_bytes: the server's message size limit; ListTrials pages stay below it.
    """

    SERVICE = pb.DESCRIPTOR.services_by_name["SearchService"]

    def __init__(self, manager: StudyManager, max_message_bytes: int = PAGE_BYTES) -> None:
        self.m = manager
        limit = min(max_message_bytes, PAGE_BYTES)
        self.page_bytes = limit - min(PAGE_MARGIN, limit // 4)

    @rpc
    def LaunchSearch(
        self, request: pb.LaunchSearchRequest, context: grpc.ServicerContext
    ) -> pb.LaunchSearchResponse:
        """Validates the spec completely (space, loop, pruner, objectives, recipe, data) before
        creating anything: an invalid spec leaves the storage untouched."""
        _require(bool(request.spec_json), "spec_json is required")
        _require(
            len(request.spec_json) <= MAX_SPEC_BYTES,
            f"spec_json is larger than {MAX_SPEC_BYTES} bytes",
        )
        spec = SearchSpec.from_json(request.spec_json, self.m.trainers)
        h = self.m.launch(spec)
        return pb.LaunchSearchResponse(study=study_to_pb(self.m.snapshot(h), self.page_bytes))

    @rpc
    def GetStudy(
        self, request: pb.GetStudyRequest, context: grpc.ServicerContext
    ) -> pb.GetStudyResponse:
        h = self.m.get(_study_name(request.name))
        return pb.GetStudyResponse(study=study_to_pb(self.m.snapshot(h), self.page_bytes))

    @rpc
    def ListStudies(
        self, request: pb.ListStudiesRequest, context: grpc.ServicerContext
    ) -> pb.ListStudiesResponse:
        """Pages through studies by name: the page token is the last name returned, so pages
        stay stable while studies come and go. A page ends at ``page_size`` studies or before
        it would outgrow the message size limit (a spec may be 256 KiB: every study in one
        answer outgrew it, and no client could list any). The first page also names the
        stored studies this server cannot serve, with why (``studies`` said "no studies yet"
        while a broken plugin left every one of them out)."""
        size = request.page_size or MAX_PAGE
        _require(
            0 < size <= MAX_PAGE, f"page_size must be in 1..{MAX_PAGE}, got {request.page_size}"
        )
        after = request.page_token
        _require(len(after) <= 100, "invalid page_token: pass next_page_token as received")
        page: list[pb.Study] = []
        unserved = [] if after else _unserved(self.m.registry.unserved)
        used = sum(u.ByteSize() + 16 for u in unserved)
        for h in sorted(self.m.handles(), key=lambda h: h.spec.name):
            if after and h.spec.name <= after:
                continue
            try:
                msg = study_to_pb(self.m.snapshot(h, with_best=False))
            except StudyDeleted:  # deleted since the list was taken: not listed
                continue
            cost = msg.ByteSize() + 16
            if page and (len(page) == size or used + cost > self.page_bytes):
                return pb.ListStudiesResponse(
                    studies=page, next_page_token=page[-1].name, unserved=unserved
                )
            page.append(msg)
            used += cost
        return pb.ListStudiesResponse(studies=page, unserved=unserved)

    @rpc
    def ListTrials(
        self, request: pb.ListTrialsRequest, context: grpc.ServicerContext
    ) -> pb.ListTrialsResponse:
        """Pages through trials by number. The page token is the next trial number to return,
        so pages stay stable while new trials are added. A page ends at ``page_size`` trials
        or before it would outgrow the message size limit, whichever comes first."""
        h = self.m.get(_study_name(request.study_name, "study_name"))
        size = request.page_size or 100
        _require(
            0 < size <= MAX_PAGE, f"page_size must be in 1..{MAX_PAGE}, got {request.page_size}"
        )
        start = 0
        if request.page_token:
            _require(
                request.page_token.isascii()  # str.isdigit also accepts '²', which int refuses
                and request.page_token.isdigit()
                and len(request.page_token) < 12,
                f"invalid page_token {request.page_token[:20]!r}: pass next_page_token as received",
            )
            start = int(request.page_token)
        states = states_from_pb(request.states)
        with unless_deleted(h, self.m.registry.serves):  # NOT_FOUND when deleted under it
            trials = [t for t in self.m.trials(h, states or None) if t.number >= start]
        trials.sort(key=lambda t: t.number)
        page: list[pb.Trial] = []
        used = 0
        for t in trials:
            if len(page) == size:
                return pb.ListTrialsResponse(trials=page, next_page_token=str(t.number))
            msg = trial_to_pb(t, tuple(h.spec.data_space))
            cost = msg.ByteSize() + 16  # field tag and length prefix, generously
            if used + cost > self.page_bytes:
                if not page:
                    raise ResourceExhausted(
                        f"trial {t.number} alone is {cost} bytes, more than a page may hold; "
                        "restart the server with a larger --max-message-bytes"
                    )
                return pb.ListTrialsResponse(trials=page, next_page_token=str(t.number))
            page.append(msg)
            used += cost
        return pb.ListTrialsResponse(trials=page, next_page_token="")

    @rpc
    def StopSearch(
        self, request: pb.StopSearchRequest, context: grpc.ServicerContext
    ) -> pb.StopSearchResponse:
        h = self.m.stop(_study_name(request.name), request.cancel_running)
        return pb.StopSearchResponse(study=study_to_pb(self.m.snapshot(h), self.page_bytes))

    @rpc
    def DeleteSearch(
        self, request: pb.DeleteSearchRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSearchResponse:
        n_trials, n_files, missing = self.m.delete(_study_name(request.name))
        return pb.DeleteSearchResponse(
            n_trials=n_trials,
            n_files=n_files,
            n_files_missing=missing,
            artifact_dir=self.m.artifact_dir,
        )

    @rpc
    def ResumeSearch(
        self, request: pb.ResumeSearchRequest, context: grpc.ServicerContext
    ) -> pb.ResumeSearchResponse:
        h, requeued = self.m.resume(_study_name(request.name), request.n_trials)
        return pb.ResumeSearchResponse(
            study=study_to_pb(self.m.snapshot(h), self.page_bytes), requeued=requeued
        )


def _unserved(unserved: dict[str, str]) -> list[pb.UnservedStudy]:
    """The stored studies not served, by name (at most :data:`MAX_PAGE`: their reasons are
    300 characters at most, so they fit one answer beside the studies)."""
    names = sorted(dict(unserved))[:MAX_PAGE]  # a copy: a delete may remove one meanwhile
    return [pb.UnservedStudy(name=n, reason=unserved.get(n, "")) for n in names]
