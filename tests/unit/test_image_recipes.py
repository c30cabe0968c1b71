"""The Dockerfile and `make image` (hack/image) build the same image: the same Debian
packages, install script and lock, user, entry point and command. The smoke test runs
hack/image's; this keeps the Dockerfile from drifting away from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
HACK = (ROOT / "hack" / "image").read_text()


def _final_stage() -> str:
    return DOCKERFILE.rsplit("\nFROM ", 1)[1]


def test_both_install_the_same_packages_with_the_same_script_and_lock() -> None:
    stage = _final_stage()
    assert stage.startswith("debian:bookworm-slim")  # bookworm: hack/image's suite
    assert re.search(r"mmdebstrap .*\n(.*\n)*?\s*bookworm ", HACK)
    assert "image/debian-packages" in stage
    assert "image/debian-packages" in HACK
    assert "image/install.sh" in stage
    assert "image/install.sh" in HACK
    assert "image/requirements.lock" in DOCKERFILE
    assert "image/requirements.lock" in HACK
    packages = [ln for ln in (ROOT / "image" / "debian-packages").read_text().splitlines()
                if ln and not ln.startswith("#")]
    assert {"python3", "postgresql-client"} <= set(packages)


def test_both_configure_the_same_user_entrypoint_and_command() -> None:
    stage = _final_stage()
    user = re.search(r"^USER (\S+)$", stage, re.M)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", stage, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", stage, re.M)
    assert user
    assert entry
    assert cmd
    assert f"--config.user {user.group(1)}" in HACK
    assert f"--config.entrypoint {json.loads(entry.group(1))[0]}" in HACK
    assert json.loads(entry.group(1)) == ["/opt/kameng/bin/kameng"]
    assert " ".join(f"--config.cmd {c}" for c in json.loads(cmd.group(1))) in HACK
    # The pods' securityContext runs as this uid.
    assert user.group(1) == "10001:10001"
