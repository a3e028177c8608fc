"""The DICOM network receiver: a Storage SCP (C-ECHO, C-STORE) and a C-FIND SCP at patient and
study level, built on pynetdicom, for the calling AE titles on the allow-list, each from its
configured address.

pynetdicom serves associations in threads; each request is handed to the asyncio loop the
server was started from, so storage goes through the same archive (and database) as STOW-RS.
Every refusal answers with a DIMSE failure status and is logged without patient data.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from medmesh.domain.imaging import InvalidInstance
from medmesh.imaging.archive import ImagingArchive, Outcome
from medmesh.imaging.dicom_files import STORED_TRANSFER_SYNTAXES
from medmesh.imaging.find import find_matches

log = logging.getLogger(__name__)

# DIMSE statuses (PS3.4 B.2.3, PS3.7 C)
SUCCESS = 0x0000
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
PENDING = 0xFF00
FIND_UNABLE = 0xC000

_REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class DicomSettings:
    host: str
    port: int
    ae_title: str
    allowed: dict[str, frozenset[str]] = field(default_factory=dict)  # title -> addresses
    max_instance_bytes: int = 256 * 1_048_576
    max_associations: int = 10
    tls: ssl.SSLContext | None = None

    def admits(self, title: str, address: str) -> bool:
        hosts = self.allowed.get(title.strip())
        return hosts is not None and (address in hosts or "*" in hosts)


def parse_allowed(specs: list[str]) -> dict[str, frozenset[str]]:
    """`TITLE@address` entries into {title: addresses}."""
    allowed: dict[str, set[str]] = {}
    for spec in specs:
        title, _, host = spec.partition("@")
        allowed.setdefault(title.strip(), set()).add(host.strip())
    return {title: frozenset(hosts) for title, hosts in allowed.items()}


class DicomServer:
    """Start and stop the SCP; a Worker for Services."""

    def __init__(self, archive: ImagingArchive, settings: DicomSettings) -> None:
        self._archive = archive
        self._settings = settings
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the DICOM server is not started"
        return int(self._server.server_address[1])

    def _application_entity(self) -> AE:
        ae = AE(ae_title=self._settings.ae_title)
        ae.maximum_associations = self._settings.max_associations
        ae.require_calling_aet = list(self._settings.allowed)
        ae.maximum_pdu_size = 262_144
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        offered = [ts for ts in STORED_TRANSFER_SYNTAXES if ts in ALL_TRANSFER_SYNTAXES]
        for context in StoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, offered)
        ae.add_supported_context(Verification)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        return ae

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ae = self._application_entity()
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_ACCEPTED, self._on_accepted),
        ]
        address = (self._settings.host, self._settings.port)
        self._server = await asyncio.to_thread(
            ae.start_server,
            address,
            block=False,
            evt_handlers=handlers,
            ssl_context=self._settings.tls,
        )
        log.info("DICOM listening on %s:%d as %s", self._settings.host, self.port, ae.ae_title)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)

    # --- handlers (called in pynetdicom's association threads) ---------------------------

    def _admitted(self, event: evt.Event) -> bool:
        requestor = event.assoc.requestor
        if self._settings.admits(requestor.ae_title, requestor.address):
            return True
        log.warning("DICOM request refused: calling AE not allowed from its address")
        return False

    def _on_accepted(self, event: evt.Event) -> None:
        """A listed title from another address than its own: abort before any request (the
        title check itself rejects unknown titles during negotiation)."""
        if not self._admitted(event):
            event.assoc.abort()

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS if self._admitted(event) else NOT_AUTHORIZED

    def _on_store(self, event: evt.Event) -> int | Dataset:
        if not self._admitted(event):
            return NOT_AUTHORIZED
        try:
            content = bytes(event.encoded_dataset())
        except Exception:
            log.warning("C-STORE refused: the data set could not be encoded")
            return CANNOT_UNDERSTAND
        source = f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"
        try:
            receipt = self._run(self._archive.receive(content, source))
        except InvalidInstance as error:
            log.warning("C-STORE refused: %s", error)
            status = Dataset()
            status.Status = OUT_OF_RESOURCES if "larger than" in str(error) else CANNOT_UNDERSTAND
            status.ErrorComment = str(error)[:64]
            return status
        except Exception:
            log.exception("C-STORE failed while storing")
            return PROCESSING_FAILURE
        if receipt.outcome is Outcome.QUARANTINED:
            log.info("C-STORE instance held in quarantine")
        return SUCCESS

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        if not self._admitted(event):
            yield NOT_AUTHORIZED, None
            return
        try:
            matches = self._run(find_matches(self._archive.database, event.identifier))
        except InvalidInstance as error:
            status = Dataset()
            status.Status = FIND_UNABLE
            status.ErrorComment = str(error)[:64]
            yield status, None  # type: ignore[misc]
            return
        except Exception:
            log.exception("C-FIND failed")
            yield PROCESSING_FAILURE, None
            return
        for match in matches:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield PENDING, match
        yield SUCCESS, None

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_REQUEST_TIMEOUT)
