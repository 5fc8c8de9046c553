"""Issue 13 item 9: the trusted manifest version never goes back, whatever processes race.

Twelve real processes each record a different manifest version for the same
repository at the same moment. Each child's disk is slow (its state write
sleeps first, as an fsync on a busy disk does), so without a lock every child
reads the empty state, and the last to write wins, whatever its version.
Afterwards the highest version must be the recorded one, and the repository
replaying an older (validly signed) manifest must be refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from misbehaving_server import MisbehavingServer, make_key, manifest_bytes, sign_bytes

from atomicplug.config import Config
from atomicplug.errors import TrustError
from atomicplug.repository import remote

CHILDREN = 12

_CHILD = r"""
import random, sys, time
from pathlib import Path
from atomicplug import fsutil
from atomicplug.errors import TrustError
from atomicplug.repository.manifest import Manifest, TrustedState

state_path, url, manifest_file, go_file, ready_file = sys.argv[1:6]
data = Path(manifest_file).read_bytes()
manifest = Manifest.from_json_bytes(data)
real_write = fsutil.atomic_write_bytes

def slow_write(path, body):  # a slow disk widens the gap between reading the state and writing it
    time.sleep(random.uniform(0.05, 0.2))
    real_write(path, body)

fsutil.atomic_write_bytes = slow_write
Path(ready_file).touch()
while not Path(go_file).exists():
    time.sleep(0.002)
try:
    TrustedState.load(Path(state_path)).accept(url, manifest, data)
    print("accepted")
except TrustError as exc:
    print("refused:", exc)
"""


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer() as running:
        yield running


def test_racing_processes_leave_the_highest_version_and_a_replay_is_refused(server: MisbehavingServer, tmp_path: Path) -> None:
    pub, key = make_key(tmp_path / "keys")
    config = Config.for_directory(tmp_path / "site", repository=server.url, trusted_keys=[str(pub)], download_timeout=10)
    versions = list(range(1, CHILDREN + 1))
    manifests = {v: manifest_bytes([], version=v) for v in versions}
    go = tmp_path / "go"
    children = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    for version in versions:
        path = tmp_path / f"manifest-{version}.json"
        path.write_bytes(manifests[version])
        ready = tmp_path / f"ready-{version}"
        args = [sys.executable, "-c", _CHILD, str(remote.state_path(config)), server.url, str(path), str(go), str(ready)]
        children.append((version, subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    while not all((tmp_path / f"ready-{v}").exists() for v in versions):  # every child waits for the go file
        assert all(child.poll() is None for _, child in children), "a child died before the race"
        time.sleep(0.01)
    go.touch()
    outcomes = {}
    for version, child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outcomes[version] = out.strip()
    assert outcomes[CHILDREN] == "accepted"
    for version, outcome in outcomes.items():
        assert outcome == "accepted" or ("refused:" in outcome and "rollback" in outcome), (version, outcome)

    state = json.loads(remote.state_path(config).read_text())
    assert state["repositories"][server.url]["version"] == CHILDREN

    older = manifests[CHILDREN - 1]
    server.put("/manifest.json", older)
    server.put("/manifest.json.minisig", sign_bytes(older, key, tmp_path).encode())
    with pytest.raises(TrustError, match="rollback attack"):
        remote.load_manifest(config)
    assert json.loads(remote.state_path(config).read_text())["repositories"][server.url]["version"] == CHILDREN
