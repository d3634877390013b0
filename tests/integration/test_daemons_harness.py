"""The multi-process harness itself: times it compares with the replicas' log lines."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from daemons import Replica


def test_a_line_logged_in_the_millisecond_of_a_resume_counts_as_after_it(tmp_path):
    """Log lines carry milliseconds, truncated: a step-down the resumed replica logs within
    the same millisecond reads as earlier than a microsecond ``resume()`` time, and a wait for
    "stepped down after the resume" would never end."""
    log = tmp_path / "r.log"
    log.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        replica = Replica("r", proc, log)
        replica.pause()
        resumed = replica.resume()
        at = datetime.fromtimestamp(resumed, UTC).isoformat(timespec="milliseconds")  # as nightwatch.app.logs
        line = {"ts": at, "level": "warning", "msg": "r: stepping down as leader (epoch 1): lost"}
        log.write_text(json.dumps(line) + "\n")
        assert [e for e in replica.step_downs() if e["t"] >= resumed], (at, resumed)
    finally:
        proc.kill()
        proc.wait(10)
