"""The README's main command works as a new user runs it: the quickstart, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_runs_every_step_and_cleans_up(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--dir", str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "install ai_chatbot 1.0.0" in out
    assert "chatbot says: To pay an invoice" in out
    assert "install email_marketing 1.1.0" in out and "install sms_notifications 1.1.0" in out
    assert "signature verification failed for tampered.zip" in out
    assert out.rstrip().endswith("quickstart finished: every change was one transaction.")
    assert not work.exists()
