"""Pytest fixtures around ``tests/hubserver.py``: a local Hub for the real client, one per test session.

Load them from a test module with ``pytest_plugins = ["hub_fixtures"]``; import the token constants and
helpers from ``hubserver`` (importing this module directly would stop pytest rewriting its asserts).

- ``hub_server`` (session): the running server; its ``url`` is the ``HF_ENDPOINT``.
- ``hub`` (function): the same server with its state wiped, the test users registered and huggingface_hub's
  offline switch off in this process (the suite sets ``HF_HUB_OFFLINE=1``; this Hub is local). Users:
  ``alice`` (write token, member of org ``acme``; also a read-only token) and ``bob`` (write token).
- ``hub_env`` (function): a clean environment pointing at ``hub``: fresh ``HF_HOME``, ``HF_ENDPOINT``,
  ``HF_TOKEN`` (alice), telemetry and progress bars off; applied to ``os.environ`` and returned as a dict
  for subprocesses. ``huggingface_hub`` reads ``HF_ENDPOINT`` once, at import, so code that relies on
  the environment (transformers' ``from_pretrained``, the ``hf-transfer`` CLI) runs in a subprocess
  (``hubserver.run_python``); in-process code passes ``endpoint=hub.url``.
- ``no_backoff`` (function): the client's 5xx retry loop without its sleeps (1, 2, 4, 8, 8 s) in this
  process.
"""

from __future__ import annotations

import os
import time

import pytest
from hubserver import HubServer, client_env


@pytest.fixture(scope="session")
def hub_server():
    with HubServer() as server:
        yield server


@pytest.fixture
def hub(hub_server, monkeypatch):
    import huggingface_hub.constants as hub_constants

    # The suite runs with HF_HUB_OFFLINE=1 (conftest.py); this Hub is on 127.0.0.1, so let this process reach it.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    hub_server.state.reset()
    hub_server.state.add_test_users()
    return hub_server


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch) -> dict[str, str]:
    env = client_env(hub.url, tmp_path / "hf_home")
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


class _TimeWithoutSleep:
    """The ``time`` module, except that ``sleep`` returns at once."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


@pytest.fixture
def no_backoff(monkeypatch):
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http, "time", _TimeWithoutSleep())

