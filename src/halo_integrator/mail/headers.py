"""Header decoding that survives real-world mail: RFC 2047 (broken or not), raw 8-bit, RFC 2231.

The stdlib's compat32 parser hands header values over undecoded; raw 8-bit bytes arrive as
surrogate escapes. Everything here is tolerant and never raises.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import urllib.parse
from datetime import datetime
from email.utils import getaddresses, parsedate_to_datetime

from halo_integrator.mail.charsets import codec_for, decode_bytes
from halo_integrator.mail.model import Address

# Lenient: no whitespace required around words, anything but "?=" inside the text.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75}?)\?([QqBb])\?(.*?)\?=", re.DOTALL)
_FOLD = re.compile(r"\r\n[ \t]?|\n[ \t]?|\r[ \t]?")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_CUT_ESCAPE = re.compile(r"=[0-9A-Fa-f]?\?=")  # an encoded word whose text ends inside an escape
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PERCENT = re.compile(rb"%[0-9A-Fa-f]{2}")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_BARE_ID = re.compile(r"[^\s<>,;\"()]+@[^\s<>,;\"()]+")
# One entry of a plain address list: "Display Name <local@domain>", a display name that is one quoted string
# without escapes ("Doe, John" <local@domain>), or "local@domain"; no comments, groups or route syntax
# (RFC 5322 specials), then a comma or the end.
_ATEXT = r"[^\s\"(),:;<>@\[\]\\]+"
_PLAIN_ENTRY = re.compile(
    rf"\s*(?:([^\"(),:;<>@\[\]\\]*?)\s*<({_ATEXT}@{_ATEXT})>"
    rf"|\"([^\"\\]*)\"\s*<({_ATEXT}@{_ATEXT})>"
    rf"|({_ATEXT}@{_ATEXT}))\s*(?:,|$)"
)


def unfold(value: str) -> str:
    """Join folded header lines (a fold becomes one space) and drop stray control characters."""
    if "\n" in value or "\r" in value:
        value = _FOLD.sub(" ", value)
    if not value.isprintable():
        value = _CONTROL.sub("", value.replace("\t", " "))
    return value.strip()


def raw_bytes(value: str) -> bytes:
    """The original bytes of a compat32 header value (8-bit bytes come back from surrogate escapes)."""
    try:
        return value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def decode_8bit(value: str, hint: str | None = None) -> str:
    """Decode a header value with raw 8-bit bytes: UTF-8, else the message's charset, else a guess."""
    if value.isascii():
        return value
    data = raw_bytes(value) if _has_surrogates(value) else value.encode("utf-8", "surrogatepass")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if hint:
        text, trouble = decode_bytes(data, hint, guess=False)
        if trouble is None:
            return text
    # long enough for a statistical guess to beat windows-1252 (CJK names in raw 8-bit headers)
    if len(data) >= 8 and not _mostly_latin(data):
        return decode_bytes(data, None)[0]
    return decode_bytes(data, "windows-1252", guess=False)[0]


def _mostly_latin(data: bytes) -> bool:
    """Few 8-bit bytes among ASCII letters: a Western name (ä, é), not a CJK or Cyrillic string."""
    high = sum(1 for byte in data if byte >= 0x80)
    return high * 3 < len(data)


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _b_decode(text: str) -> bytes:
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def _q_decode(text: str) -> bytes:
    data = raw_bytes(text)
    if not data.endswith(b"=") and b"==" not in data and b"\n" not in data and b"\r" not in data:
        # binascii's RFC 2047 "Q" decoder (C); it reads a trailing "=", "==" and line breaks its own way
        return binascii.a2b_qp(data, header=True)
    return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))


def decode_header(value: str | None, hint: str | None = None) -> str:
    """Decode one header value: unfold, RFC 2047 encoded words, raw 8-bit. Never raises."""
    if not value:
        return ""
    value = unfold(value)
    if "=?" not in value:
        return decode_8bit(value, hint)
    joined = _one_q_run(value)
    if joined is not None:
        charset, data = joined
        result = decode_bytes(data, charset if codec_for(charset) else hint, guess=False)[0]
    else:
        result = _decode_words(value, hint)
    if not result.isprintable():
        result = _CONTROL.sub("", result.replace("\t", " ").replace("\r", " ").replace("\n", " "))
    return result.strip()


def _one_q_run(value: str) -> tuple[str, bytes] | None:
    """A value that is nothing but "Q" encoded words of one charset (a long subject folded into many): its
    charset and bytes, decoded at once. None for anything else, which :func:`_decode_words` reads word by word.

    Decoding the words' texts joined gives the same bytes as decoding each, unless a word ends inside an
    escape ("=" or "=4" before "?="), which then runs on into the next word: those are read word by word.
    """
    first = _ENCODED_WORD.match(value)
    if first is None or first.group(2) not in "Qq" or first.end() == len(value):
        return None
    charset = first.group(1)
    word, run = _q_run(charset)
    if run.fullmatch(value) is None or _CUT_ESCAPE.search(value):
        return None
    data = raw_bytes("".join(word.findall(value)))
    if b"==" in data or b"\n" in data or b"\r" in data:
        return None
    return charset.split("*", 1)[0].lower(), binascii.a2b_qp(data, header=True)


@functools.lru_cache(maxsize=32)
def _q_run(charset: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One "Q" encoded word of this charset (as written), its text the group; and a run of them with nothing
    but blanks between."""
    word = rf"=\?{re.escape(charset)}\?[Qq]\?([^?]*)\?="
    return re.compile(word), re.compile(rf"{word}(?:[ \t]*{word})*")


def _decode_words(value: str, hint: str | None) -> str:
    """Encoded words and the text between them, decoded: runs of adjacent words of one charset as one."""
    pieces: list[str] = []
    pos = 0
    # Runs of adjacent encoded words of one charset are joined as bytes before decoding, so a
    # multi-byte character (or a base64 quantum) split across two words survives.
    run_charset: str | None = None
    run_words: list[tuple[str, str]] = []

    def flush() -> None:
        if run_charset is None:
            return
        chunks: list[bytes] = []
        b64 = ""
        for encoding, text in run_words:
            if encoding == "B":
                b64 += text.strip()
                if len(b64) % 4 == 0:
                    chunks.append(_b_decode(b64))
                    b64 = ""
            else:
                if b64:
                    chunks.append(_b_decode(b64))
                    b64 = ""
                chunks.append(_q_decode(text))
        if b64:
            chunks.append(_b_decode(b64))
        charset = run_charset if codec_for(run_charset) else None
        pieces.append(decode_bytes(b"".join(chunks), charset or hint, guess=False)[0])
        run_words.clear()

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        charset = match.group(1).split("*", 1)[0].lower()
        if run_charset is None or charset != run_charset or between.strip():
            flush()
            if between and (pos == 0 or between.strip()):
                pieces.append(decode_8bit(between, hint))
            run_charset = charset
        run_words.append((match.group(2).upper(), match.group(3)))
        pos = match.end()
    flush()
    if pos < len(value):
        pieces.append(decode_8bit(value[pos:], hint))
    return "".join(pieces)


def decode_param(value: str | tuple[str | None, str | None, str] | None, hint: str | None = None) -> str:
    """Decode a MIME parameter as returned by compat32 ``get_param``/``get_filename`` (RFC 2231 or 2047)."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        charset, _lang, text = value
        # compat32 has already %-unquoted the value as latin-1: undo that to get the bytes back
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:
            data = raw_bytes(text)
        if b"%" in data and _PERCENT.search(data):  # still quoted (some mailers double-encode)
            data = urllib.parse.unquote_to_bytes(data)
        return decode_bytes(data, charset or hint, guess=False)[0]
    return decode_header(value.strip().strip('"'), hint)


def parse_addresses(value: str | None, hint: str | None = None) -> tuple[Address, ...]:
    """Parse an address-list header into Address values (address lower-cased). Never raises."""
    if not value:
        return ()
    raw = unfold(value)
    pairs = _plain_pairs(raw)
    if pairs is None:
        try:
            pairs = getaddresses([raw])
        except Exception:
            pairs = []
    if not any("@" in addr for _, addr in pairs) and ("=?" in raw or not raw.isascii()):
        # the whole address (not just the name) was encoded, or 8-bit: decode first, parse then
        try:
            pairs = getaddresses([decode_header(raw, hint)])
        except Exception:
            pairs = []
    result: list[Address] = []
    for raw_name, raw_addr in pairs:
        name = decode_header(raw_name, hint).strip().strip('"').strip() if raw_name else ""
        addr = decode_8bit(raw_addr, hint).strip().strip("<>").strip().lower()
        if not name and not addr:
            continue
        if not addr and "@" in name:
            name, addr = "", name.lower()
        result.append(Address(name, addr))
    if not result:
        found = _BARE_ID.search(raw)
        if found:
            result.append(Address("", found.group(0).lower()))
    return tuple(result)


def _plain_pairs(raw: str) -> list[tuple[str, str]] | None:
    """(name, address) pairs of a plain ASCII address list, as ``getaddresses`` returns them, read with one
    regular expression (most address headers are plain; the stdlib parser is slow); None for anything else."""
    if not raw.isascii():
        return None
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(raw)
    while pos < end:
        found = _PLAIN_ENTRY.match(raw, pos)
        if found is None or found.end() == pos:
            return None
        name, address, quoted, quoted_address, bare = found.groups()
        if address:
            pairs.append((" ".join(name.split()), address))
        elif quoted_address:
            pairs.append((quoted, quoted_address))  # a quoted name is kept as written, spaces and all
        else:
            pairs.append(("", bare))
        pos = found.end()
    return pairs


def parse_msgids(value: str | None) -> tuple[str, ...]:
    """Message ids of a Message-ID / In-Reply-To / References header, without angle brackets."""
    if not value:
        return ()
    text = unfold(value)
    ids = _MSG_ID.findall(text)
    if not ids:
        ids = _BARE_ID.findall(text) or [tok for tok in text.replace(",", " ").split() if tok]
    seen: dict[str, None] = {}
    for raw_id in ids:
        msgid = decode_8bit(raw_id).strip()
        if msgid:
            seen.setdefault(msgid, None)
    return tuple(seen)


def parse_date(value: str | None) -> datetime | None:
    """An aware datetime when the Date header carries a zone, naive when it does not, None when unreadable."""
    if not value:
        return None
    text = unfold(decode_8bit(value))
    try:
        result = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if result is None or not 1970 <= result.year <= 9999:
        return None
    return result
