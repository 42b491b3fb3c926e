"""Last in the e2e run (by name): no secret value handed to any operator in this session shows
up in anything an operator produced: its logs, its metrics, the Events and the ScaledObjects'
status in every namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import SECRETS
from tests.testbed.kube import KubeAPIServer

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]


def test_no_secret_value_anywhere_the_operators_wrote(
    crds: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not SECRETS:
        pytest.skip("no e2e test handed a secret to an operator in this session")
    base = Path(tmp_path_factory.getbasetemp())
    produced = {str(p): p.read_text(errors="replace") for p in base.rglob("operator-*.log")}
    produced |= {str(p): p.read_text(errors="replace") for p in base.rglob("operator-*.metrics")}
    assert produced, "no operator output found under the session's temporary directory"
    produced["events"] = crds.kubectl("get", "events", "-A", "-o", "json").stdout
    produced["scaledobjects"] = crds.kubectl("get", "scaledobjects", "-A", "-o", "json").stdout
    leaks = [
        (where, value[:4] + "...")
        for where, text in produced.items()
        for value in SECRETS
        if value in text
    ]
    assert not leaks, f"secret values found in: {leaks}"
