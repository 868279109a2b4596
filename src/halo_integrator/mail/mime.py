"""A fast splitter for well-formed MIME, building the same compat32 ``Message`` tree as the standard library.

The standard library's feed parser reads a message line by line through Python code; on our corpus that is
half the parse time. Well-formed messages (a header block, a blank line, multipart bodies whose delimiter
lines are all there) are split here with a few C-speed string searches instead, into exactly the tree
``email.parser.BytesParser(policy=compat32)`` builds: the same headers, payload strings, preambles, epilogues,
default types and defects. A multipart cut off before its close delimiter (a truncated email) is split here
too, with the ``CloseBoundaryNotFoundDefect`` the standard parser records; a ``message/delivery-status``
part (its body is blocks of headers) is handed to the standard library on its own. Anything else that is not
plainly well formed (a missing boundary, a stray line in the header block, bare CR line endings, nesting
deeper than :data:`MAX_DEPTH`) sends the whole message to the standard library, so the result never differs
from the standard parser's; only the time does. The corpus test ``tests/test_mail_mime.py`` checks that
equality.
"""

from __future__ import annotations

import email.utils
import itertools
import re
from email import errors
from email.message import Message, _unquotevalue  # type: ignore[attr-defined]
from email.parser import Parser
from email.policy import compat32
from typing import Any

MAX_DEPTH = 40

_BLANK_LINE = re.compile(r"\r?\n\r?\n")
_BLANK_LINE_BYTES = re.compile(rb"\r?\n\r?\n")
# One header field: a header line as the standard library knows one (email.feedparser.headerRE, less the
# mbox "From " line and an empty name), then the value as compat32 keeps it (the spaces after the colon
# dropped, continuation lines joined with their line breaks), then the line ending.
# The spaces after the colon are taken possessively: otherwise a last line of blanks with no line ending makes
# the match try every split of them with the value, in quadratic time.
_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*+([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)\r?\n")
_LONE_CR = re.compile(r"\r(?!\n)")


_MISSING = object()
_READ_AS_PARTS = frozenset({"message/partial", "message/external-body"})  # the importer walks into these


class ParsedMessage(Message):
    """A compat32 ``Message`` that finds a header by name in a dict and parses each header's parameters once.

    The parser asks every part for its content type, disposition, charset, boundary and file name; the stdlib
    answers each question by lower-casing header names until one matches, and parses the whole parameter
    list again. The name index is rebuilt when the header list is replaced, grows or shrinks (``replace_header``
    gives the message a list of its own rather than changing a shared one in place); the parameter cache is
    keyed by the header's value.
    """

    _headers: list[tuple[str, Any]]  # compat32 keeps the raw (name, value) pairs here

    def _found(self, name: str) -> tuple[str, str] | None:
        """The first (name, raw value) pair of a header, through the index."""
        headers = self._headers
        index = self.__dict__.get("_index")
        if index is None or index[0] is not headers or index[1] != len(headers):
            first: dict[str, tuple[str, str]] = {}
            for key, value in headers:
                first.setdefault(key.lower(), (key, value))
            index = self.__dict__["_index"] = (headers, len(headers), first)
        return index[2].get(name.lower())

    def get(self, name: str, failobj: Any = None) -> Any:
        found = self._found(name)
        if found is None:
            return failobj
        value = found[1]
        if self.policy is compat32 and type(value) is str and value.isascii():
            return value  # what compat32's header_fetch_parse returns for a value without 8-bit bytes
        return self.policy.header_fetch_parse(*found)

    def get_content_type(self) -> str:
        found = self._found("content-type")
        if found is None:
            return self.get_default_type()
        if self.policy is not compat32 or type(found[1]) is not str:  # another policy, or a Header (mutable)
            return super().get_content_type()
        cached = self.__dict__.get("_content_type")
        if cached is None or cached[0] is not found[1]:  # asked three or four times per part
            cached = self.__dict__["_content_type"] = (found[1], super().get_content_type())
        return str(cached[1])

    def __contains__(self, name: Any) -> bool:
        return self._found(name) is not None

    def replace_header(self, _name: str, _value: Any) -> None:
        # The stdlib replaces the header inside the list, which a shallow copy shares: the other message's
        # index would still look current. The change is made on a list of this message's own instead.
        self._headers = list(self._headers)
        super().replace_header(_name, _value)

    def _params(self, header: str) -> tuple[list[tuple[str, Any]], dict[str, Any]] | None:
        """The parameters of a header, as the stdlib's ``_get_params_preserve`` lists them, and the first value
        of each lower-cased name; None when the header is missing or not a plain string."""
        value = self.get(header, _MISSING)
        if not isinstance(value, str):  # missing, or an 8-bit value compat32 hands back as a Header
            return None
        cache: dict[tuple[str, str], tuple[list[tuple[str, Any]], dict[str, Any]]]
        cache = self.__dict__.setdefault("_param_cache", {})
        key = (header.lower(), value)
        entry = cache.get(key)
        if entry is None:
            params = _plain_params(value)
            if params is None:
                params = super()._get_params_preserve(None, header)  # type: ignore[misc]
            first: dict[str, Any] = {}
            for name, param in params:
                first.setdefault(name.lower(), param)
            entry = cache[key] = (params, first)
        return entry

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        entry = self._params(header)
        if entry is None:
            return super()._get_params_preserve(failobj, header)  # type: ignore[misc]
        return list(entry[0])

    def get_param(self, param: str, failobj: Any = None, header: str = "content-type", unquote: bool = True) -> Any:
        entry = self._params(header)
        if entry is None:
            return super().get_param(param, failobj, header, unquote)
        value = entry[1].get(param.lower(), _MISSING)
        if value is _MISSING:
            return failobj
        return _unquotevalue(value) if unquote else value


def _plain_params(value: str) -> list[tuple[str, str]] | None:
    """The parameters of a header value exactly as the stdlib's ``Message._get_params_preserve`` lists them,
    read with ``str.split``, for a value with no backslash, no RFC 2231 part (``*``) and no ";" inside quotes
    (nearly all); None for any other, which the stdlib reads."""
    if "\\" in value or "*" in value:
        return None
    pieces = value.split(";")
    if '"' in value and any(piece.count('"') % 2 for piece in pieces):
        return None  # a quoted ";" (or an unclosed quote): the stdlib's scan for the closing quote decides
    params: list[tuple[str, str]] = []
    for piece in pieces:
        name, equals, raw = piece.partition("=")
        name, raw = (name.strip().lower(), raw.strip()) if equals else (piece.strip(), "")
        if params:  # every value after the first is unquoted, then quoted again
            raw = f'"{email.utils.quote(email.utils.unquote(raw))}"'
        params.append((name, raw))
    return params


class _Fallback(Exception):
    """This part needs the standard parser."""


def message_from_bytes(data: bytes, *, open_enclosed: bool = True) -> Message:
    """The compat32 message tree of ``data``, as ``BytesParser(policy=compat32).parsebytes`` returns it.

    ``open_enclosed=False`` leaves every enclosed email (a ``message/*`` part other than a delivery-status
    report, a partial or an external body) unread: its payload is its text, as a leaf part's is, instead of
    a parsed message. The importer keeps such a part whole as one attachment, so reading a forwarded
    multi-megabyte email into parts only to write it back out would be wasted work.
    """
    text = data.decode("ascii", "surrogateescape")
    if _LONE_CR.search(text):
        return _stdlib(text, "text/plain")  # old Mac line endings: the line-based parser handles them
    try:
        message = _part(text, 0, "text/plain", open_enclosed)
    except (_Fallback, RecursionError):
        return _stdlib(text, "text/plain")
    if message.get_content_maintype() == "multipart" and not message.is_multipart():
        message.defects.append(errors.MultipartInvariantViolationDefect())  # as the parser's close() adds
    return message


def _message(fields: list[tuple[str, str]], stray: int | None) -> ParsedMessage:
    """A part with these header fields and no body yet. ``stray`` is where :func:`_headers` found a line that
    is no header line, if it did: the stdlib notes that as a missing header/body separator."""
    message = ParsedMessage(policy=compat32)
    message._headers = fields
    if stray is not None:
        message.defects.append(errors.MissingHeaderBodySeparatorDefect())
    return message


def header_fields(data: bytes) -> Message:
    """The fields of the header block at the start of ``data`` (an email, whose body is not read), as
    ``BytesHeaderParser(policy=compat32)`` reads them. Nothing is made of the fields (no content type, no
    parameters), so the reading stays linear whatever a field holds."""
    end = _BLANK_LINE_BYTES.search(data)
    block = data if end is None else data[: end.start()]
    text = block.decode("ascii", "surrogateescape")
    if not _LONE_CR.search(text) and not text.startswith(("From ", "\n", "\r\n")):
        try:
            fields, stray = _headers(text + "\n", len(text) + 1)
        except _Fallback:
            pass
        else:
            return _message(fields, stray)
    from email.parser import BytesHeaderParser

    return BytesHeaderParser(_class=ParsedMessage, policy=compat32).parsebytes(block)


def _stdlib(text: str, default_type: str) -> Message:
    message: Message = Parser(_class=ParsedMessage, policy=compat32).parsestr(text)
    if default_type != "text/plain":  # a digest's part: message/rfc822 by default, whatever its own header
        message.set_default_type(default_type)
    return message


def _part(text: str, depth: int, default_type: str, open_enclosed: bool) -> Message:
    if depth > MAX_DEPTH or text.startswith("From "):
        raise _Fallback
    stray: int | None = None
    if text.startswith(("\n", "\r\n")):
        headers: list[tuple[str, str]] = []
        body = text[1:] if text[0] == "\n" else text[2:]
    else:
        end = _BLANK_LINE.search(text)
        # the header block keeps the line ending of its last line; the blank line after it is dropped
        head_end = len(text) if end is None else end.start() + (2 if text.startswith("\r\n", end.start()) else 1)
        headers, stray = _headers(text, head_end)
        if stray is not None:
            body = text[stray:]  # a line that is no header ends the block and starts the body
        elif end is None:
            raise _Fallback  # headers only: let the standard parser judge
        else:
            body = text[end.end() :]
    message = _message(headers, stray)
    if default_type != "text/plain":
        message.set_default_type(default_type)
    ctype = message.get_content_type()
    maintype = ctype.partition("/")[0]
    message._maintype = maintype  # type: ignore[attr-defined]  # read back by _drop_delimiter_eol
    if maintype == "multipart":
        _multipart(message, body, depth, ctype, open_enclosed)
    elif maintype == "message":
        if ctype == "message/delivery-status":
            if depth == 0:
                raise _Fallback
            # blocks of headers, which the standard parser turns into one message each: let it read this part
            return _stdlib(text, default_type)  # its main type is read back from its header (_maintype)
        if open_enclosed or ctype in _READ_AS_PARTS:
            message.set_payload([_part(body, depth + 1, "text/plain", open_enclosed)])
        else:
            message.set_payload(body)
    else:
        message.set_payload(body)
    return message


def _headers(text: str, end: int) -> tuple[list[tuple[str, str]], int | None]:
    """The header lines of ``text[:end]`` as (name, value) pairs, as compat32 stores them (continuation lines
    joined, the last line ending cut), and where a line that is no header line starts, if one does: the
    standard parser ends the header block there and reads that line as the first of the body."""
    out: list[tuple[str, str]] = []
    pos = 0
    if text.startswith((" ", "\t")):
        raise _Fallback  # a continuation line first: a defect the standard parser records
    while pos < end:
        field = _FIELD.match(text, pos, end)
        if field is None:
            if text.find("\n", pos, end) < 0:
                raise _Fallback  # a line without an ending
            if text.startswith(("From ", ":"), pos):
                raise _Fallback  # an envelope line among the headers, or no name: the standard parser's rules
            return out, pos
        name, value = field.groups()
        out.append((name, value.rstrip("\r\n")))
        pos = field.end()
    return out, None


def _multipart(message: Message, body: str, depth: int, ctype: str, open_enclosed: bool) -> None:
    boundary = message.get_boundary()
    cte = str(message.get("content-transfer-encoding", "7bit")).lower()
    if not boundary or cte not in ("7bit", "8bit", "binary"):
        raise _Fallback
    found = _delimiters(body, "--" + boundary)
    closes = [i for i, (_, _, close) in enumerate(found) if close]
    if not found:
        # the boundary never shows up: like the standard parser, keep the whole body as the payload
        message.defects.append(errors.StartBoundaryNotFoundDefect())
        message.set_payload(body)
        message.epilogue = ""
        return
    if found[0][2]:
        raise _Fallback  # a close delimiter before any other: let the standard parser judge
    cut_off = not closes
    if cut_off:
        # cut off before the close delimiter: the last part runs to the end, as the standard parser reads it
        if found[-1][1] >= len(body):
            raise _Fallback  # ... unless nothing follows the last delimiter line
        message.defects.append(errors.CloseBoundaryNotFoundDefect())
        found = [*found, (len(body), len(body), True)]
        closes = [len(found) - 1]
    last = closes[0]
    if found[0][0]:
        message.preamble = _strip_eol(body[: found[0][0]])
    child_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
    children: list[Message | str] = []
    for (_, start, _), (following, _, _) in itertools.pairwise(found[: last + 1]):
        if start == following:
            raise _Fallback  # adjacent delimiter lines: the standard parser skips them in its own way
        child = _part(body[start:following], depth + 1, child_type, open_enclosed)
        _drop_delimiter_eol(child)
        children.append(child)
    message.set_payload(children)
    if not cut_off:
        message.epilogue = body[found[last][1] :]  # everything after the close delimiter line


def _delimiters(body: str, marker: str) -> list[tuple[int, int, bool]]:
    """Every delimiter line ``--boundary[--][ \\t]*`` at a line start: (line start, next line start, close?).

    The same lines the standard parser's ``^--boundary(--)?[ \\t]*(\\r\\n|\\n)?$`` matches, found with
    ``str.find`` instead of testing every line.
    """
    found: list[tuple[int, int, bool]] = []
    size = len(body)
    at = 0 if body.startswith(marker) else body.find("\n" + marker) + 1
    while at > 0 or (at == 0 and body.startswith(marker)):
        k = at + len(marker)
        close = body.startswith("--", k)
        if close:
            k += 2
        while k < size and body[k] in " \t":
            k += 1
        end = -1
        if k == size:
            end = k
        elif body[k] == "\n":
            end = k + 1
        elif body.startswith("\r\n", k):
            end = k + 2
        if end >= 0:
            found.append((at, end, close))
        else:
            end = at + 1  # a longer boundary that only starts like ours: not a delimiter
        nxt = body.find("\n" + marker, end - 1 if end > at + 1 else end)
        at = nxt + 1 if nxt >= 0 else -1
    return found


def _strip_eol(text: str) -> str:
    """The text without its last line ending (a regex anchored at the end would scan all of it)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _drop_delimiter_eol(part: Message) -> None:
    """RFC 2046: the line ending before a delimiter belongs to the delimiter. Like the standard parser, take
    it from the last message the part's parse created: the part itself, or for a message/* part its inner
    message (all the way down); from a multipart's epilogue, else from a text payload."""
    last = part
    payload = last._payload  # type: ignore[attr-defined]
    while _maintype(last) == "message" and isinstance(payload, list) and payload:
        last = payload[-1]
        payload = last._payload
    if _maintype(last) == "multipart":  # its delimiters found or not, as the stdlib does
        if last.epilogue == "":
            last.epilogue = None
        elif last.epilogue is not None:
            last.epilogue = _strip_eol(last.epilogue)
    elif isinstance(payload, str):
        last._payload = _strip_eol(payload)  # type: ignore[attr-defined]


def _maintype(part: Message) -> str:
    """The main type this splitter recorded, or, for a part the standard library built (the header blocks of
    a delivery-status part), the one its headers give."""
    recorded = getattr(part, "_maintype", None)
    return recorded if recorded is not None else part.get_content_maintype()
