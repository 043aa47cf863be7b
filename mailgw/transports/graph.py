"""Microsoft Graph transport: ``sendMail`` (default) or draft + send (exactly once, large files).

One Graph client and one credential per process: azure-identity caches and refreshes the token,
httpx keeps the connections. The SDK's own retry handler is switched off: it would resend a
``sendMail`` after a 504 (sending twice) and sleep inside the function; the gateway retries
through the queue instead, with a visibility delay that costs no running function.

Modes (``MAILGW_GRAPH_MODE``):
- ``sendmail`` (Mail.Send): one request. A timeout or 5xx after the request may have reached
  Graph is *ambiguous*; the retry may send twice, and the envelope records the ambiguity.
- ``draft`` (Mail.ReadWrite + Mail.Send): create a draft (immutable id, stamped with the message's
  id), add attachments (3-150 MB through upload sessions in chunks), send it. The draft id and the
  stage (``submitting`` is saved before ``/send``) are kept in the message's state record, so
  after a lost answer or a crash the draft is looked at first: sent (no longer a draft, or found
  in Sent Items) means done; still a draft, or not found, shortly after ``/send`` means Exchange
  may be sending it (:mod:`mailgw.transports.graph_submission`). The message goes out once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from azure.core.exceptions import AzureError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (  # noqa: E501
    CreateUploadSessionPostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as graph_default_options
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from mailgw.identity import SingleFlightCredential, create_credential, token_roles
from mailgw.models import Attachment
from mailgw.settings import Settings
from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.concurrency import MailboxLimiter
from mailgw.transports.errors import DeliveryError, parse_retry_after, token_unavailable, transient
from mailgw.transports.graph_errors import DRAFT_PERMISSION, SEND_PERMISSION, classify_graph
from mailgw.transports.graph_message import (
    MAX_REQUEST_BYTES,
    UPLOAD_SESSION_MIN_BYTES,
    TooLarge,
    attachment_body,
    first_request,
    mime_request,
    needs_mime,
)
from mailgw.transports.graph_submission import (
    CREATED,
    READY,
    DraftState,
    mark_not_submitted,
    mark_submitting,
    pending,
    sent_items_filter,
    submitted_at,
    verdict,
)

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

log = logging.getLogger("mailgw.graph")
T = TypeVar("T")

#: 12 x 320 KiB: a multiple of 320 KiB (OneDrive's rule) and under 4 MB per PUT (Outlook's advice).
UPLOAD_CHUNK_BYTES = 12 * 320 * 1024
IMMUTABLE_IDS = 'IdType="ImmutableId"'
#: 404s that mean "this draft / upload session", not "this mailbox" (those have their own codes)
_GONE = ("graph/ErrorItemNotFound", "graph/http-404")
_ERRORS: dict[str, Any] = {"XXX": ODataError}


def build_client(
    credential: AsyncTokenCredential, endpoint: str, scope: str, timeout: float
) -> GraphServiceClient:
    """A Graph client for ``endpoint`` (public, sovereign, or a stand-in on 127.0.0.1).

    - scopes are explicit: the token is for ``<endpoint>/.default``, not derived per request;
    - only the Graph host gets the bearer token (upload URLs are pre-authenticated);
    - no SDK retries (see the module docstring); every call has a timeout.
    """
    host = httpx.URL(endpoint).host
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[scope], allowed_hosts=[host])
    options = dict(graph_default_options)
    options[RetryHandlerOption.get_key()] = RetryHandlerOption(
        delay=0, max_retries=0, should_retry=False
    )
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        ),
        options=options,
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{endpoint}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def _immutable() -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", IMMUTABLE_IDS)
    return config


class GraphTransport:
    name = "graph"

    def __init__(self, settings: Settings, credential: AsyncTokenCredential | None = None):
        self.settings = settings
        self.mode = settings.graph_mode
        self._owns_credential = credential is None
        self.credential = SingleFlightCredential(credential or create_credential(settings))
        self.client = build_client(
            self.credential,
            settings.graph_endpoint,
            settings.graph_scope,
            float(settings.graph_timeout_seconds),
        )
        self.limiter = MailboxLimiter(settings.mailbox_concurrency)
        self._uploads = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0))
        self.submit_grace = timedelta(seconds=settings.graph_submit_grace_seconds)
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def aclose(self) -> None:
        await self._uploads.aclose()
        http = getattr(self.client.request_adapter, "_http_client", None)
        if isinstance(http, httpx.AsyncClient):
            await http.aclose()
        if self._owns_credential:  # a credential passed in belongs to the caller
            await self.credential.close()

    async def probe(self, mailbox: str | None) -> str:
        """A token for Graph is what can be checked without sending: whether the identity may
        send as a mailbox is Exchange's decision at the first send (RBAC for Applications grants
        are not in the token)."""
        try:
            token = await self.credential.get_token(self.settings.graph_scope)
        except AzureError as exc:
            raise token_unavailable(exc) from exc
        return f"token for {self.settings.graph_scope} ({token_roles(token.token)})"

    async def send(self, message: OutboundMessage) -> SendReceipt:
        mailbox = message.mime.mail_from if message.mime else message.request.sender.address
        async with self.limiter.slot(mailbox):
            user = self.client.users.by_user_id(mailbox)
            if self.mode == "draft":
                return await self._send_draft(user, message)
            return await self._send_mail(user, message)

    async def send_mime(self, message: OutboundMessage) -> SendReceipt:
        """A raw MIME message (SMTP intake): ``sendMail`` with the Base64 MIME as text/plain
        (or, in draft mode, a draft made from it, then ``/send``). Sent as the MAIL FROM
        mailbox; the envelope recipients not in To or Cc travel as a Bcc header."""
        return await self.send(message)

    def _first_request(
        self, message: OutboundMessage, *, draft: bool
    ) -> tuple[tuple[bytes, str], list[Attachment]]:
        """The first request's body (a raw MIME message's, or the request's) and the
        attachments left to add to a draft afterwards."""
        try:
            if message.mime is not None:
                return mime_request(message.mime), []
            return first_request(message.id, message.request, draft=draft)
        except TooLarge as large:
            raise _too_large(large, draft=draft) from None

    # --- sendMail -------------------------------------------------------------------------------

    async def _send_mail(
        self, user: UserItemRequestBuilder, message: OutboundMessage
    ) -> SendReceipt:
        content, _ = self._first_request(message, draft=False)
        await self._post(user.send_mail, content, may_have_sent=True, permission=SEND_PERMISSION)
        mime = message.mime is not None or needs_mime(message.request)
        return SendReceipt(self.name, "sendMail (MIME)" if mime else "sendMail")

    async def _post(
        self,
        builder: Any,
        content: tuple[bytes, str],
        *,
        may_have_sent: bool,
        permission: str,
        immutable: bool = False,
        returns: type[Message] | None = None,
    ) -> Message | None:
        """POST a body we serialised ourselves through the SDK's adapter (auth, middleware,
        error mapping), to ``builder``'s URL. ``returns`` parses the answer."""
        info = RequestInformation(Method.POST, builder.url_template, builder.path_parameters)
        info.headers.try_add("Accept", "application/json")
        if immutable:
            info.headers.try_add("Prefer", IMMUTABLE_IDS)
        info.set_stream_content(*content)
        adapter = self.client.request_adapter
        if returns is None:
            await _call(
                lambda: adapter.send_no_response_content_async(info, _ERRORS),
                may_have_sent=may_have_sent,
                permission=permission,
            )
            return None
        parsed: Message | None = await _call(
            lambda: adapter.send_async(info, returns, _ERRORS),
            may_have_sent=may_have_sent,
            permission=permission,
        )
        return parsed

    # --- draft + send ---------------------------------------------------------------------------

    async def _send_draft(
        self, user: UserItemRequestBuilder, message: OutboundMessage
    ) -> SendReceipt:
        checkpoint = dict(message.checkpoint or {})
        try:
            draft_id = checkpoint.get("draftId")
            if draft_id:
                outcome = await self._resume(user, message, draft_id, checkpoint)
                if isinstance(outcome, SendReceipt):
                    return outcome
                draft_id = outcome
            if not draft_id:
                draft_id = await self._create_draft(user, message, checkpoint)
            return await self._submit(user, message, draft_id, checkpoint)
        except DeliveryError as error:
            if error.code in _GONE:
                # The draft (or its upload session) disappeared under us: expired, or deleted.
                # Not the mailbox's fault: the next attempt finds it missing and builds it again.
                error = DeliveryError(
                    "graph/draft-gone",
                    f"the draft or its upload session is gone: {error.message}",
                    transient=True,
                    hint="the next attempt looks for it (it may be on its way, if /send was "
                    "called) or creates the draft again",
                )
            error.checkpoint = checkpoint
            raise error from None

    async def _resume(
        self,
        user: UserItemRequestBuilder,
        message: OutboundMessage,
        draft_id: str,
        checkpoint: dict[str, str],
    ) -> SendReceipt | str | None:
        """An earlier attempt's draft: a receipt if it was sent; its id if it is to be sent
        (again); None if a new draft is to be built. Raises the pending retry while Exchange may
        still be sending it."""
        state = await self._draft_state(user, draft_id)
        since = submitted_at(checkpoint)
        waited = None if since is None else self.clock() - since
        found = False
        if state == "missing" and since is not None:
            found = await self._in_sent_items(user, message)
        decided = verdict(
            state,
            checkpoint.get("stage"),
            in_sent_items=found,
            since_submit=waited,
            grace=self.submit_grace,
        )
        if decided == "sent":
            log.info("draft %s of %s was already sent: not sending again", draft_id, message.id)
            where = ": found in Sent Items" if found else ""
            return SendReceipt(self.name, f"draft {draft_id} (already sent{where})")
        if decided == "pending":
            assert waited is not None  # pending only after a submission
            raise pending(state, waited, self.submit_grace)
        if waited is not None:
            log.warning(
                "draft %s of %s: %s %.0f s after /send; concluding it was not sent",
                draft_id,
                message.id,
                "still a draft" if state == "draft" else "not found, nor in Sent Items",
                waited.total_seconds(),
            )
        if decided == "send":
            mark_not_submitted(checkpoint)
            return draft_id
        if state == "draft":
            # Half-built (an attempt stopped while adding attachments): start from a clean draft.
            stale = user.messages.by_message_id(draft_id)
            await _call(
                lambda: stale.delete(request_configuration=_immutable()),
                may_have_sent=False,
                permission=DRAFT_PERMISSION,
            )
        checkpoint.clear()
        return None

    async def _submit(
        self,
        user: UserItemRequestBuilder,
        message: OutboundMessage,
        draft_id: str,
        checkpoint: dict[str, str],
    ) -> SendReceipt:
        """``/send``, recorded as attempted before it is made. When its answer is lost, the
        draft is read at once (not after a backoff): sent, or pending."""
        mark_submitting(checkpoint, self.clock())
        await _save(message, checkpoint)
        item = user.messages.by_message_id(draft_id)
        try:
            await _call(
                lambda: item.send.post(request_configuration=_immutable()),
                may_have_sent=True,
                permission=SEND_PERMISSION,
            )
        except DeliveryError as error:
            if not error.ambiguous:
                if error.code not in _GONE:  # refused before Graph did anything: still ready
                    mark_not_submitted(checkpoint)
                raise
            try:
                state = await self._draft_state(user, draft_id)
                found = state == "missing" and await self._in_sent_items(user, message)
            except DeliveryError:
                raise error from None  # could not look: the next attempt will
            if state == "sent" or found:
                log.info(
                    "draft %s of %s: sent, though the answer to /send was lost (%s)",
                    draft_id,
                    message.id,
                    error.code,
                )
                return SendReceipt(self.name, f"draft {draft_id} (sent; the answer was lost)")
            raise pending(state, timedelta(0), self.submit_grace) from error
        return SendReceipt(self.name, f"draft {draft_id}")

    async def _draft_state(self, user: UserItemRequestBuilder, draft_id: str) -> DraftState:
        """What became of an earlier attempt's draft, read by its immutable id (which it keeps
        in Sent Items)."""
        try:
            found = await _call(
                lambda: user.messages.by_message_id(draft_id).get(
                    request_configuration=_immutable()
                ),
                may_have_sent=False,
                permission=DRAFT_PERMISSION,
            )
        except DeliveryError as error:
            if error.code in (*_GONE, "graph/ResourceNotFound"):
                return "missing"
            raise
        if found is not None and found.is_draft is False:
            return "sent"
        return "draft"

    async def _in_sent_items(self, user: UserItemRequestBuilder, message: OutboundMessage) -> bool:
        """Whether Sent Items holds this message, found by its stamp or Message-ID."""
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=sent_items_filter(
                message.id,
                message.request,
                internet_id=message.mime.message_id if message.mime else None,
            ),
            select=["id"],
            top=1,
        )
        config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
        config.headers.add("Prefer", IMMUTABLE_IDS)
        folder = user.mail_folders.by_mail_folder_id("SentItems")
        found = await _call(
            lambda: folder.messages.get(request_configuration=config),
            may_have_sent=False,
            permission=DRAFT_PERMISSION,
        )
        return bool(found is not None and found.value)

    async def _create_draft(
        self, user: UserItemRequestBuilder, message: OutboundMessage, checkpoint: dict[str, str]
    ) -> str:
        content, later = self._first_request(message, draft=True)
        created = await self._post(
            user.messages,
            content,
            may_have_sent=False,
            permission=DRAFT_PERMISSION,
            immutable=True,
            returns=Message,
        )
        if created is None or not created.id:
            raise transient("graph/no-draft-id", "Graph created a draft but returned no id")
        draft_id: str = created.id
        checkpoint.update(draftId=draft_id, stage=CREATED)
        await _save(message, checkpoint)
        for attachment in later:
            await self._add_attachment(user, draft_id, attachment)
        checkpoint["stage"] = READY
        return draft_id

    async def _add_attachment(
        self, user: UserItemRequestBuilder, draft_id: str, attachment: Attachment
    ) -> None:
        item = user.messages.by_message_id(draft_id)
        body = attachment_body(attachment)
        if len(body) <= MAX_REQUEST_BYTES or attachment.size < UPLOAD_SESSION_MIN_BYTES:
            await self._post(
                item.attachments,
                (body, "application/json"),
                may_have_sent=False,
                permission=DRAFT_PERMISSION,
                immutable=True,
            )
            return
        session = await _call(
            lambda: item.attachments.create_upload_session.post(
                CreateUploadSessionPostRequestBody(
                    attachment_item=AttachmentItem(
                        attachment_type=AttachmentType.File,
                        name=attachment.name,
                        size=attachment.size,
                        content_type=attachment.content_type,
                        is_inline=attachment.inline,
                        content_id=attachment.content_id,
                    )
                ),
                request_configuration=_immutable(),
            ),
            may_have_sent=False,
            permission=DRAFT_PERMISSION,
        )
        if session is None or not session.upload_url:
            raise transient("graph/no-upload-session", "Graph returned no upload URL")
        await self._upload(session.upload_url, attachment.content())

    async def _upload(self, url: str, data: bytes) -> None:
        """Chunked PUTs to the pre-authenticated upload URL (no Authorization header: the URL is
        the credential). msgraph-core's LargeFileUploadTask cannot parse Outlook's
        ``nextExpectedRanges``, hence this loop."""
        total = len(data)
        for start in range(0, total, UPLOAD_CHUNK_BYTES):
            chunk = data[start : start + UPLOAD_CHUNK_BYTES]
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}",
            }
            try:
                response = await self._uploads.put(url, content=chunk, headers=headers)
            except httpx.HTTPError as exc:
                raise _network_error(exc, may_have_sent=False) from exc
            if response.status_code >= 400:
                code, text = _error_body(response)
                raise classify_graph(
                    response.status_code,
                    code,
                    text,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )


async def _save(message: OutboundMessage, checkpoint: dict[str, str]) -> None:
    """Persist the draft's progress before going on: a crash after this point resumes the draft
    instead of creating (and sending) a second one."""
    if message.save_checkpoint is not None:
        await message.save_checkpoint(checkpoint)


def _too_large(large: TooLarge, *, draft: bool) -> DeliveryError:
    if large.body_only:
        hint = "the body alone is over Graph's 4 MB per request: shorten the text or html"
    elif draft:
        hint = "shrink the message"
    else:
        hint = (
            "set MAILGW_GRAPH_MODE=draft (needs Mail.ReadWrite) to send attachments of up "
            "to 150 MB through upload sessions, or shrink the message"
        )
    return DeliveryError(
        "graph/ErrorMessageSizeExceeded",
        f"the request would be {large.size} bytes; Graph takes at most {MAX_REQUEST_BYTES}",
        transient=False,
        hint=hint,
    )


async def _call(make: Callable[[], Awaitable[T]], *, may_have_sent: bool, permission: str) -> T:
    """Run one Graph request and turn every failure into a classified ``DeliveryError``;
    ``permission`` is the application permission the request needs (a 403's hint names it)."""
    try:
        return await make()
    except APIError as exc:
        headers: Any = exc.response_headers or {}
        retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        code, message = None, str(exc.message or exc)
        if isinstance(exc, ODataError) and exc.error is not None:
            code, message = exc.error.code, exc.error.message or message
        raise classify_graph(
            exc.response_status_code,
            code,
            message,
            retry_after=retry_after,
            may_have_sent=may_have_sent,
            permission=permission,
        ) from exc
    except httpx.HTTPError as exc:
        raise _network_error(exc, may_have_sent=may_have_sent) from exc
    except TimeoutError as exc:
        raise _network_error(exc, may_have_sent=may_have_sent) from exc
    except AzureError as exc:  # the identity endpoint refused, or could not be reached
        raise token_unavailable(exc) from exc


def _network_error(exc: BaseException, *, may_have_sent: bool) -> DeliveryError:
    """Connect failures never reached Graph; a timeout or a dropped answer may have."""
    not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    ambiguous = may_have_sent and not not_sent
    name = type(exc).__name__
    return DeliveryError(
        "graph/timeout" if "Timeout" in name else "graph/network-error",
        f"{name}: {exc}" if str(exc) else name,
        transient=True,
        ambiguous=ambiguous,
        hint="Graph did not answer in time; the gateway retries"
        + (" (the message may already have been sent)" if ambiguous else ""),
    )


def _error_body(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = response.json().get("error", {})
        return error.get("code"), error.get("message") or response.reason_phrase
    except ValueError:
        return None, response.reason_phrase
