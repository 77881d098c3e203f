"""Test set-up: 8 virtual CPU devices, set before JAX starts."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment is set)

_FAULT_ROWS = []


@pytest.fixture
def fault_table():
    """Tests record (fault, what happened) rows; with SAM_JAX_FAULT_TABLE=PATH
    the session writes them as a markdown table (the README's fault table)."""
    return _FAULT_ROWS.append


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SAM_JAX_FAULT_TABLE")
    if not path or not _FAULT_ROWS:
        return
    lines = ["| fault tried | what happened |", "|---|---|"]
    lines += [f"| {fault} | {outcome} |" for fault, outcome in _FAULT_ROWS]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
