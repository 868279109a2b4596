"""HTML bodies: a sanitised copy for display (nh3) and a readable plain-text rendering (html-text).

The text rendering is for agents reading a ticket: paragraphs, line breaks, list items and table rows on lines
of their own, no markup, links or images; scripts, styles and the head are dropped. The parser only calls it
when an email has no text/plain body. html-text parses with lxml (C) and walks the tree in Python, so very
large HTML is cut first.
"""

from __future__ import annotations

import re

import nh3

# Bigger HTML is cut before conversion to text (the tree walk is linear but in Python: about 10 MB/s).
MAX_HTML_FOR_TEXT = 2 * 1024 * 1024

_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup", "dd", "del",
    "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
    "li", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
}
_ALLOWED_ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "td": {"colspan", "rowspan", "valign", "width"},
    "th": {"colspan", "rowspan", "valign", "width"},
    "table": {"width", "border", "cellpadding", "cellspacing"},
    "ol": {"start", "type"},
}
# cid: keeps inline images resolvable against the attachments; data: URIs are not allowed (tracking,
# huge payloads).
_URL_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
_CLEAN_CONTENT = {"script", "style", "title", "head", "noscript", "template", "object", "embed", "iframe"}

_TEXT_TAGS = _ALLOWED_TAGS - {"img", "a", "font", "span", "col", "colgroup"}

_TRAILING_SPACE = re.compile(r"[ \t\xa0]+$", re.MULTILINE)
_MANY_BLANK_LINES = re.compile(r"\n{3,}")
_TAG = re.compile(r"<[^>]*>")


# Built once: nh3.clean() with these options builds its sanitiser anew on every call (about 25 µs each).
_SANITISER = nh3.Cleaner(
    tags=_ALLOWED_TAGS,
    attributes=_ALLOWED_ATTRIBUTES,
    url_schemes=_URL_SCHEMES,
    clean_content_tags=_CLEAN_CONTENT,
    strip_comments=True,
    link_rel="noopener noreferrer",
)
_TEXT_ONLY = nh3.Cleaner(
    tags=_TEXT_TAGS, attributes={}, clean_content_tags=_CLEAN_CONTENT, strip_comments=True, link_rel=None
)


def sanitise(html: str) -> str:
    """Sanitised HTML: no scripts, styles, event handlers or javascript: URLs; cid: images kept."""
    return _SANITISER.clean(html)


def to_text(html: str, *, sanitised: bool = False) -> tuple[str, str | None]:
    """Readable plain text of an HTML body. Returns (text, defect-or-None). Never raises.

    ``sanitised``: the HTML is :func:`sanitise`'s output, already without head, title, styles and scripts.
    """
    defect = None
    try:
        import html_text

        # nh3 (Rust) first throws away what has no text for an agent: head and title, styles, scripts,
        # Office XML, comments
        lean = html if sanitised else _TEXT_ONLY.clean(html)
        if len(lean) > MAX_HTML_FOR_TEXT:
            lean = lean[:MAX_HTML_FOR_TEXT]
            defect = f"HTML body longer than {MAX_HTML_FOR_TEXT} characters: text rendering cut"
        text = html_text.etree_to_text(html_text.parse_html(lean), guess_layout=True)  # nh3 cleaned it
    except Exception as exc:  # lxml refuses some inputs (e.g. nothing but a comment or an XML declaration)
        text = _TAG.sub(" ", html)
        defect = f"HTML could not be converted to text ({type(exc).__name__}); tags stripped"
    text = _TRAILING_SPACE.sub("", text.replace("\r\n", "\n"))
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip("\n") + "\n" if text.strip() else "", defect
