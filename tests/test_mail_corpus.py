"""The parser on the shared real-world corpus (../shared/corpus): no crash, verdict recall, Zammad oracle.

Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import zammad_oracle
from halo_integrator.mail import ParsedEmail, parse
from halo_integrator.mail.names import safe_filename
from helpers import corpus_or_skip

pytestmark = pytest.mark.corpus
Parsed = list[tuple[dict[str, str], ParsedEmail]]


def _index(corpus: Path) -> list[dict[str, str]]:
    lines = (corpus / "INDEX.tsv").read_text(encoding="utf-8").splitlines()
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=False)) for line in lines[1:]]


@pytest.fixture(scope="module")
def parsed() -> Parsed:
    corpus = corpus_or_skip()
    result = []
    for row in _index(corpus):
        if row["kind"] == "message":
            result.append((row, parse((corpus / row["path"]).read_bytes())))
    return result


def _tags(row: dict[str, str]) -> set[str]:
    return set(filter(None, row.get("tags", "").split(",")))


def test_every_message_parses(parsed: Parsed) -> None:
    assert len(parsed) >= 800
    failures = [row["path"] for row, email in parsed
                if any(d.startswith("parser failure") for d in email.defects)]
    print(f"\ncorpus: {len(parsed)} messages, {len(failures)} parser failures")
    assert failures == []


def test_most_messages_have_a_sender_and_some_content(parsed: Parsed) -> None:
    empty = [row["path"] for row, email in parsed if not email.text_body.strip() and not email.attachments]
    no_sender = [row["path"] for row, email in parsed
                 if not email.sender.address and "missing-from" not in _tags(row)]
    print(f"\nno text and no attachment: {len(empty)}; no sender although From is there: {len(no_sender)}")
    assert len(empty) <= len(parsed) * 0.06  # measured 42 of 830: genuinely empty test mails
    assert len(no_sender) <= len(parsed) * 0.02


def test_auto_reply_and_bounce_recall(parsed: Parsed) -> None:
    autoreplies = [(row, e) for row, e in parsed if "autoreply" in _tags(row)]
    bounces = [(row, e) for row, e in parsed if "bounce" in _tags(row)]
    auto_hit = sum(1 for _, e in autoreplies if e.auto_reply or e.bounce)
    bounce_hit = sum(1 for _, e in bounces if e.bounce)
    bounce_any = sum(1 for _, e in bounces if e.bounce or e.auto_reply)
    missed = [row["path"] for row, e in bounces if not e.bounce]
    print(f"\nauto-reply recall {auto_hit}/{len(autoreplies)}; bounce recall {bounce_hit}/{len(bounces)} "
          f"(flagged either way {bounce_any}); missed bounces: {missed}")
    assert auto_hit == len(autoreplies)
    assert bounce_hit >= 0.9 * len(bounces)


def test_ordinary_replies_are_not_flagged(parsed: Parsed) -> None:
    # Replies that came through a mailing list carry "Precedence: bulk/list", which DESIGN contract 6
    # treats like an auto-reply (no acknowledgement): they are not "ordinary" and are counted apart.
    machine = {"autoreply", "bounce", "auto-submitted", "precedence-bulk", "mailing-list"}
    replies = [(row, e) for row, e in parsed if "reply" in _tags(row) and not _tags(row) & machine]
    list_replies = [(row, e) for row, e in parsed if "reply" in _tags(row) and _tags(row) & machine]
    flagged = [(row["path"], e.auto_reply or e.bounce) for row, e in replies if e.auto_reply or e.bounce]
    list_flagged = sum(1 for _, e in list_replies if e.auto_reply or e.bounce)
    expected_flags = machine | {"mdn"}
    everything = [row for row, e in parsed if (e.auto_reply or e.bounce) and not _tags(row) & expected_flags]
    print(f"\nordinary replies flagged: {len(flagged)}/{len(replies)} {flagged}; list/bulk replies "
          f"flagged: {list_flagged}/{len(list_replies)}; "
          f"untagged messages flagged anyway: {len(everything)}")
    assert len(replies) >= 40
    assert flagged == []


# -- Zammad oracle --------------------------------------------------------------------------------


@dataclass
class Agreement:
    total: int = 0
    subject: int = 0
    sender: int = 0
    attachments: int = 0
    differences: list[str] = field(default_factory=list)


def zammad_agreement(corpus: Path) -> Agreement:
    """Compare subject, sender address and attachment file names with Zammad's mailNNN.yml.

    Zammad stores the HTML body as an attachment named ``message.html``: those entries are not
    attachments for us and are left out by the oracle loader. Oracle file names go through our own
    file-name sanitiser (we replace ``:`` and other characters that are unsafe on Windows), so only real
    disagreements count.
    """
    result = Agreement()
    for oracle in zammad_oracle.load(corpus):
        email = parse(oracle.box.read_bytes())
        name = oracle.box.name
        result.total += 1
        if zammad_oracle.norm(email.subject) == oracle.subject:
            result.subject += 1
        else:
            result.differences.append(f"{name} subject: {email.subject!r} != {oracle.subject!r}")
        if email.sender.address == oracle.from_email:
            result.sender += 1
        else:
            result.differences.append(f"{name} from: {email.sender.address!r} != {oracle.from_email!r}")
        want_files = sorted(
            zammad_oracle.norm(safe_filename(n, "application/octet-stream")) for n in oracle.attachments
        )
        got_files = sorted(zammad_oracle.norm(a.filename) for a in email.attachments)
        if got_files == want_files:
            result.attachments += 1
        else:
            result.differences.append(f"{name} attachments: {got_files} != {want_files}")
    return result


def test_zammad_oracle_agreement() -> None:
    corpus = corpus_or_skip()
    agreement = zammad_agreement(corpus)
    print(f"\nzammad oracle: {agreement.total} emails; subject {agreement.subject}, "
          f"sender {agreement.sender}, attachments {agreement.attachments}")
    for line in agreement.differences:
        print("  ", line)
    assert agreement.total >= 70
    assert agreement.subject >= agreement.total - 1  # measured 70/71 (Zammad leaves UTF-7 undecoded)
    assert agreement.sender >= agreement.total - 2  # measured 69/71
    assert agreement.attachments >= agreement.total - 5  # measured 66/71
