"""A plugin trainer the server does not have installed, and a worker process that offers it.

``python tests/plugin_trainer.py --server HOST:PORT`` runs a worker whose only trainer is
:class:`EchoTrainer` (``echo``): it reports a metric of its own, ``echo_score``, for candidates
of the bert space. No entry point publishes it, so the server learns it only from this
worker's registration (tests/integration/test_plugin_trainer.py).
"""

from __future__ import annotations

import argparse
import logging

from archsearch.server.client import WorkerClient
from archsearch.spaces import Candidate, TrainerInfo
from archsearch.worker import TrainContext, Trainer, TrainResult, Worker

ECHO_INFO = TrainerInfo(
    name="echo",
    description="scores a bert candidate by its depth (a test plugin)",
    spaces=("bert",),
    metrics=("echo_score",),
)


class EchoTrainer(Trainer):
    """Reports ``echo_score``: the candidate's number of layers, without training."""

    name = "echo"
    info = ECHO_INFO

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        context.check()
        layers = float(candidate.architecture["num_hidden_layers"])
        return TrainResult(metrics={"echo_score": layers}, info={"trainer": "echo"})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--idle-exit", type=float, default=120.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    with WorkerClient(args.server) as client:
        worker = Worker(client, {"echo": EchoTrainer()}, poll_s=1, idle_exit_s=args.idle_exit)
        worker.install_signal_handlers()
        worker.run()


if __name__ == "__main__":
    main()
