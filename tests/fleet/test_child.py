"""The worker child's kept error line: read after the worker exits, all of its output copied
first (a status read at once showed "exit status 2" instead of the worker's error line)."""

from __future__ import annotations

import sys

from archsearch.fleet._child import WorkerChild

NOISY = (
    "import sys\n"
    "for i in range(3000): print('x' * 80, file=sys.stderr)\n"
    "print('archsearch: the GLUE folder does not exist', file=sys.stderr)\n"
    "sys.exit(2)\n"
)


def test_the_last_error_line_is_kept_after_a_long_output(capfd) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        child = WorkerChild([sys.executable, "-c", NOISY], keep_error=True).start()
        assert child.wait() == 2
        assert child.last_error == "archsearch: the GLUE folder does not exist"
    assert capfd.readouterr().err.count("x" * 80) == 3 * 3000  # copied, not swallowed
