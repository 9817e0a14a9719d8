"""Fixtures of the sandbox tests."""
import pytest
import requests


@pytest.fixture
def http():
    """A plain keep-alive session that ignores proxy settings (the sandboxes are on loopback)."""
    with requests.Session() as session:
        session.trust_env = False
        yield session
