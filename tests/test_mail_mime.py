"""The fast MIME splitter builds exactly the tree the standard library's compat32 parser builds."""

from __future__ import annotations

from email import errors
from email.message import Message
from email.parser import BytesParser, Parser
from email.policy import compat32

import pytest

from halo_integrator.mail.mime import message_from_bytes
from helpers import corpus_messages


def same_tree(a: Message, b: Message, where: str = "", *, unopened: bool = False) -> str | None:
    """Where two compat32 trees differ, or None. With ``unopened``, ``a`` was split with
    ``open_enclosed=False``: an enclosed email in it, kept as text, must read as the one ``b`` holds parsed."""
    for attr in ("_headers", "preamble", "epilogue", "_unixfrom"):
        if getattr(a, attr) != getattr(b, attr):
            return f"{where or 'top'}: {attr} {getattr(a, attr)!r:.120} != {getattr(b, attr)!r:.120}"
    if a.get_default_type() != b.get_default_type():
        return f"{where}: default type"
    if [type(d) for d in a.defects] != [type(d) for d in b.defects]:
        return f"{where}: defects {a.defects} != {b.defects}"
    pa, pb = a._payload, b._payload  # type: ignore[attr-defined]
    if unopened and isinstance(pa, str) and isinstance(pb, list) and a.get_content_maintype() == "message":
        if len(pb) != 1:
            return f"{where}: an unopened enclosed email where the standard parser read {len(pb)} parts"
        alone = Parser(policy=compat32).parsestr(pa)
        return same_tree(_loose_end(alone), _loose_end(pb[0]), f"{where}/enclosed")
    if isinstance(pa, list) and isinstance(pb, list):
        if len(pa) != len(pb):
            return f"{where}: {len(pa)} parts != {len(pb)}"
        for i, (x, y) in enumerate(zip(pa, pb, strict=True)):
            diff = same_tree(x, y, f"{where}/{i}", unopened=unopened)
            if diff:
                return diff
        return None
    if pa != pb:
        return f"{where}: payload {pa!r:.120} != {pb!r:.120}"
    return None


def _loose_end(message: Message) -> Message:
    """The tree without the marks that being read alone, rather than as a part, leaves on a compat32 tree:
    the line endings that end the last part stay or go, an empty epilogue is "" where inside a part it is None,
    and a multipart body without parts gets a MultipartInvariantViolationDefect (only the top message does).
    Nothing else is touched; the message is changed in place and returned."""
    message.defects = [d for d in message.defects if not isinstance(d, errors.MultipartInvariantViolationDefect)]
    last = message
    while True:
        if last.epilogue == "":
            last.epilogue = None
        payload = last._payload  # type: ignore[attr-defined]
        if isinstance(payload, list) and payload:
            last = payload[-1]
            continue
        if isinstance(payload, str):
            last._payload = payload.rstrip("\r\n")  # type: ignore[attr-defined]
        return message


SAMPLES = {
    "plain": b"From: a@x\r\nSubject: hi\r\n\r\nbody\r\n",
    "lf": b"From: a@x\nSubject: folded\n  over two lines\n\nbody\n",
    "no-headers": b"\nonly a body\n",
    "multipart": (
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\n'
        b"one\r\n--b1\r\n\r\ntwo\r\n\r\n--b1--\r\nepilogue\r\n"
    ),
    "nested": (
        b'Content-Type: multipart/mixed; boundary="o"\n\n--o\nContent-Type: multipart/alternative; boundary="i"\n\n'
        b"--i\n\nplain\n--i\nContent-Type: text/html\n\n<b>x</b>\n--i--\n\n--o\nContent-Type: message/rfc822\n\n"
        b"Subject: inner\n\ninner body\n\n--o--"
    ),
    "digest": (
        b'Content-Type: multipart/digest; boundary="d"\n\n--d\n\nSubject: one\n\nx\n--d\n\nSubject: two\n\ny\n--d--\n'
    ),
    "missing-close": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n',
    "missing-close-crlf": (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\npreamble\r\n--b\r\n\r\none\r\n--b\r\n'
        b"Content-Type: text/html\r\n\r\n<p>cut off here"
    ),
    "missing-close-nested": (
        b'Content-Type: multipart/mixed; boundary="o"\n\n--o\nContent-Type: multipart/alternative; boundary="i"\n\n'
        b"--i\n\nplain\n--i\nContent-Type: text/html\n\n<b>x</b>\n\n--o\n\nlast\n--o--\nepilogue\n"
    ),
    "missing-close-inside-rfc822": (
        b'Content-Type: multipart/mixed; boundary="o"\n\n--o\n\nnote\n--o\nContent-Type: message/rfc822\n\n'
        b'Content-Type: multipart/mixed; boundary="i"\n\n--i\n\ninner\n\n--o--\n'
    ),
    "missing-close-ends-on-a-delimiter": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b\n',
    "no-boundary": b"Content-Type: multipart/mixed\n\n--b\n\nx\n--b--\n",
    "boundary-never-used": b'Content-Type: multipart/mixed; boundary="b"\n\n--other\n\nx\n--other--\n',
    "boundary-never-used-nested": (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\nContent-Type: multipart/related; '
        b'boundary="gone"\r\n\r\n<html>no parts here</html>\r\n\r\n--o\r\n\r\nafter\r\n--o--\r\n'
    ),
    "close-delimiter-first": b'Content-Type: multipart/mixed; boundary="b"\n\nintro\n--b--\n\nx\n',
    "continuation-first": b" bad: start\nSubject: x\n\nbody\n",
    "stray-line": b"Subject: x\nthis is not a header\n\nbody\n",
    "stray-line-no-blank-line": b"Subject: x\r\nFrom: y\r\nHello, this starts the body\r\nmore\r\n",
    "stray-line-in-a-part": (
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\nnot a header\n\nx\n'
        b"--b\nno headers at all\n--b--\n"
    ),
    "envelope-line-among-headers": b"Subject: x\nFrom someone else\nTo: y\n\nbody\n",
    "mbox-from": b"From someone Mon Jan 1 00:00:00 2024\nSubject: x\n\nbody\n",
    "bare-cr": b"Subject: x\r\rbody\r",
    "8bit-header": "Subject: Grüße\n\nbody\n".encode(),
    "headers-only": b"Subject: x\nFrom: y\n",
    "headers-only-no-line-ending": b"Subject: x\nTo: y",
    "folded-after-an-empty-first-line": b"Subject:  \r\n folded\r\n\tand again\r\nTo: x\r\n\r\nbody\r\n",
    "tab-after-the-colon": b"Subject:\t x\nX-Empty:\n\nbody\n",
    "empty-name": b"Subject: x\n: no name\n\nbody\n",
    "continuation-then-stray-line": b"A: b\n c\nnot a header\n\nbody\n",
    "continuation-without-line-ending": b"A: b\n c",
    "blanks-after-the-colon-without-line-ending": b"From: a@b\nSubject:" + b"\t" * 50_000,  # was quadratic
    "delivery-status": (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n--r\n\ntext\n'
        b"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: rfc822; y\n--r--\n"
    ),
    "delivery-status-crlf": (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n--r\r\n\r\ntext\r\n'
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; y\r\nAction: failed\r\n\r\n\r\n--r\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: original\r\n\r\nbody\r\n--r--\r\n"
    ),
    "delivery-status-alone": b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nAction: failed\n",
    "delivery-status-in-a-digest": (
        b'Content-Type: multipart/digest; boundary="d"\n\n--d\nContent-Type: message/delivery-status\n\n'
        b"Reporting-MTA: dns; x\n\nAction: failed\n--d--\n"
    ),
    "delivery-status-last-block-multipart": (
        b'Content-Type: multipart/report; boundary="r"\n\n--r\n\ntext\n--r\nContent-Type: message/delivery-status'
        b'\n\nReporting-MTA: dns; x\n\nContent-Type: multipart/mixed; boundary="q"\n--r--\n'
    ),
    "delivery-status-last-block-message": (
        b'Content-Type: multipart/report; boundary="r"\n\n--r\n\ntext\n--r\nContent-Type: message/delivery-status'
        b"\n\nReporting-MTA: dns; x\n\nContent-Type: message/rfc822\nstray\n--r--\n"
    ),
    "qp-multipart": (
        b'Content-Type: multipart/mixed; boundary="b"\nContent-Transfer-Encoding: base64\n\n--b\n\nx\n--b--\n'
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_same_tree_as_the_standard_library(name: str) -> None:
    data = SAMPLES[name]
    assert same_tree(message_from_bytes(data), BytesParser(policy=compat32).parsebytes(data)) is None


SPLIT_HERE = [
    "missing-close", "missing-close-crlf", "missing-close-nested", "missing-close-inside-rfc822",
    "boundary-never-used", "boundary-never-used-nested", "stray-line", "stray-line-no-blank-line",
    "stray-line-in-a-part", "delivery-status", "delivery-status-crlf", "delivery-status-in-a-digest",
    "delivery-status-last-block-multipart", "delivery-status-last-block-message",
]


@pytest.mark.parametrize("name", SPLIT_HERE)
def test_damaged_mime_is_split_here_not_handed_whole_to_the_standard_library(name: str) -> None:
    """These shapes are split by the fast path (the tree equality above holds either way, so without this a
    slide back to parsing the whole email twice would go unnoticed)."""
    from halo_integrator.mail import mime

    mime._part(SAMPLES[name].decode("ascii", "surrogateescape"), 0, "text/plain", True)  # raises _Fallback if not


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_unopened_enclosed_email_is_the_text_the_standard_library_reads(name: str) -> None:
    data = SAMPLES[name]
    unopened = message_from_bytes(data, open_enclosed=False)
    assert same_tree(unopened, BytesParser(policy=compat32).parsebytes(data), unopened=True) is None


def test_enclosed_emails_are_left_unread_only_when_asked() -> None:
    data = SAMPLES["nested"]
    opened, unopened = message_from_bytes(data), message_from_bytes(data, open_enclosed=False)
    assert isinstance(opened.get_payload(1).get_payload(), list)
    assert unopened.get_payload(1).get_payload() == "Subject: inner\n\ninner body\n"
    partial = b'Content-Type: message/partial; id="x"; number=1\n\nSubject: part one\n\nbody\n'
    assert isinstance(message_from_bytes(partial, open_enclosed=False).get_payload(), list)  # still walked


@pytest.mark.parametrize("open_enclosed", [True, False], ids=["opened", "unopened"])
def test_same_tree_on_the_whole_corpus(open_enclosed: bool) -> None:
    differences = []
    for path, data in corpus_messages():
        ours = message_from_bytes(data, open_enclosed=open_enclosed)
        diff = same_tree(ours, BytesParser(policy=compat32).parsebytes(data), unopened=not open_enclosed)
        if diff:
            differences.append(f"{path}: {diff}")
    assert differences == [], "\n".join(differences[:20])


def test_header_lookup_follows_every_change_to_the_headers() -> None:
    """ParsedMessage finds headers through an index; each way of changing headers must show, as on a Message."""
    from halo_integrator.mail.mime import ParsedMessage

    data = SAMPLES["multipart"]
    ours, theirs = message_from_bytes(data), BytesParser(policy=compat32).parsebytes(data)
    assert isinstance(ours, ParsedMessage)
    changes = [
        lambda m: m.__setitem__("X-New", "one"),
        lambda m: m.add_header("X-New", "two", flag="yes"),
        lambda m: m.replace_header("Content-Type", 'multipart/mixed; boundary="b2"'),
        lambda m: m.set_param("charset", "utf-8"),
        lambda m: m.set_boundary("b3"),
        lambda m: m.set_type("multipart/alternative"),
        lambda m: m.del_param("charset"),
        lambda m: m.__delitem__("X-New"),
        lambda m: m.set_raw("x-new", "raw"),
    ]
    names = ["content-type", "X-NEW", "missing", "From"]
    for change in changes:
        for message in (ours, theirs):
            change(message)
        assert [ours.get(n) for n in names] == [theirs.get(n) for n in names]
        assert [n in ours for n in names] == [n in theirs for n in names]
        assert (ours.get_content_type(), ours.get_boundary()) == (theirs.get_content_type(), theirs.get_boundary())
        assert ours.get_params() == theirs.get_params()
        for header in ("content-type", "x-new"):
            for param in ("charset", "BOUNDARY", "flag", "missing"):
                for unquote in (True, False):
                    asked = {"header": header, "unquote": unquote}
                    assert ours.get_param(param, "none", **asked) == theirs.get_param(param, "none", **asked)
    eight_bit = "Subject: Grüße\n\nbody\n".encode()  # compat32 hands an 8-bit value back as a Header
    expected = BytesParser(policy=compat32).parsebytes(eight_bit)["subject"]
    assert type(message_from_bytes(eight_bit)["subject"]) is type(expected)
    assert str(message_from_bytes(eight_bit)["subject"]) == str(expected)


PARAMETER_VALUES = [
    "text/plain; charset=utf-8", "text/plain;", ' text/plain ; charset = "UTF-8" ; format=flowed',
    'multipart/mixed; boundary="----=_Part_1"', "a; b", "a;=b", "=x", "a; N=<v>", 'a; n="<v>"', "a;;b=c",
    'A/B; NAME="x y"', 'text/plain; charset="us-ascii"; name=""', 'x; a="b"c"d"', "x; a=b=c", "", ";", '"',
    'a; b="', "İ=x; İ=y", 'attachment; filename="a;b.txt"', 'a; b="c\\"d"', "a; name*=utf-8''%C3%A9",
    "a; name*0=x; name*1=y", "text/plain;\xa0charset=utf-8\x1c", "text/plain; charset=x; CHARSET=y",
]


def _stdlib_params(value: str) -> list[tuple[str, object]]:
    class Holder:
        def get(self, name: str, failobj: object = None) -> str:
            return value

    return Message._get_params_preserve(Holder(), None, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", PARAMETER_VALUES)
def test_parameters_read_as_the_standard_library_reads_them(value: str) -> None:
    from halo_integrator.mail.mime import _plain_params

    read = _plain_params(value)
    assert read is None or read == _stdlib_params(value)
    left_to_the_stdlib = {  # a quoted ";", an unclosed quote, a backslash, RFC 2231
        'attachment; filename="a;b.txt"', 'a; b="', '"', 'a; b="c\\"d"', "a; name*=utf-8''%C3%A9",
        "a; name*0=x; name*1=y",
    }
    assert (read is None) == (value in left_to_the_stdlib)


def test_parameters_agree_with_the_standard_library_on_generated_values() -> None:
    import random

    from halo_integrator.mail.mime import _plain_params

    rnd = random.Random(2231)
    pieces = ["a", "B", " ", "\t", ";", "=", '"', "<", ">", "é", "\udce9", "charset", "name", "/", "(", "'", "%",
              "\\", "*", "İ", "\n"]
    read = 0
    for _ in range(60_000):
        value = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 16)))
        ours = _plain_params(value)
        if ours is not None:
            read += 1
            assert ours == _stdlib_params(value), value
    assert read > 20_000  # the quick reading is taken for most values, not only the stdlib's


def test_parameters_agree_with_the_standard_library_on_the_corpus() -> None:
    compared = 0
    for path, data in corpus_messages():
        ours, theirs = message_from_bytes(data), BytesParser(policy=compat32).parsebytes(data)
        for mine, stdlib in zip(ours.walk(), theirs.walk(), strict=False):
            for header in ("content-type", "content-disposition"):
                assert mine.get_params(header=header) == stdlib.get_params(header=header), path
                for param in ("charset", "boundary", "name", "filename"):
                    assert mine.get_param(param, header=header) == stdlib.get_param(param, header=header), path
                compared += 1
    assert compared > 2000


def test_a_parameter_named_twice_answers_with_the_first_as_the_standard_library_does() -> None:
    data = b"Content-Type: text/plain; charset=x; CHARSET=y; name=a; name=b\n\nbody\n"
    ours, theirs = message_from_bytes(data), BytesParser(policy=compat32).parsebytes(data)
    assert [ours.get_param(p) for p in ("charset", "name")] == [theirs.get_param(p) for p in ("charset", "name")]


def test_lookups_stay_true_through_a_shallow_copy_another_policy_and_a_header_changed_in_place() -> None:
    import copy
    from email import policy
    from email.header import Header

    data = b"Subject: old\nContent-Type: text/plain; charset=utf-8\n\nbody\n"
    message = message_from_bytes(data)
    message.get_content_type(), message.get_param("charset"), message.get("subject")  # fill the caches
    other = copy.copy(message)
    other.replace_header("Subject", "new")
    other.replace_header("Content-Type", "text/html; charset=latin-1")
    assert (other["subject"], other.get_content_type(), other.get_param("charset")) == ("new", "text/html", "latin-1")
    own = dict((k.lower(), v) for k, v in message._headers)  # type: ignore[attr-defined]
    assert message["subject"] == own["subject"]
    assert message.get_content_type() == own["content-type"].split(";")[0]

    folded = b"Content-Type: multipart/\n mixed; boundary=x\n\n--x\n\nq\n--x--\n"
    ours, theirs = message_from_bytes(folded), BytesParser(policy=compat32).parsebytes(folded)
    assert ours.get_content_type() == theirs.get_content_type()
    ours.policy = theirs.policy = policy.default
    assert ours.get_content_type() == theirs.get_content_type()

    header = Header("text/plain")
    for m in (ours, theirs):
        m.policy = compat32
        del m["content-type"]
        m["Content-Type"] = header
    assert ours.get_content_type() == theirs.get_content_type()
    header.append("html")
    assert ours.get_content_type() == theirs.get_content_type()

    with pytest.raises(AttributeError):
        1 in theirs  # noqa: B015
    with pytest.raises(AttributeError):
        1 in ours  # noqa: B015
