"""Worker processes: what a child does about its parent."""
from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker process (`eval tasks --jobs`, `train.py --workers`): exit once the parent is gone (killed
    with SIGTERM or SIGKILL, not Ctrl-C), rather than run a model for minutes with nobody to report to."""

    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
