"""Unit tests of halo_integrator.mail.parse on small hand-written emails."""

from __future__ import annotations

import base64
import pickle
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from halo_integrator.mail import Address, ParsedEmail, parse
from halo_integrator.mail.charsets import codec_for, decode_bytes
from halo_integrator.mail.headers import decode_header
from halo_integrator.picklable import Picklable
from helpers import EXAMPLES, corpus_files, corpus_or_skip


def mail(headers: str, body: bytes | str = b"Hello\n", *, eol: bytes = b"\n") -> bytes:
    head = headers.strip("\n").encode("utf-8")
    data = body.encode("utf-8") if isinstance(body, str) else body
    return (head + b"\n\n" + data).replace(b"\n", eol)


BASIC = """\
From: "Doe, Jane" <Jane.Doe@Example.COM>
To: Support <support@example.com>, bob@example.org
Cc: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>
Subject: Printer on fire
Date: Tue, 02 Jan 2024 10:30:00 +0100
Message-ID: <abc.123@example.com>
In-Reply-To: <prev@example.com>
References: <one@example.com> junk <two@example.com>
"""


def test_basic_headers_and_addresses() -> None:
    email = parse(mail(BASIC))
    assert email.subject == "Printer on fire"
    assert email.sender == Address("Doe, Jane", "jane.doe@example.com")
    assert email.to == (Address("Support", "support@example.com"), Address("", "bob@example.org"))
    assert email.cc == (Address("Jörg", "joerg@example.de"),)
    assert email.message_id == "abc.123@example.com"
    assert email.in_reply_to == ("prev@example.com",)
    assert email.references == ("one@example.com", "two@example.com")
    assert email.date == datetime(2024, 1, 2, 9, 30, tzinfo=UTC)
    assert email.date is not None and email.date.utcoffset() == timedelta(hours=1)
    assert email.text_body.strip() == "Hello"
    assert email.header("subject") == "Printer on fire"
    assert [name for name, _ in email.headers][:3] == ["From", "To", "Cc"]
    assert email.auto_reply is None and email.bounce is None


def test_message_ids_without_brackets_and_bad_date() -> None:
    email = parse(mail("From: a@b.c\nMessage-ID: bare-id@example.com\nReferences: x@y z@w\nDate: not a date"))
    assert email.message_id == "bare-id@example.com"
    assert email.references == ("x@y", "z@w")
    assert email.date is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("=?utf-8?B?w6TDtsO8?=", "äöü"),
        ("Re: =?ISO-8859-1?Q?Andr=E9?= Pirard", "Re: André Pirard"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # whitespace between encoded words is dropped
        ("=?utf-8?B?w6TD?==?utf-8?B?tsO8?=", "äöü"),  # no space, split mid-character
        ("=?utf-8?B?w6TDt?= =?utf-8?B?sO8?=", "äöü"),  # base64 split mid-quantum
        ("=?x-bogus?Q?caf=C3=A9?=", "café"),  # unknown charset: falls back
        ("=?utf8?Q?caf=C3=A9?=", "café"),
        ("=?ks_c_5601-1987?B?x9GxuQ==?=", "한국"),
        ("=?gb2312?B?1tDOxA==?=", "中文"),
        ("=?iso-2022-jp?B?GyRCJEgkaxsoQg==?=", "とる"),
        ("=?utf-8?Q?with spaces inside?=", "with spaces inside"),
        ("=?utf-8*en?Q?lang=C3=BC?=", "langü"),
    ],
)
def test_rfc2047_decoding(raw: str, expected: str) -> None:
    assert decode_header(raw) == expected


def test_raw_8bit_headers() -> None:
    utf8 = b"From: J\xc3\xb6rg <j@example.de>\nSubject: Gr\xc3\xbc\xc3\x9fe\n\nx"
    assert parse(utf8).subject == "Grüße"
    assert parse(utf8).sender.name == "Jörg"
    latin = b"From: a@example.de\nSubject: Gr\xfc\xdfe\nContent-Type: text/plain; charset=iso-8859-1\n\nx"
    assert parse(latin).subject == "Grüße"


def test_sender_falls_back_to_sender_reply_to_return_path() -> None:
    assert parse(mail("Sender: S <s@example.com>\nSubject: x")).sender.address == "s@example.com"
    assert parse(mail("Reply-To: r@example.com\nSubject: x")).sender.address == "r@example.com"
    assert parse(mail("Return-Path: <rp@example.com>\nSubject: x")).sender.address == "rp@example.com"
    assert parse(mail('From: "Nobody" <>\nReply-To: <real@example.com>')).sender.address == "real@example.com"


MULTI = """\
From: a@example.com
Subject: multi
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"
"""


def multipart(*parts: str, boundary: str = "XX", close: bool = True) -> str:
    body = "".join(f"--{boundary}\n{p.strip(chr(10))}\n" for p in parts)
    return body + (f"--{boundary}--\n" if close else "")


def test_plain_body_preferred_over_html_and_html_sanitised() -> None:
    alt = multipart(
        "Content-Type: text/plain; charset=utf-8\n\nPlain text body",
        'Content-Type: text/html; charset=utf-8\n\n<p onclick="evil()">HTML <b>body</b>'
        '<script>alert(1)</script><img src="cid:logo@x"></p>',
        boundary="ALT",
    )
    raw = mail(MULTI.replace('multipart/mixed; boundary="XX"', 'multipart/alternative; boundary="ALT"'), alt)
    email = parse(raw)
    assert email.text_body.strip() == "Plain text body"
    assert email.html_body is not None
    assert "<b>body</b>" in email.html_body
    assert "script" not in email.html_body and "alert" not in email.html_body
    assert "onclick" not in email.html_body
    assert 'src="cid:logo@x"' in email.html_body


def test_html_only_converted_to_readable_text() -> None:
    html = (
        "<html><head><style>p {color: red}</style><title>T</title></head><body>"
        "<p>Hello <b>World</b>, see <a href='https://example.com/x'>the page</a>.</p>"
        "<ul><li>1. one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    email = parse(mail("From: a@b.c\nContent-Type: text/html; charset=utf-8", html))
    text = email.text_body
    assert "Hello World, see the page." in text
    assert "https://example.com" not in text  # no link clutter
    assert "color" not in text and "**" not in text and "\\." not in text
    assert "a b" in text
    assert "one" in text and "two" in text


def test_html_that_sanitises_to_nothing_has_no_text() -> None:
    """Only a head (title, style): the sanitiser leaves nothing, and the text must not bring the title back."""
    html = "<html><head><title>Secret title</title><style>p {}</style></head></html>"
    email = parse(mail("From: a@b.c\nContent-Type: text/html; charset=utf-8", html))
    assert email.html_body == ""
    assert "Secret" not in email.text_body


def test_attachments_inline_cid_and_parts_without_disposition() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    body = multipart(
        "Content-Type: text/plain\n\nSee attached",
        f"Content-Type: image/png\nContent-Transfer-Encoding: base64\nContent-ID: <logo@x>\n"
        f"Content-Disposition: inline\n\n{png}",
        f"Content-Type: image/png\nContent-Transfer-Encoding: base64\n\n{png}",
        'Content-Type: application/pdf; name="../../etc/pass\\x.pdf"\n'
        "Content-Transfer-Encoding: base64\n\nJVBERg==",
        "Content-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="a\x01b.bin"\n\nzz',
    )
    email = parse(mail(MULTI, body))
    assert email.text_body.strip() == "See attached"
    names = [a.filename for a in email.attachments]
    assert len(email.attachments) == 4
    inline = email.attachments[0]
    assert inline.content_id == "logo@x" and inline.inline and inline.data.startswith(b"\x89PNG")
    # the inline logo took "image.png", so the second unnamed image is numbered
    assert names[1] == "image (2).png" and not email.attachments[1].inline
    assert "/" not in names[2] and "\\" not in names[2] and names[2].endswith(".pdf")
    assert email.attachments[2].data == b"%PDF"
    assert "\x01" not in names[3]


def test_rfc2231_filename() -> None:
    body = multipart(
        "Content-Type: text/plain\n\nbody",
        "Content-Type: application/octet-stream\nContent-Disposition: attachment;\n"
        " filename*0*=utf-8''%C3%A4rger%20;\n filename*1*=%C3%BCber.txt\n\ndata",
        "Content-Type: application/octet-stream\nContent-Disposition: attachment;"
        ' filename="=?utf-8?B?w6QucGRm?="\n\ndata',
    )
    names = [a.filename for a in parse(mail(MULTI, body)).attachments]
    assert names == ["ärger über.txt", "ä.pdf"]


def test_forwarded_message_kept_as_one_eml() -> None:
    inner = "From: x@example.com\nSubject: Original question\n\nInner body\n"
    body = multipart("Content-Type: text/plain\n\nFYI", f"Content-Type: message/rfc822\n\n{inner}")
    email = parse(mail(MULTI, body))
    assert email.text_body.strip() == "FYI"
    assert "Inner body" not in email.text_body
    assert [a.filename for a in email.attachments] == ["Original question.eml"]
    assert email.attachments[0].content_type == "message/rfc822"
    assert b"Subject: Original question" in email.attachments[0].data
    assert b"Inner body" in email.attachments[0].data
    no_subject = multipart("Content-Type: text/plain\n\nFYI",
                           "Content-Type: message/rfc822\n\nFrom: x@y.z\n\nhi\n")
    assert [a.filename for a in parse(mail(MULTI, no_subject)).attachments] == ["forwarded.eml"]


def test_forwarded_message_is_kept_byte_for_byte() -> None:
    """The enclosed email is stored as it came (line endings, folding, nested parts), not rebuilt."""
    inner = (
        "From:x@example.com\nSubject: Nested\n  and folded\nContent-Type: multipart/mixed; boundary=in\n\n"
        "--in\nContent-Type: text/plain\n\nInner body\n--in\nContent-Type: message/rfc822\n\n"
        "Subject: deeper\n\nDeepest\n--in--\n"
    )
    body = multipart("Content-Type: text/plain\n\nFYI", f"Content-Type: message/rfc822\n\n{inner}")
    email = parse(mail(MULTI, body, eol=b"\r\n"))
    assert [a.filename for a in email.attachments] == ["Nested and folded.eml"]
    # the line ending before the next delimiter line belongs to the delimiter (RFC 2046)
    assert email.attachments[0].data == inner.rstrip("\n").encode().replace(b"\n", b"\r\n")
    encoded = base64.b64encode(inner.encode()).decode()  # not allowed by RFC 2046, sent all the same
    body = multipart("Content-Type: text/plain\n\nFYI",
                     f"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n{encoded}")
    email = parse(mail(MULTI, body))
    assert [(a.filename, a.data) for a in email.attachments] == [("Nested and folded.eml", inner.encode())]


def test_a_digest_email_read_by_the_standard_library_keeps_its_header_block() -> None:
    """A bare CR sends the whole email to the standard library; a digest's part has no header block of its own,
    so the enclosed email's own must not be taken for it and cut."""
    digest = multipart(
        "\nhello\rsecond line",
        'Content-Type: multipart/digest; boundary="d"\n\n--d\n\nFrom: b@x\nSubject: inner one\n\ninner body\n--d--',
        boundary="o",
    )
    email = parse(mail(MULTI.replace('"XX"', '"o"'), digest))
    assert [(a.filename, a.data) for a in email.attachments] == [
        ("inner one.eml", b"From: b@x\nSubject: inner one\n\ninner body")
    ]


def test_tolerant_base64_and_quoted_printable() -> None:
    good = base64.b64encode("Grüße aus Köln".encode()).decode()
    broken = good.rstrip("=") + "\n!!garbage!!"
    email = parse(mail("From: a@b.c\nContent-Type: text/plain; charset=utf-8\n"
                       "Content-Transfer-Encoding: base64", broken))
    assert "Grüße aus Köln" in email.text_body
    qp = parse(mail("From: a@b.c\nContent-Type: text/plain; charset=utf-8\n"
                    "Content-Transfer-Encoding: quoted-printable", "Gr=C3=BC=C3=9Fe =\nzusammen =ZZ"))
    assert qp.text_body.startswith("Grüße zusammen")


@pytest.mark.parametrize(
    ("charset", "data", "expected"),
    [
        ("iso-8859-1", "“smart” – quotes".encode("cp1252"), "“smart” – quotes"),
        ("ks_c_5601-1987", "한국어".encode("cp949"), "한국어"),
        ("gb2312", "中文".encode("gb18030"), "中文"),
        ("utf8", "ü".encode(), "ü"),
        ("unknown-8bit", "Grüße".encode(), "Grüße"),
        ("us-ascii", "Grüße".encode(), "Grüße"),
        ("iso-8859-1", "Grüße".encode(), "Grüße"),  # mislabelled UTF-8
        ("x-nonsense", "Grüße".encode("cp1252"), None),
    ],
)
def test_charset_aliases_and_fallbacks(charset: str, data: bytes, expected: str | None) -> None:
    text, _ = decode_bytes(data, charset)
    if expected is None:
        assert text  # something readable, never an exception
    else:
        assert text == expected


def test_codec_aliases() -> None:
    assert codec_for("ks_c_5601-1987") == "cp949"
    assert codec_for('"GB2312"') == "gb18030"
    assert codec_for("iso-2022-jp") == "iso2022_jp_ext"
    assert codec_for("unknown-8bit") is None
    assert codec_for("windows-1251") == "cp1251"


def test_undeclared_8bit_body_is_detected_not_dropped() -> None:
    text = "Привет, это тестовое сообщение на русском языке, достаточно длинное для определения."
    email = parse(b"From: a@b.c\nSubject: x\n\n" + text.encode("cp1251"))
    assert email.text_body.strip() == text


def test_winmail_dat_that_is_not_tnef_is_kept_with_a_defect() -> None:
    body = multipart(
        "Content-Type: text/plain\n\nbody",
        "Content-Type: application/ms-tnef; name=winmail.dat\n"
        "Content-Transfer-Encoding: base64\n\nbm90IHRuZWY=",
    )
    email = parse(mail(MULTI, body))
    assert [a.filename for a in email.attachments] == ["winmail.dat"]
    assert any("winmail.dat" in d for d in email.defects)


def test_tnef_unpacked_from_corpus() -> None:
    corpus = corpus_or_skip()
    path = corpus / "mimekit" / "tnef" / "rich-text.eml"
    if not path.exists():
        pytest.skip("TNEF sample not in corpus")
    email = parse(path.read_bytes())
    names = [a.filename for a in email.attachments]
    assert "kitten-playing-with-a-christmas-tree.jpg" in names  # unpacked from the TNEF blob
    # its body is compressed RTF only, which we cannot render: the blob is kept so nothing is lost
    assert "winmail.dat" in names
    assert any("RTF only" in d for d in email.defects)


ICS = """\
BEGIN:VCALENDAR
VERSION:2.0
METHOD:REQUEST
PRODID:-//test//EN
BEGIN:VEVENT
UID:1@example.com
SUMMARY:Quarterly review
DTSTART:20240305T140000Z
DTEND:20240305T150000Z
LOCATION:Room 4
ORGANIZER;CN=Boss:mailto:boss@example.com
END:VEVENT
END:VCALENDAR
"""


def test_calendar_invite_summarised_and_kept() -> None:
    body = multipart("Content-Type: text/plain\n\nPlease join",
                     f"Content-Type: text/calendar; method=REQUEST\n\n{ICS}")
    email = parse(mail(MULTI + "X-Auto-Response-Suppress: All\n", body))
    assert "Please join" in email.text_body
    for needle in ("REQUEST", "Quarterly review", "2024-03-05 14:00", "Room 4", "boss@example.com"):
        assert needle in email.text_body
    assert [a.filename for a in email.attachments] == ["invite.ics"]
    assert email.auto_reply is None  # X-Auto-Response-Suppress on a meeting request is not an auto-reply


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted"),
        ("X-Autoreply: yes", "x-autoreply"),
        ("X-Autorespond: yes", "x-autorespond"),
        ("Precedence: bulk", "Precedence"),
        ("Precedence: list", "Precedence"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress"),
        ("X-MS-Exchange-Inbox-Rules-Loop: a@b.c", "Inbox-Rules-Loop"),
        ("X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent", "Generated-Message-Source"),
    ],
)
def test_auto_reply_headers(extra: str, reason: str) -> None:
    email = parse(mail(f"From: a@example.com\nSubject: hello\n{extra}"))
    assert email.auto_reply is not None and reason in email.auto_reply
    assert email.bounce is None


@pytest.mark.parametrize(
    "subject",
    ["Out of Office: hello", "Automatic reply: hello", "Abwesenheitsnotiz: hi", "Autosvar: hej",
     "Réponse automatique : x", "AUTO: Jane is out of the office"],
)
def test_auto_reply_subjects(subject: str) -> None:
    assert parse(mail(f"From: a@example.com\nSubject: {subject}")).auto_reply


def test_ordinary_mail_is_not_flagged() -> None:
    email = parse(mail("From: a@example.com\nSubject: Re: out of paper\nAuto-Submitted: no"))
    assert email.auto_reply is None and email.bounce is None


def test_bounces() -> None:
    report = multipart(
        "Content-Type: text/plain\n\nDelivery failed",
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n"
        "Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n",
        "Content-Type: message/rfc822\n\nFrom: a@example.com\nSubject: hi\nMessage-ID: <sent-2@example.com>\n"
        "In-Reply-To: <in-1@example.org>\nReferences: <root@example.org>\n <in-1@example.org>\n\nbody\n",
        "Content-Type: text/rfc822-headers\n\nFrom: a@example.com\nMessage-ID: <sent-3@example.com>\n",
    )
    dsn = parse(mail(MULTI.replace("multipart/mixed", "multipart/report; report-type=delivery-status")
                     + "Auto-Submitted: auto-replied\n", report))
    assert dsn.bounce and dsn.auto_reply is None  # a bounce wins over an auto-reply
    assert "delivery-status.txt" in [a.filename for a in dsn.attachments]
    # the ids of the returned email, read off its attached copy (or headers) for threading the bounce
    assert dsn.returned_ids == ("sent-2@example.com", "in-1@example.org", "root@example.org", "sent-3@example.com")
    forwarded = multipart("Content-Type: text/plain\n\nsee below",
                          "Content-Type: message/rfc822\n\nFrom: b@example.com\nMessage-ID: <fw@x>\n\nhi\n")
    assert parse(mail(MULTI, forwarded)).returned_ids == ()  # a forward, not a bounce: nothing to look up
    null_path = parse(mail("Return-Path: <>\nFrom: MAILER-DAEMON@example.com\nSubject: Returned mail"))
    assert null_path.bounce
    by_subject = parse(mail("From: postmaster@example.com\nSubject: Undeliverable: hello"))
    assert by_subject.bounce
    person = parse(mail("From: a@example.com\nSubject: Undeliverable parcels in our warehouse"))
    assert person.bounce is None


def test_fingerprint_ignores_transport_headers_but_not_content() -> None:
    body = "Same body\r\n"
    one = mail("Received: from a by b\nDelivered-To: one@example.com\nX-Spam: 1\n" + BASIC, body)
    two = mail("Received: from c by d\nReceived: from e\nDelivered-To: two@example.com\n" + BASIC, body,
               eol=b"\r\n")
    assert parse(one).fingerprint == parse(two).fingerprint
    other = mail(BASIC, "A different email that reuses the Message-ID\n")
    assert parse(other).fingerprint != parse(one).fingerprint
    assert len(parse(one).fingerprint) == 64


def test_input_oddities() -> None:
    plain = mail(BASIC)
    for variant in (
        b"\xef\xbb\xbf" + plain,
        b"\n\n  \n" + plain,
        b"From jane@example.com Tue Jan  2 10:30:00 2024\n" + plain,
        plain.replace(b"\n", b"\r"),
        plain.replace(b"\n", b"\r\n").replace(b"Subject", b"\nSubject", 0),
    ):
        email = parse(variant)
        assert email.subject == "Printer on fire", variant[:40]
        assert email.text_body.strip() == "Hello"


def test_null_bytes_and_garbage_never_raise() -> None:
    for raw in (b"", b"\x00" * 100, b"From: a@b.c\x00\nSubject: x\x00y\n\nbo\x00dy", bytes(range(256)) * 10,
                b"Content-Type: multipart/mixed; boundary=\n\n--\n--"):
        email = parse(raw)
        assert isinstance(email, ParsedEmail)
    nul = parse(b"From: a@b.c\nSubject: x\x00y\n\nbo\x00dy")
    assert "\x00" not in nul.subject and "\x00" not in nul.text_body


def test_missing_final_and_missing_boundary() -> None:
    email = parse(mail(MULTI, multipart("Content-Type: text/plain\n\nfirst part", close=False)))
    assert "first part" in email.text_body
    no_param = MULTI.replace('; boundary="XX"', "")
    email = parse(mail(no_param, multipart("Content-Type: text/plain\n\nrecovered text",
                                           "Content-Type: image/gif\n\nGIF89a")))
    assert "recovered text" in email.text_body
    assert [a.content_type for a in email.attachments] == ["image/gif"]
    assert any("boundary" in d for d in email.defects)


def test_nesting_bomb_is_cut_with_a_defect() -> None:
    depth = 120
    parts = [f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)]
    inner = "Content-Type: text/plain\n\ndeep\n"
    closing = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    raw = ("From: a@b.c\nSubject: bomb\nMIME-Version: 1.0\n" + "".join(parts) + inner + closing).encode()
    email = parse(raw)
    assert email.subject == "bomb"
    assert any("cut" in d for d in email.defects)


def test_many_parts_are_cut_with_a_defect() -> None:
    body = multipart(*["Content-Type: application/octet-stream\n\nx"] * 2100)
    email = parse(mail(MULTI, body))
    assert len(email.attachments) < 2000
    assert any("cut" in d for d in email.defects)


def test_outlook_msg_is_not_mime() -> None:
    raw = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600
    email = parse(raw)
    assert any("not a MIME message" in d for d in email.defects)
    assert email.attachments[0].data == raw


def test_attachment_names_are_unique_within_an_email() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["Subject"] = "two videos"
    msg.set_content("see attached")
    for data in (b"one", b"two", b"three"):
        msg.add_attachment(data, maintype="video", subtype="quicktime", filename="video.mov")
    msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename="README")
    msg.add_attachment(b"y", maintype="application", subtype="octet-stream", filename="readme")
    names = [a.filename for a in parse(msg.as_bytes()).attachments]
    assert names == ["video.mov", "video (2).mov", "video (3).mov", "README", "readme (2)"]


PLAIN_LISTS = [
    "a@example.com", "A B <a@example.com>, c@example.org", "<a@example.com>", "a@example.com,",
    "  Joe  Q.  Public   <j.q@example.org> ,b@example.com", "=?utf-8?Q?M=C3=BCller?= <m@example.com>",
    "Name<a@example.com>", "a..b@example.com", '"Doe, John" <j@example.com>', '"Refinance"<f@example.com>',
    '"  spaced  name " <a@example.com>, "B" <b@example.com>', '"" <a@example.com>', ' "x (y)"  <a@example.com> ',
    '"=?utf-8?Q?M=C3=BCller?=" <m@example.com>',
]
NOT_PLAIN = [
    "a@example.com (Comment)", "Team: a@example.com, b@example.com;", '"a\\"b" <a@example.com>',
    '"John" Doe <a@example.com>', '"Name" a@example.com', '"unclosed <a@example.com>',
    "N <@route:a@example.com>", "N <a@[192.0.2.1]>", "a@example.com b@example.com", "a@example.com,,b@example.com",
    "Ünïcode <u@example.com>", "N <a@example.com> trailing", "info@example.com <info@example.com>",
]


@pytest.mark.parametrize("value", PLAIN_LISTS + NOT_PLAIN)
def test_plain_address_lists_read_as_the_standard_library_reads_them(value: str) -> None:
    from email.utils import getaddresses

    from halo_integrator.mail.headers import _plain_pairs

    pairs = _plain_pairs(value)
    assert (pairs is not None) == (value in PLAIN_LISTS)
    if pairs is not None:
        assert pairs == [p for p in getaddresses([value]) if p != ("", "")]


def test_plain_address_reading_agrees_with_the_standard_library_on_the_corpus() -> None:
    import re
    from email.utils import getaddresses

    from halo_integrator.mail.headers import _plain_pairs, unfold

    header = re.compile(r"^(?:from|to|cc|reply-to|sender):(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
    read = 0
    for path in corpus_files():
        text = path.read_bytes()[:65536].decode("ascii", "surrogateescape")
        for found in header.finditer(text.split("\n\n", 1)[0]):
            value = unfold(found.group(1))
            pairs = _plain_pairs(value)
            if pairs is not None:
                read += 1
                assert pairs == [p for p in getaddresses([value]) if p != ("", "")], value
    assert read > 1000


def _word_by_word(value: str, hint: str | None = None) -> str:
    """decode_header without its shortcut for a run of "Q" words: every word read on its own."""
    from halo_integrator.mail import headers

    text = headers._decode_words(headers.unfold(value), hint)
    if not text.isprintable():
        text = headers._CONTROL.sub("", text.replace("\t", " ").replace("\r", " ").replace("\n", " "))
    return text.strip()


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?Die_hei=C3=9Fe_Zypernsonne_qu=C3=A4lte_Max_und_Victori?=\n =?utf-8?q?a_ja_b=C3=B6se?=",
        "=?utf-8?Q?caf=C3?= =?utf-8?Q?=A9?=",  # a character split between two words
        "=?utf-8?Q?caf=C?= =?utf-8?Q?3=A9?=",  # an escape split between two words: read word by word
        "=?utf-8?Q?a=?= =?utf-8?Q?3Db?=",
        "=?utf-8?Q?a==?= =?utf-8?Q?b?=",
        "=?utf-8?Q?a?= =?UTF-8?Q?b?=",  # the charset written two ways
        "=?iso-8859-1?Q?gr=FC?=\t=?iso-8859-1?Q?=DFe?=",
        "=?utf-8?Q?a?= x =?utf-8?Q?b?=",  # text between the words
        "=?utf-8?Q?a?= =?utf-8?B?Yg==?=",
        "=?bogus?Q?caf=E9?= =?bogus?Q?_x?=",
        "=?utf-8*en?Q?a=0Ab?= =?utf-8*en?Q?c?=",
        "=?q?q?=41?= =?q?q?b?=",  # a charset named like the encoding
        "=?Q?Q?=41?= =?Q?Q?=42?=",
        "=?a.b?Q?=C3?= =?axb?Q?=A9?=",  # two charsets a pattern without escaping would take for one
    ],
)
def test_a_run_of_q_words_decoded_at_once_reads_as_word_by_word(value: str) -> None:
    for hint in (None, "windows-1252"):
        assert decode_header(value, hint) == _word_by_word(value, hint)


def test_a_run_of_q_words_is_decoded_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortcut is taken: the word-by-word reading is not needed for a plain run."""
    from halo_integrator.mail import headers

    def unused(value: str, hint: str | None) -> str:
        raise AssertionError(f"read word by word: {value!r}")

    monkeypatch.setattr(headers, "_decode_words", unused)
    folded = "\n ".join(f"=?utf-8?q?Zypernsonne_qu=C3=A4lte_{n}_?=" for n in range(200))
    assert headers.decode_header(folded).startswith("Zypernsonne quälte 0 Zypernsonne quälte 1 ")


def test_q_word_runs_agree_with_word_by_word_decoding_on_generated_values() -> None:
    import random

    from halo_integrator.mail.headers import _one_q_run, unfold

    rnd = random.Random(2047)
    pieces = ["a", "_", "=", "=C3", "=A9", "=3D", "==", "=Z", "=c3", " ", "é", "\udce9", "?", "=4", ":", "=0A", "\t"]
    charsets = ["utf-8", "UTF-8", "iso-8859-1", "utf-8*en", "bogus", "q", "Q", "a.b", "axb"]
    joined = 0
    for _ in range(20_000):
        charset = rnd.choice(charsets)
        words = []
        for _ in range(rnd.randint(1, 6)):
            word_charset = charset if rnd.random() < 0.9 else rnd.choice(charsets)
            encoding = "Q" if rnd.random() < 0.8 else rnd.choice("qB")
            text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 6)))
            words.append(f"=?{word_charset}?{encoding}?{text}?=")
        value = "".join(rnd.choice([" ", "\n ", "\r\n\t", "", " x "]) + word for word in words)
        joined += _one_q_run(unfold(value)) is not None
        assert decode_header(value) == _word_by_word(value), value
    assert joined > 500  # the shortcut was tried, not only the word-by-word reading


def test_q_word_runs_agree_with_word_by_word_decoding_on_the_corpus() -> None:
    import re

    header = re.compile(r"^[!-9;-~]+:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
    seen = 0
    for path in corpus_files():
        text = path.read_bytes().decode("ascii", "surrogateescape")
        for found in header.finditer(re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]):
            value = found.group(1).strip()
            if "=?" in value:
                seen += 1
                assert decode_header(value) == _word_by_word(value), (path.name, value[:200])
    assert seen > 100


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("=?utf-8?Q?caf=C3=A9_au_lait?=", "café au lait"),
        ("=?iso-8859-1?q?gr=fc=dfe?=", "grüße"),  # lower-case hex
        ("=?utf-8?Q?a=3D=3Db?=", "a==b"),
        ("=?utf-8?Q?a==3Db?=", "a==b"),  # a stray "=" before a hex pair is kept
        ("=?utf-8?Q?bad=ZZhex?=", "bad=ZZhex"),
        ("=?utf-8?Q?ends_with=?=", "ends with="),
    ],
)
def test_q_encoded_words(encoded: str, decoded: str) -> None:
    assert decode_header(encoded) == decoded


def test_an_enclosed_emails_header_block_reads_as_the_standard_librarys_header_parser_reads_it() -> None:
    """The header block of an enclosed email (its file name, a bounce's returned ids) is read by the MIME
    splitter; on every corpus email, taken as an enclosed one, the fields equal BytesHeaderParser's."""
    import re
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from halo_integrator.mail.parse import _clean_input, _header_block

    odd = [  # a stray line, a fold first, an envelope line, no name, a bare CR, 8-bit, CRLF, a fold at the end
        b"Subject: a\nstray line\nMessage-ID: <x@y>\n\nbody", b" folded\nSubject: a\n\nb",
        b"From someone Mon Jan  1 00:00:00 2001\nSubject: a\n\nb", b": no name\nSubject: a\n\nb",
        b"Subject: a\rb\nMessage-ID: <x@y>\n\nb", "Subject: Grüße\n\nb".encode(),
        b"Subject: a\r\n b\r\nReferences: <1@x>\r\n\t<2@x>\r\n\r\nb", b"Subject: a\n \n\nb",
        # parameters that cannot be read (a charset the stdlib's RFC 2231 decoding raises on), or only slowly
        # (an unclosed quote before many ";"): the fields are read, nothing is made of them
        b"Subject: s\nContent-Type: multipart/mixed; boundary*=idna''abc\n\nbody",
        b'Subject: s\nContent-Type: multipart/mixed; boundary=q; x="' + b";" * 20000 + b"\n\nbody",
        # no blank line at all: the fields up to the first line that is no field
        b"Subject: a\nMessage-ID: <x@y>\nnot a field\nmore", b"Subject: a\r\nReferences: <1@x>",
    ]
    compared = 0
    for name, data in [*((data, data) for data in odd), *((path.name, path.read_bytes()) for path in corpus_files())]:
        cleaned, _ = _clean_input(data)
        end = re.search(rb"\r?\n\r?\n", cleaned)
        expected = BytesHeaderParser(policy=compat32).parsebytes(cleaned if end is None else cleaned[: end.start()])
        read = _header_block(data)
        assert read is not None, name
        assert read._headers == expected._headers, name  # type: ignore[attr-defined]
        compared += 1
    assert compared > 700


def test_a_prepared_email_pickles_back_to_the_same_values() -> None:
    """What a parse worker returns crosses to the importer pickled (as each class and its field values)."""
    from halo_integrator.prepare import Prepared, prepare

    raw = (EXAMPLES / "mail" / "05-attachment.eml").read_bytes()
    prepared = prepare(raw)
    assert prepared.email.attachments and prepared.email.to
    back = pickle.loads(pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is Prepared and back == prepared
    # compared apart: the hash is left out of an attachment's equality
    assert [a.sha256 for a in back.email.attachments] == [a.sha256 for a in prepared.email.attachments]


def test_a_picklable_dataclass_needs_an_init_that_takes_its_fields_by_position() -> None:
    """Each would pickle and then fail to unpickle, or unpickle wrong: refused at pickling instead."""

    @dataclass(frozen=True, slots=True)
    class Counted(Picklable):
        name: str
        count: int = field(default=0, init=False)

    @dataclass(frozen=True, slots=True)
    class Named(Picklable):
        name: str
        label: str = field(default="", kw_only=True)

    @dataclass(frozen=True)
    class Scaled(Picklable):
        name: str
        scale: InitVar[int] = 1

    for value in (Counted("x"), Named("x", label="y"), Scaled("x", 2)):
        with pytest.raises(TypeError, match="does not take exactly its fields, by position"):
            pickle.dumps(value)
