"""archsearch's service side: gRPC servicers, leases, storage wiring, the client and the CLI.

Kept import-light on purpose: workers import ``archsearch.server.client`` and must not pull in
the search stack. Import ``archsearch.server.app`` for the server itself.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("archsearch")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
