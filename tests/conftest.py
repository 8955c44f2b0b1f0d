"""Shared test fixtures: where the reference vectors live, kernel-test gating, slow opt-in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MESHSOLVE_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"
GOLDENS = REFERENCE / "istio-goldens"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run slow campaigns")


_RUN_SLOW: list[bool] = []


def pytest_configure(config: pytest.Config) -> None:
    _RUN_SLOW[:] = [bool(config.getoption("--run-slow"))]


def campaign_examples(variable: str, ci: int, full: int) -> int:
    """How many examples a randomized campaign draws: ``$variable`` when it is set, else ``full``
    with ``--run-slow``, else the CI profile's ``ci`` (counts in docs/validation.md)."""
    if os.environ.get(variable):
        return int(os.environ[variable])
    return full if _RUN_SLOW and _RUN_SLOW[0] else ci


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--run-slow"):
        skip = pytest.mark.skip(reason="slow campaign: opt in with --run-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    # under pytest-xdist (`make test` runs `-n auto --dist loadgroup`) the kernel tests share one
    # worker, one after another: some count the namespaces and processes left behind, and kernel
    # timing tests should not race each other; the solver's tests fill the other workers
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("kernel"))
    reason = kernel_unavailable_reason()
    if reason:
        skip_k = pytest.mark.skip(reason=f"kernel test skipped: {reason}")
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip_k)


_KERNEL_REASON: list[str | None] = []


def kernel_unavailable_reason() -> str | None:
    """Why kernel tests cannot run here, or None when they can (root, netns, iptables)."""
    if _KERNEL_REASON:
        return _KERNEL_REASON[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "not running as root"
    elif not shutil.which("iptables-restore") or not shutil.which("ip"):
        reason = "iptables-restore or ip (iproute2) is not installed"
    else:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            reason = f"cannot create a network namespace: {probe.stderr.strip()}"
    _KERNEL_REASON.append(reason)
    return reason


@pytest.fixture(scope="session")
def goldens_dir() -> Path:
    if not GOLDENS.is_dir():
        pytest.fail(f"reference goldens not found at {GOLDENS} (set MESHSOLVE_SHARED)")
    return GOLDENS


_SYNTH_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session")
def synthesized_spec() -> object:
    """Synthesize a shipped spec once per test session (``synthesized_spec("tproxy.yaml")``)."""
    from meshsolve.analysis.spec import load_spec
    from meshsolve.analysis.synth import synthesize

    def get(name: str) -> object:
        if name not in _SYNTH_CACHE:
            _SYNTH_CACHE[name] = synthesize(load_spec(ROOT / "specs" / name))
        return _SYNTH_CACHE[name]

    return get
