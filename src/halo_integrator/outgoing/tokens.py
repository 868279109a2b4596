"""Bearer access tokens for the cloud APIs and for XOAUTH2, behind one small interface.

A :class:`TokenProvider` hands out an access token and says when it expires::

    tokens = MsalClientCredentials.from_credential(credential, secrets)
    session.headers["Authorization"] = f"Bearer {tokens.token()}"

Implementations:

* :class:`MsalClientCredentials`: Entra ID app-only (client-credentials grant) through msal, for Graph
  (``https://graph.microsoft.com/.default``) or for IMAP/POP/SMTP XOAUTH2
  (``https://outlook.office365.com/.default``). The client secret is ``secrets("client_secret")``.
* :class:`GoogleServiceAccount`: a Google Workspace service account with domain-wide delegation, acting as
  the mailbox address (``with_subject``). The JSON key is ``secrets("service_account_json")``.
* :class:`StaticToken`: a token kept as is (``secrets("access_token")``), e.g. for XOAUTH2 against a server
  whose tokens are issued elsewhere.

Tokens are cached in memory until :data:`EXPIRY_MARGIN` before they expire, so one run asks the token
endpoint once per mailbox. Nothing here sends mail; the mailbox connectors use the same providers.

Failures: a refused credential (wrong or expired secret, missing consent or delegation) is a
:class:`~halo_integrator.errors.SecretError`; an unreachable or failing token endpoint (network, timeout,
HTTP 429/5xx) is a :class:`~halo_integrator.errors.ConnectError`, worth retrying later. Messages never
contain a secret.

msal, google-auth and requests are imported only when a provider first needs a token.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from halo_integrator.errors import ConnectError, SecretError

if TYPE_CHECKING:
    import requests

    from halo_integrator.config import Credential, Mailbox
    from halo_integrator.connectors.base import SecretLookup

log = logging.getLogger(__name__)


GRAPH_SCOPE = "https://graph.microsoft.com/.default"
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"  # IMAP / POP / SMTP XOAUTH2, app-only
GMAIL_SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
GMAIL_FULL_SCOPE = "https://mail.google.com/"  # IMAP / SMTP XOAUTH2 need the full scope
MICROSOFT_LOGIN = "https://login.microsoftonline.com"

EXPIRY_MARGIN = timedelta(minutes=5)
"""A cached token is replaced this long before it expires, so it never dies in the middle of a request."""

# Entra ID error codes that mean "fix the credential", with what to tell the operator.
_AADSTS_HINTS = {
    7000215: "the client secret is wrong",
    7000222: "the client secret has expired; create a new one in the app registration",
    700016: "no application with this client id exists in the tenant",
    90002: "the tenant does not exist",
    700024: "the client assertion is not within its valid time range",
    7000112: "the application is disabled",
}


@runtime_checkable
class TokenProvider(Protocol):
    """Something that hands out a bearer access token."""

    def token(self) -> str:
        """A valid access token, from the cache while it has more than :data:`EXPIRY_MARGIN` left."""
        ...

    def expires_at(self) -> datetime | None:
        """When the current token expires (timezone-aware UTC), or None when unknown or none fetched yet."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


class _Cached:
    """The (token, expiry) pair every provider keeps, with the refresh decision in one place."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: datetime | None = None

    def fresh(self) -> str | None:
        if self._token is None:
            return None
        if self._expires is not None and self._expires - EXPIRY_MARGIN <= _now():
            return None
        return self._token

    def get(self, fetch: Callable[[], tuple[str, datetime | None]]) -> str:
        """The cached token while it is fresh, else ``fetch()``'s (token, expiry), kept; one fetch at a time."""
        with self._lock:
            cached = self.fresh()
            if cached:
                return cached
            self._token, self._expires = fetch()
            return self._token

    @property
    def expires(self) -> datetime | None:
        return self._expires


class StaticToken:
    """A token known in advance: a string, or a callable asked once (``lambda: secrets("access_token")``).

    It is never refreshed; when the server refuses it, the fix is a new token in the keyring.
    """

    def __init__(self, token: str | Callable[[], str], *, expires_at: datetime | None = None) -> None:
        self._source = token
        self._value: str | None = token if isinstance(token, str) else None
        self._expires = expires_at

    @classmethod
    def from_secrets(cls, secrets: SecretLookup, kind: str = "access_token") -> StaticToken:
        return cls(lambda: secrets(kind))

    def token(self) -> str:
        if self._value is None:
            assert callable(self._source)
            self._value = self._source()
        if not self._value:
            raise SecretError(
                "The stored access token is empty; store one with `integrator credentials add`."
            )
        return self._value

    def expires_at(self) -> datetime | None:
        return self._expires


def for_xoauth2(mailbox: Mailbox, credential: Credential, secrets: SecretLookup) -> TokenProvider:
    """Where an IMAP or POP3 XOAUTH2 login gets its access token, by the credential's ``oauth_provider``.

    The token endpoints (Entra ID, Google) are checked against the system's trusted CAs (or
    ``$REQUESTS_CA_BUNDLE``); the credential's ``ca_file`` is the mail server's and is not used for them."""
    if credential.oauth_provider == "microsoft365":
        return MsalClientCredentials.from_credential(credential, secrets, scopes=(OUTLOOK_SCOPE,), ca_file="")
    if credential.oauth_provider == "google":
        return GoogleServiceAccount(
            secrets=secrets,
            subject=credential.username or mailbox.address,
            scopes=(GMAIL_FULL_SCOPE,),
            timeout=credential.timeout,
        )
    return StaticToken.from_secrets(secrets, "access_token")


# ------------------------------------------------------------------------------------------- HTTP session


def http_session(*, ca_file: str = "", timeout: float = 60.0) -> requests.Session:
    """A requests session whose every request has a timeout and, when ``ca_file`` is set, trusts that CA.

    The CA is passed per request on purpose: requests lets ``$REQUESTS_CA_BUNDLE`` override a session-level
    ``verify`` (research notes, section 6), which would silently ignore the configured ``ca_file``.
    Certificates are always verified.
    """
    import requests

    class _Session(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            if ca_file and kwargs.get("verify") in (None, True):
                kwargs["verify"] = ca_file
            return super().request(method, url, *args, **kwargs)

    return _Session()


# ------------------------------------------------------------------------------------------- Microsoft


class MsalClientCredentials:
    """Entra ID app-only tokens (OAuth 2 client-credentials grant) through msal.

    ``authority`` defaults to ``https://login.microsoftonline.com/<tenant_id>``; another one (a national
    cloud, or a test server) is used as given, without msal's instance discovery. msal keeps its own
    in-memory token cache too; this class adds the expiry bookkeeping of :class:`TokenProvider`.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        secrets: SecretLookup,
        authority: str = "",
        scopes: Sequence[str] = (GRAPH_SCOPE,),
        ca_file: str = "",
        timeout: float = 60.0,
    ) -> None:
        if not client_id:
            raise SecretError("A Microsoft 365 credential needs client_id (the app registration's id).")
        if not authority and not tenant_id:
            raise SecretError("A Microsoft 365 credential needs tenant_id (or an explicit authority URL).")
        self.client_id = client_id
        self.authority = (authority or f"{MICROSOFT_LOGIN}/{tenant_id}").rstrip("/")
        self.scopes = list(scopes)
        self._secrets = secrets
        self._ca_file = ca_file
        self._timeout = timeout
        self._app: Any = None
        self._cache = _Cached()

    @classmethod
    def from_credential(
        cls,
        credential: Credential,
        secrets: SecretLookup,
        *,
        scopes: Sequence[str] = (GRAPH_SCOPE,),
        ca_file: str | None = None,
    ) -> MsalClientCredentials:
        return cls(
            tenant_id=credential.tenant_id,
            client_id=credential.client_id,
            authority=credential.authority,
            secrets=secrets,
            scopes=scopes,
            ca_file=credential.ca_file if ca_file is None else ca_file,
            timeout=credential.timeout,
        )

    def _application(self) -> Any:
        if self._app is None:
            import msal

            custom = not self.authority.lower().startswith(MICROSOFT_LOGIN)
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._secrets("client_secret"),
                    authority=self.authority,
                    http_client=http_session(ca_file=self._ca_file, timeout=self._timeout),
                    timeout=self._timeout,
                    instance_discovery=False if custom else None,
                    validate_authority=not custom,
                )
            except ValueError as exc:  # msal: bad authority URL, or the tenant discovery answered 4xx
                raise SecretError(
                    f"Entra ID does not know the authority {self.authority}: check tenant_id / authority "
                    f"({exc})."
                ) from None
            except OSError as exc:  # requests' ConnectionError, Timeout and SSLError are OSErrors
                raise ConnectError(f"Cannot reach the Entra ID authority {self.authority}: {exc}") from None
        return self._app

    def token(self) -> str:
        return self._cache.get(self._fetch)

    def expires_at(self) -> datetime | None:
        return self._cache.expires

    def _fetch(self) -> tuple[str, datetime | None]:
        import msal

        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=self.scopes)
        except msal.exceptions.MsalServiceError as exc:  # msal raises this for a 5xx answer
            raise ConnectError(
                f"The Entra ID token endpoint of {self.authority} failed ({exc}); try later."
            ) from None
        except OSError as exc:  # requests' ConnectionError, Timeout, SSLError
            raise ConnectError(
                f"Cannot reach the Entra ID token endpoint of {self.authority}: {exc}"
            ) from None
        except ValueError:  # an answer that is not JSON (a proxy's error page, a 429 without a body)
            raise ConnectError(
                f"The Entra ID token endpoint of {self.authority} gave an unreadable answer; try later."
            ) from None
        if "access_token" not in result:
            raise self._error(result)
        expires_in = result.get("expires_in")
        expires = _now() + timedelta(seconds=int(expires_in)) if expires_in else None
        log.debug("Entra ID token for %s from %s", self.client_id, result.get("token_source", "?"))
        return result["access_token"], expires

    def _error(self, result: dict[str, Any]) -> Exception:
        error = str(result.get("error", "unknown_error"))
        description = str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0]
        codes = [int(c) for c in result.get("error_codes", []) if str(c).isdigit()]
        hint = next((_AADSTS_HINTS[c] for c in codes if c in _AADSTS_HINTS), "")
        what = f"{error}: {description}" if description else error
        if error in ("temporarily_unavailable", "server_error") or error.startswith("http_"):
            return ConnectError(
                f"The Entra ID token endpoint of {self.authority} failed ({what}); try later."
            )
        message = f"Entra ID refused a token for client {self.client_id} ({what})."
        if hint:
            message += f" Probably {hint}."
        message += " Fix it with `integrator credentials add` or in the app registration."
        return SecretError(message)


# ------------------------------------------------------------------------------------------- Google


class GoogleServiceAccount:
    """Google Workspace service-account tokens with domain-wide delegation, acting as ``subject``.

    The key file's JSON is ``secrets("service_account_json")``; its ``token_uri`` says where tokens come
    from (a test server can be named there). The admin must grant the service account's client id exactly
    these scopes under Security → API controls → Domain-wide delegation.
    """

    def __init__(
        self,
        *,
        secrets: SecretLookup,
        subject: str,
        scopes: Sequence[str] = (GMAIL_SEND_SCOPE,),
        ca_file: str = "",
        timeout: float = 60.0,
    ) -> None:
        if not subject:
            raise SecretError("A Google service account needs the mailbox address to act as (subject).")
        self.subject = subject
        self.scopes = list(scopes)
        self._secrets = secrets
        self._ca_file = ca_file
        self._timeout = timeout
        self._creds: Any = None
        self._cache = _Cached()

    def _credentials(self) -> Any:
        if self._creds is None:
            from google.oauth2 import service_account

            raw = self._secrets("service_account_json")
            try:
                info = json.loads(raw)
                creds = service_account.Credentials.from_service_account_info(info, scopes=self.scopes)
            except (ValueError, KeyError, TypeError) as exc:
                # ValueError covers bad JSON and a missing/broken key; the message names fields, not values
                name = type(exc).__name__
                raise SecretError(
                    f"The stored Google service-account key is not a usable JSON key file ({name}). "
                    "Store the file downloaded from the Cloud console with `integrator credentials add`."
                ) from None
            self._creds = creds.with_subject(self.subject)
        return self._creds

    def token(self) -> str:
        return self._cache.get(self._fetch)

    def expires_at(self) -> datetime | None:
        return self._cache.expires

    def _fetch(self) -> tuple[str, datetime | None]:
        import google.auth.exceptions
        from google.auth.transport.requests import Request

        creds = self._credentials()
        try:
            creds.refresh(Request(session=http_session(ca_file=self._ca_file, timeout=self._timeout)))
        except google.auth.exceptions.RefreshError as exc:
            raise self._error(exc) from None
        except google.auth.exceptions.TransportError as exc:
            raise ConnectError(f"Cannot reach Google's token endpoint: {exc}") from None
        expiry = creds.expiry
        if expiry is not None and expiry.tzinfo is None:  # google-auth keeps naive UTC
            expiry = expiry.replace(tzinfo=UTC)
        return creds.token, expiry

    def _error(self, exc: Exception) -> Exception:
        # RefreshError(message, response_data[, retryable]); response_data is the token endpoint's JSON
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        error = str(data.get("error", "")) or str(exc.args[0] if exc.args else exc)
        description = str(data.get("error_description", ""))
        what = f"{error}: {description}" if description else error
        if getattr(exc, "retryable", False) or error in ("internal_failure", "temporarily_unavailable"):
            return ConnectError(f"Google's token endpoint failed for {self.subject} ({what}); try later.")
        hint = ""
        if error == "unauthorized_client":
            hint = (
                " Grant the service account's client id domain-wide delegation for "
                f"{', '.join(self.scopes)} in the Admin console."
            )
        elif error == "invalid_grant":
            hint = " Check that the key is current and that the mailbox address is a real Workspace user."
        return SecretError(f"Google refused a token for {self.subject} ({what}).{hint}")
