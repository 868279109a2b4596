from __future__ import annotations

import pytest

from halo_integrator import matching


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Printer broken", "RE: Printer broken", "AW: Printer broken", "SV: Printer broken", "VS: Printer broken",
        "Antw: Printer broken", "Ref: Printer broken", "Réf. : Printer broken".replace(". ", ""),
        "回复: Printer broken", "答复：Printer broken", "Fwd: Printer broken", "WG: Printer broken",
        "TR: Printer broken", "Re[2]: Printer broken", "RE: AW: Fwd: Printer broken", "re:re: Printer broken",
        "Odp: Printer broken", "RV: Printer broken", "Enc: Printer broken", "[support] Re: Printer broken",
    ],
)
def test_reply_prefixes_do_not_change_the_subject(subject: str) -> None:
    assert matching.strip_reply_prefixes(subject) == "Printer broken"


def test_words_that_only_start_like_prefixes_stay() -> None:
    assert matching.strip_reply_prefixes("Report: Q3 numbers") == "Report: Q3 numbers"
    assert matching.strip_reply_prefixes("Refund request") == "Refund request"
    assert matching.strip_reply_prefixes("Trouble: VPN") == "Trouble: VPN"


@pytest.mark.parametrize(
    ("tag", "subject", "numbers"),
    [
        ("[#{id}]", "RE: [#123] Printer", [123]),
        ("[#{id}]", "RE: [# 123 ] Printer [#7]", [123, 7]),
        ("[#{id}]", "Order #123 shipped", []),
        ("Ticket#{id}", "AW: Ticket#0042 - VPN", [42]),
        ("(REF:{id})", "Fwd: VPN (ref:99)", [99]),
    ],
)
def test_ticket_tags_in_any_format(tag: str, subject: str, numbers: list[int]) -> None:
    assert matching.find_ticket_numbers(subject, tag) == numbers


def test_clean_subject_removes_tag_and_prefixes() -> None:
    assert matching.clean_subject("RE: [#12] AW: Printer broken", "[#{id}]") == "Printer broken"
    assert matching.clean_subject("", "[#{id}]") == "(no subject)"
