"""``parse(raw) -> ParsedEmail``: any bytes in, never an exception out.

Built for speed on the stdlib's compat32 parser (which leaves headers and payloads undecoded) with our
own tolerant decoders on top:

* headers: :mod:`halo_integrator.mail.headers` (RFC 2047/2231, raw 8-bit);
* body: the text/plain parts that are not attachments; HTML rendered as text only when there is no text/plain;
* attachments: every other leaf part, inline ``cid:`` images, forwarded ``message/rfc822`` kept whole as
  one ``.eml``, TNEF unpacked, calendar invites summarised into the body and kept as ``.ics``;
* limits: nesting depth :data:`MAX_DEPTH` and :data:`MAX_PARTS` parts, beyond which parts are skipped
  and a defect is recorded;
* verdicts: :mod:`halo_integrator.mail.verdicts`; fingerprint: :func:`fingerprint`.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from halo_integrator.mail import htmltext, invites, tnef, verdicts
from halo_integrator.mail.charsets import decode_bytes
from halo_integrator.mail.headers import (
    decode_8bit,
    decode_header,
    decode_param,
    parse_addresses,
    parse_date,
    parse_msgids,
    unfold,
)
from halo_integrator.mail.mime import header_fields, message_from_bytes
from halo_integrator.mail.model import Address, Attachment, ParsedEmail
from halo_integrator.mail.names import extension_for, safe_filename, unique_filenames

MAX_DEPTH = 50
MAX_PARTS = 2000

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_BOUNDARY_LINE = re.compile(rb"^--([^\s-][^\r\n]{0,200}?)(?:--)?[ \t]*\r?$", re.MULTILINE)
_NO_ADDRESS = Address("", "")
_CID_FILENAME = re.compile(r"[\w\-. ]{1,80}\.[A-Za-z][A-Za-z0-9]{1,4}")
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_RETURNED_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})


def parse(raw: bytes) -> ParsedEmail:
    """Parse one email. Never raises: on a catastrophic failure the result says why in ``defects``."""
    try:
        return _Parse(raw).run()
    except Exception as exc:
        return _fallback(raw, f"parser failure: {type(exc).__name__}: {exc}"[:300])


# -- input clean-up -------------------------------------------------------------------------------


def _clean_input(raw: bytes) -> tuple[bytes, list[str]]:
    """Strip what sits before the first header: BOM, blank lines, an mbox "From " line."""
    defects: list[str] = []
    data = raw
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        defects.append("byte-order mark before the headers")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16", "replace").encode("utf-8", "surrogateescape")
        defects.append("file is UTF-16 encoded")
    for _ in range(2):
        stripped = data.lstrip(b" \t\r\n")
        if len(stripped) != len(data):
            data = stripped
            defects.append("blank lines before the headers")
        if data.startswith(b"From ") or data.startswith(b">From "):
            end = data.find(b"\n")
            data = data[end + 1 :] if end >= 0 else b""
        elif data and not _HEADER_LINE.match(data):
            skipped = _skip_junk_lines(data)
            if skipped is not None:
                data = skipped
                defects.append("junk lines before the headers")
    return data, defects


def _skip_junk_lines(data: bytes, limit: int = 3) -> bytes | None:
    """Drop up to ``limit`` lines of junk ("---- Original message ----") when real headers follow."""
    lines = data[:4096].splitlines(keepends=True)
    offset = 0
    for index, line in enumerate(lines[:limit]):
        offset += len(line)
        following = lines[index + 1 : index + 3]
        if len(following) == 2 and all(_HEADER_LINE.match(x) or x[:1] in (b" ", b"\t") for x in following) \
                and _HEADER_LINE.match(following[0]):
            return data[offset:]
    return None


def _lf(data: bytes) -> bytes:
    """The bytes with CRLF and lone CR line endings turned into LF."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


def _body_bytes(data: bytes) -> bytes:
    """The bytes after the header block, line endings normalised to LF."""
    data = _lf(data)
    end = data.find(b"\n\n")
    return data[end + 2 :] if end >= 0 else b""


def fingerprint(sender: str, date: str, subject: str, message_id: str, body: bytes) -> str:
    """sha256 over the content (sender address, date, subject, Message-ID, body), not transport headers."""
    digest = hashlib.sha256()
    for field in (sender.lower(), " ".join(date.split()), " ".join(subject.split()), message_id):
        digest.update(field.encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    digest.update(body.rstrip())
    return digest.hexdigest()


# -- payloads -------------------------------------------------------------------------------------


def _decode_base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        cleaned = _BASE64_JUNK.sub(b"", data)
        if len(cleaned) % 4 == 1:
            cleaned = cleaned[:-1]
        try:
            return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))
        except binascii.Error:
            return b""


def _payload(part: Message) -> tuple[bytes, str | None]:
    """The decoded payload bytes of a leaf part (tolerant of bad base64 / quoted-printable)."""
    # the undecoded payload: compat32's get_payload() would decode 8-bit text with "replace"
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list):
        return _flatten_body(part), None
    if not isinstance(payload, str):
        return b"", None
    data = _to_bytes(payload)
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if not cte or cte in ("7bit", "8bit", "binary"):
        return data, None
    if cte == "base64":
        return _decode_base64(data), None
    if cte in ("quoted-printable", "quoted_printable", "qp"):
        return binascii.a2b_qp(data), None
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        decoded = part.get_payload(decode=True)
        return (decoded if isinstance(decoded, bytes) else data), None
    return data, f"unknown Content-Transfer-Encoding {cte[:30]!r}, kept as is"


def _to_bytes(payload: str) -> bytes:
    if payload.isascii():
        return payload.encode("ascii")
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return payload.encode("utf-8", "surrogateescape")


def _flatten(message: Message, out: list[bytes], depth: int = 0) -> None:
    """Serialise a compat32 message back to bytes, cheaply (the stdlib generator re-folds every header).

    Headers are written as stored (original folding), payloads as received; only the line endings
    between parts may differ from the original.
    """
    if depth > MAX_DEPTH:
        return
    for name, value in message._headers:  # type: ignore[attr-defined]
        out.append(_to_bytes(f"{name}: {value}\n"))
    out.append(b"\n")
    payload = getattr(message, "_payload", None)
    if isinstance(payload, str):
        out.append(_to_bytes(payload))
    elif isinstance(payload, list):
        boundary = message.get_boundary()
        if boundary is None or message.get_content_maintype() == "message":
            for index, child in enumerate(payload):
                if index:
                    out.append(b"\n")
                if isinstance(child, Message):
                    _flatten(child, out, depth + 1)
            return
        delimiter = _to_bytes("--" + boundary)
        if message.preamble:
            out.append(_to_bytes(message.preamble + "\n"))
        for child in payload:
            out.append(delimiter + b"\n")
            if isinstance(child, Message):
                _flatten(child, out, depth + 1)
            out.append(b"\n")
        out.append(delimiter + b"--\n")
        if message.epilogue:
            out.append(_to_bytes(message.epilogue))


def _flatten_body(part: Message) -> bytes:
    """What a message/* part that the standard library parsed into Message objects encloses, written back out
    with LF line endings. Its children are written, not the part: a digest's part has no header block of its
    own, and cutting the part's at the first blank line would then cut the enclosed email's."""
    out: list[bytes] = []
    payload = getattr(part, "_payload", None)
    for index, child in enumerate(payload if isinstance(payload, list) else ()):
        if index:
            out.append(b"\n")
        if isinstance(child, Message):
            _flatten(child, out, 1)
    return _lf(b"".join(out))


# -- the walk -------------------------------------------------------------------------------------


class _Parse:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.defects: list[str] = []
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.calendars: list[str] = []
        self.attachments: list[Attachment] = []
        self.part_types: set[str] = set()
        self.parts = 0
        self.cut = False
        self.hint: str | None = None  # the first declared text charset, for undeclared 8-bit headers
        self.tnef_text = ""
        self.tnef_html = ""

    def defect(self, text: str) -> None:
        if text not in self.defects:
            self.defects.append(text)

    def run(self) -> ParsedEmail:
        if self.raw[:8] == _OLE_MAGIC:
            return _not_mime(self.raw, "not a MIME message: an Outlook .msg file", "message.msg",
                             "application/vnd.ms-outlook")
        data, cleaning = _clean_input(self.raw)
        self.defects.extend(cleaning)
        if not _HEADER_LINE.match(data):
            self.defect("no header block: not a MIME message")
        message = message_from_bytes(data, open_enclosed=False)
        if any(type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in message.defects):
            repaired = _repair_header_block(data)
            if repaired is not None:
                self.defect("header lines without folding whitespace: read as continuations")
                data = repaired
                message = message_from_bytes(data, open_enclosed=False)
        top = message.get_param("charset")
        if isinstance(top, str) and top.strip():
            self.hint = top.strip()
        self.walk(message, 0)
        headers = self.headers(message)
        return self.build(message, headers, data)

    def headers(self, message: Message) -> tuple[tuple[str, str], ...]:
        result = []
        for name, value in _raw_headers(message):
            result.append((decode_8bit(str(name)), decode_header(str(value), self.hint)))
        return tuple(result)

    def walk(self, part: Message, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS or depth > MAX_DEPTH:
            if not self.cut:
                self.cut = True
                self.defect(f"MIME structure cut at depth {MAX_DEPTH} / {MAX_PARTS} parts")
            return
        for found in part.defects:
            self.defect(f"MIME: {type(found).__name__}")
        ctype = part.get_content_type()
        self.part_types.add(ctype)
        if ctype.startswith("message/") and ctype not in ("message/partial", "message/external-body"):
            self.message_part(part, ctype)
            return
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                for child in payload:
                    if isinstance(child, Message):
                        self.walk(child, depth + 1)
            return
        if ctype.startswith("multipart/"):
            recovered = _recover_multipart(part)
            if recovered is not None:
                self.defect("multipart without a usable boundary: boundary guessed")
                for child in recovered:
                    self.walk(child, depth + 1)
                return
            self.defect("multipart without a usable boundary: read as text")
            ctype = "text/plain"
        self.leaf(part, ctype)

    def leaf(self, part: Message, ctype: str) -> None:
        data, trouble = _payload(part)
        if trouble:
            self.defect(trouble)
        disposition = (part.get_content_disposition() or "").lower()
        filename = self.filename(part)
        charset = part.get_content_charset()
        if self.hint is None and charset and ctype.startswith("text/"):
            self.hint = charset
        if ctype in _BODY_TYPES and disposition != "attachment" and not (
            filename and (disposition != "inline" or self.texts or self.htmls)
        ):
            text = self.text(data, charset)
            (self.texts if ctype == "text/plain" else self.htmls).append(text)
            return
        if (ctype in _TNEF_TYPES or filename.lower() == "winmail.dat") and self.unpack_tnef(data):
            return
        if ctype == "text/calendar" and not self.calendars:
            try:
                summary = invites.summarise(self.text(data, charset))
            except Exception as exc:
                self.defect(f"calendar part unreadable: {type(exc).__name__}")
            else:
                if summary:
                    self.calendars.append(summary)
        self.add_attachment(part, ctype, data, filename, disposition)

    def text(self, data: bytes, charset: str | None) -> str:
        text, trouble = decode_bytes(data, charset)
        if trouble:
            self.defect(trouble)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\x00" in text:
            text = text.replace("\x00", "")
        return text

    def filename(self, part: Message) -> str:
        for header, param in (("content-disposition", "filename"), ("content-type", "name")):
            raw = _raw_get(part, header)
            if raw is None:
                continue
            source = part
            if not raw.isascii():  # raw 8-bit parameters: decode the header, then read the parameter
                source = Message()
                source[header] = decode_8bit(raw, self.hint)
            try:
                value = source.get_param(param, header=header)
            except Exception:  # a malformed parameter list: try the other header
                value = None
            if value:
                name = decode_param(value, self.hint)
                if name.strip():
                    return name.strip()
        return ""

    def add_attachment(self, part: Message, ctype: str, data: bytes, filename: str, disposition: str) -> None:
        content_id = _raw_get(part, "content-id")
        cid = unfold(str(content_id)).strip().strip("<>").strip() if content_id is not None else ""
        inline = disposition == "inline" or (not disposition and bool(cid))
        if not filename:
            filename = _fallback_name(part, ctype, cid)
        self.attachments.append(
            Attachment(safe_filename(filename, ctype), ctype, data, cid or None, inline)
        )

    def message_part(self, part: Message, ctype: str) -> None:
        """message/rfc822 (and other message/* reports) become one attachment each, never flattened."""
        try:
            data, trouble = _payload(part)
        except RecursionError:
            data, trouble = b"", "attached message nested too deeply to rebuild"
        if trouble:
            self.defect(trouble)
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        if isinstance(getattr(part, "_payload", None), list) and cte == "base64":
            data = _decode_base64(data)
        filename = self.filename(part)
        if not filename and ctype == "message/rfc822":
            inner = getattr(part, "_payload", None)
            head = inner[0] if isinstance(inner, list) and inner and isinstance(inner[0], Message) \
                else _header_block(data)  # left unread by the splitter: its header block alone
            subject = decode_header(_raw_get(head, "subject"), self.hint) if head is not None else ""
            filename = (subject + ".eml") if subject.strip() else ""
        if not filename:
            filename = _fallback_name(part, ctype, "")
        disposition = (part.get_content_disposition() or "").lower()
        if ctype == "message/rfc822" and filename and not filename.lower().endswith((".eml", ".msg")):
            filename += ".eml"
        self.add_attachment(part, ctype, data, filename, disposition)

    def unpack_tnef(self, data: bytes) -> bool:
        try:
            content = tnef.unpack(data)
        except Exception as exc:
            self.defect(f"winmail.dat could not be unpacked ({type(exc).__name__}); kept as attachment")
            return False
        self.tnef_text = self.tnef_text or content.text
        self.tnef_html = self.tnef_html or content.html
        self.attachments.extend(content.attachments)
        if content.rtf_only:
            self.defect("winmail.dat body is RTF only; winmail.dat kept as attachment")
            return False
        if not (content.text or content.html or content.attachments):
            self.defect("winmail.dat held nothing readable; kept as attachment")
            return False
        return True

    def build(self, message: Message, headers: tuple[tuple[str, str], ...], data: bytes) -> ParsedEmail:
        first = verdicts.first_values(headers)
        raw_all: dict[str, list[str]] = {}
        for key, value in _raw_headers(message):
            raw_all.setdefault(key.lower(), []).append(value)
        raw_first = {key: values[0] for key, values in raw_all.items()}
        # the first address with an addr-spec; a bare display name ("MAILER-DAEMON <>") only as last resort
        sender = _NO_ADDRESS
        for name in ("from", "sender", "reply-to", "return-path"):
            found = tuple(a for v in raw_all.get(name, ()) for a in parse_addresses(v, self.hint))
            usable = [a for a in found if "@" in a.address]
            if usable:
                sender = usable[0]
                break
            if found and sender is _NO_ADDRESS:
                sender = found[0]

        def addresses(name: str) -> tuple[Address, ...]:
            return tuple(a for v in raw_all.get(name, ()) for a in parse_addresses(v, self.hint))

        subject = first.get("subject", "")
        ids = parse_msgids(raw_first.get("message-id"))
        message_id = ids[0] if ids else None

        text_body, html_body = self.bodies()
        report_type = message.get_param("report-type")
        signals = verdicts.Signals(
            headers=first,
            subject=subject,
            sender_address=sender.address,
            sender_name=sender.name,
            content_type=message.get_content_type(),
            report_type=report_type.lower() if isinstance(report_type, str) else "",
            part_types=frozenset(self.part_types),
        )
        auto_reply, bounce = verdicts.classify(signals)
        date = parse_date(raw_first.get("date"))
        print_date = date.isoformat() if date else first.get("date", "")
        return ParsedEmail(
            message_id=message_id,
            in_reply_to=parse_msgids(raw_first.get("in-reply-to")),
            references=parse_msgids(raw_first.get("references")),
            subject=subject,
            sender=sender,
            to=addresses("to"),
            cc=addresses("cc"),
            reply_to=addresses("reply-to"),
            date=date,
            headers=headers,
            text_body=text_body,
            html_body=html_body,
            attachments=_unique_names(self.attachments),
            auto_reply=auto_reply,
            bounce=bounce,
            defects=tuple(self.defects),
            fingerprint=fingerprint(sender.address, print_date, subject, message_id or "", _body_bytes(data)),
            returned_ids=_returned_ids(self.attachments) if bounce else (),
        )

    def bodies(self) -> tuple[str, str | None]:
        html_source = "\n".join(self.htmls) if self.htmls else self.tnef_html
        html_body = None
        if html_source:
            try:
                html_body = htmltext.sanitise(html_source)
            except Exception as exc:
                self.defect(f"HTML could not be sanitised ({type(exc).__name__})")
        if self.texts:
            text = "\n".join(t.rstrip("\n") for t in self.texts)
        elif html_source:
            text, trouble = htmltext.to_text(html_body or html_source, sanitised=bool(html_body))
            if trouble:
                self.defect(trouble)
        else:
            text = self.tnef_text
        if self.calendars:
            text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + "\n\n".join(self.calendars)
        return text, html_body


def _repair_header_block(data: bytes) -> bytes | None:
    """Indent stray lines inside the header block (broken folding) when real headers follow them."""
    lines = data[:65536].split(b"\n")
    out: list[bytes] = []
    changed = False
    for index, line in enumerate(lines[:-1]):
        if line in (b"", b"\r"):
            break
        if _HEADER_LINE.match(line) or line[:1] in (b" ", b"\t"):
            out.append(line)
            continue
        if any(_HEADER_LINE.match(x) for x in lines[index + 1 : index + 13]):
            out.append(b" " + line)
            changed = True
            continue
        break
    if not changed:
        return None
    head = b"\n".join(out)
    return head + data[len(b"\n".join(lines[: len(out)])) :]


def _returned_ids(attachments: list[Attachment]) -> tuple[str, ...]:
    """The Message-ID, In-Reply-To and References of the email a bounce returns, read from the header block
    of its attached copy (the threading of the bounce looks them up)."""
    ids: list[str] = []
    for att in attachments:
        if att.content_type in _RETURNED_TYPES:
            ids += _thread_ids(att.data)
    return tuple(dict.fromkeys(i for i in ids if i))


def _thread_ids(data: bytes) -> list[str]:
    header = _header_block(data)
    if header is None:  # unreadable: the bounce is threaded without it
        return []
    return [
        *parse_msgids(_raw_get(header, "message-id"))[:1],
        *parse_msgids(_raw_get(header, "in-reply-to")),
        *parse_msgids(_raw_get(header, "references")),
    ]


def _header_block(data: bytes) -> Message | None:
    """The header block of an enclosed email, read without its body (which can be megabytes); None when
    unreadable."""
    try:
        return header_fields(_clean_input(data)[0])
    except Exception:
        return None


def _fallback_name(part: Message, ctype: str, cid: str) -> str:
    """A name for an unnamed part: Outlook's "image001.png@01D..." Content-ID, else Content-Description."""
    local = cid.split("@", 1)[0]
    if _CID_FILENAME.fullmatch(local):
        return local
    description = decode_header(_raw_get(part, "content-description"))
    if description and len(description) <= 80 and "/" not in description:
        ext = extension_for(ctype)
        return description if description.lower().endswith(ext) else description + ext
    return ""


def _raw_headers(part: Message) -> list[tuple[str, str]]:
    """Header (name, value) pairs as received (compat32's get()/items() turn 8-bit values into Headers)."""
    headers = getattr(part, "_headers", None)
    return [(str(k), str(v)) for k, v in headers] if isinstance(headers, list) else []


def _raw_get(part: Message, name: str) -> str | None:
    headers = getattr(part, "_headers", None) or []
    for key, value in headers:
        if str(key).lower() == name:
            return str(value)
    return None


def _recover_multipart(part: Message) -> list[Message] | None:
    """Children of a multipart whose boundary is missing or wrong, by guessing the boundary from the body."""
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str) or not payload:
        return None
    body = _to_bytes(payload)
    counts: dict[bytes, int] = {}
    for match in _BOUNDARY_LINE.finditer(body):
        token = match.group(1).rstrip()
        if token.endswith(b"--"):
            token = token[:-2]
        counts[token] = counts.get(token, 0) + 1
    if not counts:
        return None
    boundary, seen = max(counts.items(), key=lambda item: item[1])
    if seen < 1 or b'"' in boundary:
        return None
    subtype = part.get_content_subtype() or "mixed"
    kind = subtype.encode("ascii", "replace")
    header = b"Content-Type: multipart/%s; boundary=\"%s\"\n\n" % (kind, boundary)
    rebuilt = BytesParser(policy=compat32).parsebytes(header + body)
    children = rebuilt.get_payload()
    if not rebuilt.is_multipart() or not isinstance(children, list) or not children:
        return None
    return [child for child in children if isinstance(child, Message)]


def _not_mime(raw: bytes, why: str, filename: str, content_type: str) -> ParsedEmail:
    return ParsedEmail(
        message_id=None, in_reply_to=(), references=(), subject="", sender=_NO_ADDRESS, to=(), cc=(),
        reply_to=(), date=None, headers=(), text_body="", html_body=None,
        attachments=(Attachment(filename, content_type, raw),), defects=(why,),
        fingerprint=hashlib.sha256(raw).hexdigest(),
    )


def _fallback(raw: bytes, why: str) -> ParsedEmail:
    """Whatever can still be read when the full parse failed: headers if possible, body as text."""
    headers: tuple[tuple[str, str], ...] = ()
    subject = ""
    sender = _NO_ADDRESS
    text = ""
    try:
        data, _ = _clean_input(raw)
        message = BytesParser(policy=compat32).parsebytes(data, headersonly=True)
        headers = tuple((str(k), decode_header(str(v))) for k, v in message.items())
        subject = decode_header(_raw_get(message, "subject"))
        found = parse_addresses(_raw_get(message, "from"))
        sender = found[0] if found else _NO_ADDRESS
        text = decode_bytes(_body_bytes(data)[:1_000_000], None, guess=False)[0]
    except Exception as exc:  # even the headers are unreadable: keep the first reason, add this one
        why = f"{why}; fallback failed too ({type(exc).__name__})"
    return ParsedEmail(
        message_id=None, in_reply_to=(), references=(), subject=subject, sender=sender, to=(), cc=(),
        reply_to=(), date=None, headers=headers, text_body=text, html_body=None, attachments=(),
        defects=(why,), fingerprint=hashlib.sha256(raw).hexdigest(),
    )


def _unique_names(attachments: list[Attachment]) -> tuple[Attachment, ...]:
    names = unique_filenames([a.filename for a in attachments])
    return tuple(
        a if a.filename == name else Attachment(name, a.content_type, a.data, a.content_id, a.inline, a.sha256)
        for a, name in zip(attachments, names, strict=True)
    )
