"""A local HTTPS server answering like Entra ID, Microsoft Graph, Google's token endpoint and the Gmail API.

Only what the outgoing transports and token providers use, shaped after the official documentation:

* Entra ID v2 (learn.microsoft.com, "Microsoft identity platform and the OAuth 2.0 client credentials flow"):
  ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token`` with
  ``grant_type=client_credentials``, ``client_id``, ``client_secret``, ``scope=<resource>/.default``;
  success ``200 {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token"}``,
  errors ``{"error", "error_description": "AADSTS…", "error_codes": [...], "timestamp", "trace_id",
  "correlation_id", "error_uri"}`` (401 ``invalid_client`` for a wrong secret, 400 ``invalid_scope``).
* Graph ``POST /v1.0/users/{id}/sendMail`` (user-sendmail.md, MIME variant): ``Content-Type: text/plain``,
  body = base64 MIME; ``202 Accepted`` with an empty body; ``400 ErrorMimeContentInvalidBase64String``;
  ``401 InvalidAuthenticationToken``; errors as ``{"error": {"code", "message", "innerError"}}``;
  throttling ``429`` with ``Retry-After`` (concepts/throttling.md).
* Google OAuth 2.0 for service accounts: ``POST /token`` with
  ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and a signed JWT ``assertion``; success
  ``200 {"access_token", "expires_in": 3599, "token_type": "Bearer"}``; a scope the admin did not delegate
  gives ``401 unauthorized_client``; a bad signature ``400 invalid_grant``.
* Gmail ``POST /gmail/v1/users/me/messages/send`` with ``{"raw": base64url}``; success ``200`` with a
  Message resource ``{"id", "threadId", "labelIds": ["SENT"]}``; errors as
  ``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}``.

Every request is recorded (:attr:`FakeCloud.requests`). :meth:`FakeCloud.fail` queues one canned error
answer for the next request whose path contains a given text.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import json
import secrets
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Canned:
    path_part: str
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeCloud:
    def __init__(self, ca: trustme.CA, ca_file: Path) -> None:
        self.ca_file = str(ca_file)
        self.tenant = "11111111-2222-3333-4444-555555555555"
        self.client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        self.client_secret = "s3cr3t~value"
        self.google_delegated_scopes = {GMAIL_SEND}  # what the Workspace admin granted
        self.requests: list[Recorded] = []
        self.issued: dict[str, str] = {}  # access token → "microsoft" | "google"
        self.next_tokens: list[str] = []  # tokens to issue next, in order (a mail server that knows them)
        self._canned: list[_Canned] = []
        self._lock = threading.Lock()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._sa_key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self._sa_public = key.public_key()
        self.sa_email = "helpdesk-sender@halo-test.iam.gserviceaccount.com"

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- control

    def start(self) -> FakeCloud:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant}"

    def service_account_info(self) -> dict[str, str]:
        """A service-account key file as the Cloud console downloads it, with token_uri pointing here."""
        return {
            "type": "service_account",
            "project_id": "halo-test",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": self._sa_key_pem,
            "client_email": self.sa_email,
            "client_id": "109876543210987654321",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{self.url}/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }

    def fail(self, path_part: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer the next request whose path contains ``path_part`` with this status and JSON body."""
        with self._lock:
            self._canned.append(_Canned(path_part, status, body, headers or {}))

    def _take_canned(self, path: str) -> _Canned | None:
        with self._lock:
            for i, canned in enumerate(self._canned):
                if canned.path_part in path:
                    return self._canned.pop(i)
        return None

    def requests_to(self, path_part: str) -> list[Recorded]:
        return [r for r in self.requests if path_part in r.path]

    # -- endpoints: each returns (status, JSON body or None, extra headers)

    def handle(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        canned = self._take_canned(req.path)
        if canned is not None:
            return canned.status, canned.body, canned.headers
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        if req.method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._openid_configuration(parts[0])
        if req.method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self._entra_token(parts[0], req)
        if (
            req.method == "POST"
            and len(parts) == 4
            and parts[:2] == ["v1.0", "users"]
            and parts[3] == "sendMail"
        ):
            return self._graph_send_mail(parts[2], req)
        if req.method == "POST" and parts == ["token"]:
            return self._google_token(req)
        if req.method == "POST" and parts == ["gmail", "v1", "users", "me", "messages", "send"]:
            return self._gmail_send(req)
        return 404, {"error": {"code": "NotFound", "message": f"No route {req.method} {req.path}"}}, {}

    def _openid_configuration(self, tenant: str) -> tuple[int, Any, dict[str, str]]:
        if tenant != self.tenant:
            return 400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found."), {}
        base = f"{self.url}/{tenant}"
        return (
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "jwks_uri": f"{self.url}/{tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "issuer": f"{self.url}/{tenant}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
            },
            {},
        )

    def _entra_token(self, tenant: str, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        form = req.form()
        if tenant != self.tenant:
            return 400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found."), {}
        if form.get("grant_type") != "client_credentials":
            return (
                400,
                _aad_error("unsupported_grant_type", 70003, "The app requested an unsupported grant type."),
                {},
            )
        if form.get("client_id") != self.client_id:
            return (
                400,
                _aad_error(
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{form.get('client_id')}' was not found in the directory.",
                ),
                {},
            )
        if form.get("client_secret") != self.client_secret:
            return (
                401,
                _aad_error(
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the "
                    "client secret value, not the client secret ID, for a secret added to app "
                    f"'{self.client_id}'.",
                ),
                {},
            )
        scope = form.get("scope", "")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            return (
                400,
                _aad_error(
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {scope} is not valid. Client credential flows must have a "
                    "scope value with /.default suffixed to the resource identifier (application ID URI).",
                ),
                {},
            )
        token = self.next_tokens.pop(0) if self.next_tokens else "eyJ0eXAiOiJKV1Qi.ms." + secrets.token_urlsafe(24)
        self.issued[token] = "microsoft"
        return (
            200,
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token},
            {},
        )

    def _bearer(self, req: Recorded, issuer: str) -> bool:
        auth = req.headers.get("authorization", "")
        return auth.startswith("Bearer ") and self.issued.get(auth[7:]) == issuer

    def _graph_send_mail(self, user: str, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        ids = {"request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
        if not self._bearer(req, "microsoft"):
            return 401, _graph_error("InvalidAuthenticationToken", "Access token validation failure."), ids
        if not req.headers.get("content-type", "").startswith("text/plain"):
            return (
                400,
                _graph_error("RequestBodyRead", "Invalid JSON: the request body is empty or malformed."),
                ids,
            )
        try:
            mime = base64.b64decode(req.body, validate=True)
        except binascii.Error:
            return (
                400,
                _graph_error(
                    "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
                ),
                ids,
            )
        msg = email.message_from_bytes(mime, policy=email.policy.default)
        if not any(msg.get(h) for h in ("To", "Cc", "Bcc")):
            return 400, _graph_error("ErrorInvalidRecipients", "At least one recipient isn't valid."), ids
        return 202, None, ids

    def _google_token(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        form = req.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}, {}
        try:
            # aud stays https://oauth2.googleapis.com/token even with another token_uri (research notes 3.1)
            claims = jwt.decode(
                form.get("assertion", ""),
                self._sa_public,
                algorithms=["RS256"],
                options={"verify_aud": False},
            )
        except jwt.PyJWTError:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, {}
        if claims.get("iss") != self.sa_email:
            return (
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT: Token must be a short-lived token",
                },
                {},
            )
        scopes = set(str(claims.get("scope", "")).split())
        if not claims.get("sub") or not scopes or not scopes <= self.google_delegated_scopes:
            return (
                401,
                {
                    "error": "unauthorized_client",
                    "error_description": "Client is unauthorized to retrieve access tokens using this "
                    "method, or client not authorized for any of the scopes requested.",
                },
                {},
            )
        token = self.next_tokens.pop(0) if self.next_tokens else "ya29.fake." + secrets.token_urlsafe(24)
        self.issued[token] = "google"
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}, {}

    def _gmail_send(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        if not self._bearer(req, "google"):
            return (
                401,
                _google_error(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential.",
                    "Invalid Credentials",
                    "authError",
                    "UNAUTHENTICATED",
                ),
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        try:
            raw = req.json()["raw"]
            mime = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (ValueError, KeyError, binascii.Error):
            return (
                400,
                _google_error(
                    400, "Invalid value for ByteString", "Bad Request", "badRequest", "INVALID_ARGUMENT"
                ),
                {},
            )
        msg = email.message_from_bytes(mime, policy=email.policy.default)
        if not any(msg.get(h) for h in ("To", "Cc", "Bcc")):
            return (
                400,
                _google_error(
                    400, "Recipient address required", "Bad Request", "invalidArgument", "INVALID_ARGUMENT"
                ),
                {},
            )
        mid = secrets.token_hex(8)
        return 200, {"id": mid, "threadId": mid, "labelIds": ["SENT"]}, {}


def _aad_error(error: str, code: int, text: str) -> dict[str, Any]:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\n"
        f"Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code],
        "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }


def _google_error(code: int, message: str, short: str, reason: str, status: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": short, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


def _make_handler(cloud: FakeCloud) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            req = Recorded(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            cloud.requests.append(req)
            status, payload, headers = cloud.handle(req)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Cache-Control", "no-store, no-cache")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
