"""The README's "Add your own domain" walkthrough runs exactly as written and adds its row to the table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dabs_rq.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration  # runs the walkthrough's commands in a shell


def walkthrough() -> str:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- WALKTHROUGH START -->\n```bash\n(.*?)```\n<!-- WALKTHROUGH END -->", text, re.S)
    assert block, "README lost its walkthrough markers"
    return block.group(1)


def test_the_add_your_own_domain_walkthrough_runs_as_written(tmp_path, data_cache):
    (tmp_path / "walkthrough.sh").write_text("set -euo pipefail\n" + walkthrough())
    results = tmp_path / "results"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DABS_RQ_RESULTS": str(results),
        "DABS_RQ_CACHE": str(data_cache),
    }
    done = subprocess.run(
        ["bash", "walkthrough.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    table = (results / "table.md").read_text()
    assert "My IMU activity" in table and "My sensors" in table
    for algorithm in ("none", "rq"):
        assert (results / f"records/my_imu/imu_activity/{algorithm}/seed0.json").exists()
