"""Templates in Blob storage: one container (``MAILGW_TEMPLATE_CONTAINER``), one blob per version.

``<name>/<version, 8 digits>.json``. A version is never changed once written: ``put`` adds the
next one (the write refuses an existing name, so two concurrent puts get two versions, not one
lost), and a message records the version it was rendered from. The newest version of a name is
found by listing its prefix; a version, once read, is cached (it cannot change).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from mailgw.errors import TemplateNotFound
from mailgw.models import TEMPLATE_NAME_PATTERN
from mailgw.storage import StorageConnection, blob_service_client
from mailgw.templates.render import Template, TemplateInvalid

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient

_NAME = re.compile(TEMPLATE_NAME_PATTERN)
_CACHED_VERSIONS = 256


@dataclass(frozen=True)
class TemplateSummary:
    """A stored template as ``mailgw templates list`` shows it."""

    name: str
    latest: int
    versions: int
    updated_at: datetime | None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TemplateInvalid(
            f"template names are 1-64 lowercase letters, digits, '.', '_' or '-', starting with "
            f"a letter or digit; got {name!r}"
        )
    return name


def _blob_name(name: str, version: int) -> str:
    return f"{name}/{version:08d}.json"


def _version_of(blob: str) -> int | None:
    stem = blob.rpartition("/")[2].removesuffix(".json")
    return int(stem) if stem.isdigit() else None


class TemplateStore:
    def __init__(
        self,
        connection: StorageConnection,
        container: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connection = connection
        self.container_name = container
        self.clock = clock
        self._service: BlobServiceClient | None = None
        self._cache: OrderedDict[tuple[str, int], Template] = OrderedDict()
        self._looking_up: dict[str, asyncio.Future[Template]] = {}

    def container(self) -> ContainerClient:
        if self._service is None:
            self._service = blob_service_client(self.connection)
        return self._service.get_container_client(self.container_name)

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()

    async def versions(self, name: str) -> list[int]:
        """The stored versions of ``name``, oldest first (none: an empty list)."""
        found = []
        try:
            async for blob in self.container().list_blobs(name_starts_with=f"{name}/"):
                version = _version_of(blob.name)
                if version is not None:
                    found.append(version)
        except ResourceNotFoundError:
            return []  # no container yet: nothing was ever stored
        return sorted(found)

    async def latest(self, name: str) -> Template:
        """The newest version of ``name``, or :class:`TemplateNotFound`. Concurrent lookups of one
        name (the items of a batch) share a single listing."""
        pending = self._looking_up.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._latest(name))
            self._looking_up[name] = pending
            pending.add_done_callback(lambda _: self._looking_up.pop(name, None))
        return await asyncio.shield(pending)

    async def _latest(self, name: str) -> Template:
        versions = await self.versions(name) if _NAME.fullmatch(name) else []
        if not versions:
            raise TemplateNotFound(
                f"No template named {name!r} is stored; `mailgw templates list` shows those "
                "that are.",
                [],
            )
        return await self.get(name, versions[-1])

    async def get(self, name: str, version: int) -> Template:
        cached = self._cache.get((name, version))
        if cached is not None:
            self._cache.move_to_end((name, version))
            return cached
        try:
            downloader = await self.container().download_blob(_blob_name(name, version))
            data = json.loads(await downloader.readall())
        except ResourceNotFoundError:
            raise TemplateNotFound(f"Template {name!r} has no version {version}.") from None
        template = _template(data)
        self._cache[(name, version)] = template
        if len(self._cache) > _CACHED_VERSIONS:
            self._cache.popitem(last=False)
        return template

    async def put(self, name: str, *, subject: str, text: str | None, html: str | None) -> Template:
        """Store a new version of ``name`` (compiled first: a template with a syntax error is
        refused with its line, before anything is written)."""
        check_name(name)
        for _ in range(20):
            versions = await self.versions(name)
            version = (versions[-1] if versions else 0) + 1
            template = Template(name, version, subject, text, html, created_at=self.clock())
            data = json.dumps(template.to_json(), ensure_ascii=False).encode()
            try:
                await self._upload(_blob_name(name, version), data)
            except ResourceExistsError:
                continue  # a concurrent put took this version: take the next
            return template
        raise RuntimeError(f"could not store template {name!r}: too many concurrent puts")

    async def _upload(self, blob: str, data: bytes) -> None:
        container = self.container()
        try:
            await container.upload_blob(blob, data, overwrite=False)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                await container.create_container()
            await container.upload_blob(blob, data, overwrite=False)

    async def summaries(self) -> list[TemplateSummary]:
        """Every stored template, by name."""
        by_name: dict[str, list[tuple[int, datetime | None]]] = {}
        try:
            async for blob in self.container().list_blobs():
                name, _, _ = blob.name.rpartition("/")
                version = _version_of(blob.name)
                if name and version is not None:
                    by_name.setdefault(name, []).append((version, blob.last_modified))
        except ResourceNotFoundError:
            return []
        summaries = []
        for name, found in sorted(by_name.items()):
            found.sort(key=lambda item: item[0])
            summaries.append(TemplateSummary(name, found[-1][0], len(found), found[-1][1]))
        return summaries


def _template(data: Any) -> Template:
    created = data.get("createdAt")
    return Template(
        name=data["name"],
        version=int(data["version"]),
        subject=data.get("subject", ""),
        text=data.get("text"),
        html=data.get("html"),
        created_at=datetime.fromisoformat(created) if created else None,
    )
