"""Session-wide fixtures. Keep this file small: folder-specific fixtures live in sub-conftests.

``azurite``: the storage every integration and end-to-end test uses, as an object with a
``.connection_string``. By default a fresh in-memory Azurite (from ``npm install``) on free ports,
started once per session so tests never touch a developer's own Azurite or its data. Set
``MAILGW_TEST_STORAGE`` to a connection string to run the same tests against other storage
(an Azurite you started, or a real account); then nothing is started.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devhost.azurite import Azurite


@dataclass(frozen=True)
class ExternalStorage:
    """Storage that the test session did not start (``MAILGW_TEST_STORAGE``)."""

    connection_string: str


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite | ExternalStorage]:
    external = os.environ.get("MAILGW_TEST_STORAGE", "").strip()
    if external:
        yield ExternalStorage(external)
        return
    with Azurite() as emulator:
        yield emulator
