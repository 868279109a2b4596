"""Turning bytes of a declared (often wrongly declared) charset into text without ever failing.

Order: the declared charset (through an alias table of what real mailers write), then UTF-8, then a
statistical guess (charset-normalizer, imported lazily because it is slow to load), then the declared or
UTF-8 codec with replacement characters. A part is never dropped for its charset.
"""

from __future__ import annotations

import codecs
import functools

# What mailers write -> what Python should use. Supersets are preferred: a message labelled with the
# narrow charset almost always contains the vendor superset's extra characters.
_ALIASES: dict[str, str] = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "us-ascii": "utf-8",  # an ASCII label on 8-bit bytes is nearly always UTF-8 (else detection)
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
    "iso-8859-1": "cp1252",  # Windows mailers send 0x80-0x9f quotes and dashes under this label
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "windows-1252": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "euc-kr": "cp949",
    "x-windows-949": "cp949",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "x-gbk": "gb18030",
    "gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "euc-jp": "euc_jis_2004",
    "x-euc-jp": "euc_jis_2004",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "x-mac-ce": "mac_latin2",
    "koi8-r": "koi8_r",
    "koi8-u": "koi8_u",
    "windows-1251": "cp1251",
    "cp-1251": "cp1251",
    "win-1251": "cp1251",
}

# Labels that say "we do not know": go straight to detection.
_UNKNOWN = frozenset(
    {"", "unknown-8bit", "x-unknown", "unknown", "x-user-defined", "default", "none", "8bit", "binary",
     "charset", "us-ascii-unknown"}
)

# Codecs that may legitimately decode ASCII-only bytes to something else.
_STATEFUL_PREFIXES = ("utf-7", "utf_7", "utf-16", "utf_16", "utf-32", "utf_32", "iso2022", "hz")


@functools.lru_cache(maxsize=512)
def codec_for(label: str | None) -> str | None:
    """The Python codec name for a charset label as found in mail, or None when unknown/absent."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    if "*" in name:  # RFC 2231 language suffix: utf-8*en
        name = name.split("*", 1)[0]
    name = name.strip("_$ ")
    if name in _UNKNOWN:
        return None
    if name in _ALIASES:
        return _ALIASES[name]
    candidates = [name, name.replace("_", "-"), name.replace(" ", "-")]
    if name.startswith("x-"):
        candidates.append(name[2:])
    if name.startswith(("windows", "win", "cp")):
        digits = "".join(ch for ch in name if ch.isdigit())
        if digits:
            candidates.append("cp" + digits)
    for candidate in candidates:
        if candidate in _ALIASES:
            return _ALIASES[candidate]
        try:
            return codecs.lookup(candidate).name
        except LookupError:
            continue
    return None


def _is_stateful(codec: str) -> bool:
    return codec.startswith(_STATEFUL_PREFIXES)


def detect(data: bytes) -> str | None:
    """A statistical guess of the codec of ``data`` (charset-normalizer), or None."""
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:65536], steps=4, chunk_size=256).best()
    except Exception:
        return None
    if best is None:
        return None
    return codec_for(best.encoding)


def decode_bytes(data: bytes, declared: str | None, *, guess: bool = True) -> tuple[str, str | None]:
    """Decode ``data`` declared as ``declared``. Returns (text, defect-or-None). Never raises.

    ``guess=False`` skips the statistical detector (used for short header fragments, where it is noise).
    """
    codec = codec_for(declared)
    if data.isascii() and (codec is None or not _is_stateful(codec)):
        return data.decode("ascii"), None
    if codec is not None:
        try:
            text = data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if codec != "utf-8" and not _is_stateful(codec) and _plausible_utf8(data, codec):
                return data.decode("utf-8"), f"declared charset {declared!r} but the text is UTF-8"
            return text, None
    if codec != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return text, (f"unknown charset {declared!r}, used UTF-8" if declared and codec is None else None)
    why = f"text is not valid {declared}" if declared else "undeclared 8-bit text"
    if guess:
        detected = detect(data)
        if detected:
            try:
                return data.decode(detected), f"{why}; detected {detected}"
            except (UnicodeDecodeError, LookupError):
                pass
    if codec is not None and codec != "utf-8":
        return data.decode(codec, "replace"), f"{why}; undecodable bytes replaced"
    try:
        return data.decode("cp1252"), f"{why}; read as windows-1252"
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), f"{why}; undecodable bytes replaced"


_SINGLE_BYTE_LATIN = frozenset({"cp1252", "iso8859-15", "cp1250", "iso8859-2", "cp1254"})


def _plausible_utf8(data: bytes, codec: str) -> bool:
    """A Latin label on bytes that are valid, non-ASCII UTF-8: the label is almost surely wrong."""
    if codec not in _SINGLE_BYTE_LATIN:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
