"""python -m service: start the gRPC server (settings from G2P_* environment variables; see service/settings.py).

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for invalid settings, 1 when the model cannot be
served (no valid bundle, CUDA asked for and unavailable, port in use, a memory budget too small).
"""

from __future__ import annotations

import logging
import os
import sys

from g2p.bundle import BundleError
from g2p.lexicon import LexiconError
from service.allocator import AllocatorError, preload_env
from service.engine import MemoryBudgetError
from service.runtime import ProviderError
from service.server import G2PServer, configure_logging
from service.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        env = preload_env(settings.allocator)
    except AllocatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if env is not None:  # the same process (PID) again, on jemalloc
        os.execve(sys.executable, sys.orig_argv, env)  # the same command line, interpreter options included
    configure_logging(settings)
    server = G2PServer(settings)
    try:
        server.start()
    except (BundleError, ProviderError, LexiconError, MemoryBudgetError, OSError) as exc:
        logging.getLogger("g2p.server").error(f"cannot start: {exc}")
        server.stop(0)
        return 1
    return server.run_until_signal()


if __name__ == "__main__":
    sys.exit(main())
