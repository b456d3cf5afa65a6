"""The Python client: ``SearchClient`` for people and scripts, ``WorkerClient`` for workers
(``_worker_client``; both on ``_client_base``), imported from here.

Imports only grpc and the generated stubs, so a worker machine needs none of the search stack.
Every call carries a deadline; errors surface as :class:`ClientError` with the gRPC status code
and the server's message, which names the problem and the fix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from archsearch.server import _client_args as args
from archsearch.server._channel import TRANSIENT as TRANSIENT
from archsearch.server._channel import ClientError as ClientError
from archsearch.server._channel import check_target as check_target
from archsearch.server._channel import connection_cause as connection_cause
from archsearch.server._channel import make_channel as make_channel
from archsearch.server._channel import resolve_token as resolve_token
from archsearch.server._client_base import DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S
from archsearch.server._client_base import ClientBase
from archsearch.server._worker_client import WorkerClient as WorkerClient
from archsearch.server._worker_client import trainer_info_to_pb as trainer_info_to_pb
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.v1 import archsearch_pb2_grpc as pb_grpc


class SearchClient(ClientBase):
    """Launch, inspect and stop searches. Needs an admin token when the server has tokens.

    A refused or failed call raises :class:`ClientError` (``e.code``, a ``grpc.StatusCode``;
    ``e.details``, the server's message naming the problem and the fix; ``e.hint``, this
    client's words when no server answered); a wrong argument type or value, ``TypeError`` or
    ``ValueError`` before any call."""

    hints = True

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self._stub = pb_grpc.SearchServiceStub(self._channel)

    def launch(self, spec: dict[str, Any] | str) -> pb.Study:
        """Launches the study ``spec`` describes (a dict, or its JSON text; numpy numbers
        become plain ones) and returns it as stored."""
        text = args.spec_text(spec)
        return self._call(self._stub.LaunchSearch, pb.LaunchSearchRequest(spec_json=text)).study

    def get_study(self, name: str) -> pb.Study:
        """Study ``name``: its state, counts, objectives, spec and best trials."""
        request = pb.GetStudyRequest(name=args.text(name))
        return self._call(self._stub.GetStudy, request).study

    def wait(self, name: str, timeout_s: float | None = None, poll_s: float = 2.0) -> pb.Study:
        """Blocks until study ``name`` is no longer running (completed or stopped), polling
        ``GetStudy`` every ``poll_s`` seconds, and returns it (its best trials included).
        A server that stops answering meanwhile (a restart) is waited for, within
        ``timeout_s``; each call is cut to the time left.

        Raises:
            TimeoutError: still running after ``timeout_s`` seconds (or the server has not
                answered since: the message says which).
            ClientError: the server refused (NOT_FOUND: no such study, or it was deleted
                while waited for).
        """
        name = args.text(name)
        if timeout_s is not None:
            timeout_s = args.seconds(timeout_s, "timeout_s", allow_zero=True)
        poll_s = args.seconds(poll_s, "poll_s")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        silent: ClientError | None = None  # the last call's error, while the server is away
        seen = False  # whether the server has answered with the study
        while True:
            left = math.inf if deadline is None else deadline - time.monotonic()
            # each call within the time left: a hung server must not hold it longer
            call_s = max(0.05, min(self.timeout_s or 30.0, left))
            try:
                resp = self._call(
                    self._stub.GetStudy, pb.GetStudyRequest(name=name), timeout=call_s
                )
                silent, seen = None, True
                if resp.study.state != pb.STUDY_RUNNING:
                    return resp.study
            except ClientError as e:
                if e.code == grpc.StatusCode.NOT_FOUND and seen:
                    raise ClientError(
                        e.code, f"study {name} was deleted while it was waited for", "GetStudy"
                    ) from None
                if not e.transient:
                    raise
                # a call cut to the last moments of the wait: its deadline passing says
                # nothing of the server (a healthy one answers in milliseconds)
                if not (e.code == grpc.StatusCode.DEADLINE_EXCEEDED and call_s < 0.5):
                    silent = e
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(self._wait_timeout(name, timeout_s or 0.0, seen, silent))
            left = math.inf if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(poll_s, left)))

    def _wait_timeout(
        self, name: str, timeout_s: float, seen: bool, silent: ClientError | None
    ) -> str:
        """What :meth:`wait` says when its time is up."""
        if not seen:
            why = f" ({silent.code.name}: {silent.hint or silent.details})" if silent else ""
            where = f"the server at {self.target}"
            return f"study {name}: no answer from {where} in {timeout_s:g}s{why}"
        why = (
            f"; the server at {self.target} has not answered since ({silent.code.name})"
            if silent is not None
            else ""
        )
        return f"study {name} is still running after {timeout_s:g}s{why}"

    def list_studies(self, unserved: dict[str, str] | None = None) -> list[pb.Study]:
        """Every study the server serves (their ``best_trials`` left empty: ``get_study``
        has them); ``unserved``, when given, gets the stored studies it cannot serve, by name,
        with why (an older server names none)."""
        out: list[pb.Study] = []
        token = ""
        while True:
            page = self._call(self._stub.ListStudies, pb.ListStudiesRequest(page_token=token))
            out.extend(page.studies)
            if unserved is not None:
                unserved.update((u.name, u.reason) for u in page.unserved)
            # an older server sends one answer with no token; a token that does not move on
            # would page for ever
            if not page.next_page_token or page.next_page_token == token:
                return out
            token = page.next_page_token

    def iter_trials(
        self, study_name: str, page_size: int = 200, states: Iterable[Any] = ()
    ) -> Iterator[pb.Trial]:
        """Every trial of a study, fetched page by page, in number order.

        Args:
            states: Only trials in these states: ``pb.TrialState`` values (``pb.COMPLETE``),
                their names (``"COMPLETE"``) or Optuna's ``TrialState`` members, read by name
                (Optuna numbers them from 0, ``pb.TrialState`` from 1). Empty: every state.
        """
        study_name = args.text(study_name)
        page_size = args.whole(page_size, "page_size", 1)
        wanted = args.trial_states(states)
        token = ""
        while True:
            req = pb.ListTrialsRequest(
                study_name=study_name, page_size=page_size, page_token=token, states=wanted
            )
            resp = self._call(self._stub.ListTrials, req)
            yield from resp.trials
            token = resp.next_page_token
            if not token:
                return

    def list_trials(self, study_name: str, **kw: Any) -> list[pb.Trial]:
        """:meth:`iter_trials` as a list (the same keywords)."""
        return list(self.iter_trials(study_name, **kw))

    def stop(self, name: str, cancel_running: bool = False) -> pb.Study:
        """Stops handing out the study's trials; ``cancel_running`` ends its running ones too
        (their workers stop at their next heartbeat; the trials end FAIL, not retried)."""
        cancel = args.flag(cancel_running, "cancel_running")
        request = pb.StopSearchRequest(name=args.text(name), cancel_running=cancel)
        return self._call(self._stub.StopSearch, request).study

    def delete(self, name: str) -> pb.DeleteSearchResponse:
        """Deletes a stopped or completed study for good (its trials and uploaded files)."""
        request = pb.DeleteSearchRequest(name=args.text(name))
        return self._call(self._stub.DeleteSearch, request)

    def resume(self, name: str, n_trials: int = 0) -> pb.ResumeSearchResponse:
        """Runs a stopped or completed study again, or changes a running study's budget:
        ``n_trials`` is the new number of distinct candidates (0 keeps it). The response has
        the study and how many never-run candidates of its stop were queued again."""
        request = pb.ResumeSearchRequest(
            name=args.text(name), n_trials=args.whole(n_trials, "n_trials")
        )
        return self._call(self._stub.ResumeSearch, request)
