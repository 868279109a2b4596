"""Incoming settings, email rules, exclusions, loop protection, hijack-safe threading, explained decisions."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from helpers import copy_examples, email_bytes, invoke, invoke_json, write_config
from smtpsetup import drop


def run(cfg: Path) -> dict:
    result = invoke(cfg, "run", "--json")
    assert result.exit_code in (0, 5), result.stderr
    (summary,) = json.loads(result.stdout)
    return summary


def log_rows(cfg: Path) -> dict[str, dict]:
    return {r["source_id"]: r for r in invoke_json(cfg, "logs", "--limit", "500")}


def decision(tmp_path: Path, source_id: str) -> dict:
    con = sqlite3.connect(tmp_path / "tickets.db")
    (text,) = con.execute(
        "SELECT decision_json FROM inbound_log WHERE source_id = ? ORDER BY id DESC LIMIT 1", [source_id]
    ).fetchone()
    con.close()
    return json.loads(text)


def ticket_row(tmp_path: Path, ticket_id: int) -> dict:
    con = sqlite3.connect(tmp_path / "tickets.db")
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM tickets WHERE id = ?", [ticket_id]).fetchone())
    con.close()
    return row


# ----------------------------------------------------------------------------------- incoming settings


def test_log_new_tickets_off_takes_only_updates(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    drop(tmp_path, "1.eml", email_bytes("First", message_id="f1@x"))
    run(cfg)
    cfg.write_text(cfg.read_text() + "log_new_tickets = false\n")
    drop(tmp_path, "2.eml", email_bytes("Unrelated", message_id="u@x"))
    drop(tmp_path, "3.eml", email_bytes("Re: First", message_id="f2@x", in_reply_to="f1@x"))
    summary = run(cfg)
    assert summary["created"] == 0 and summary["updated"] == 1 and summary["ignored"] == 1
    assert "does not log new tickets" in log_rows(cfg)["2.eml"]["detail"]


def test_update_existing_off_ignores_replies(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra_incoming="update_existing = false\n")
    drop(tmp_path, "1.eml", email_bytes("First", message_id="f1@x"))
    run(cfg)
    drop(tmp_path, "2.eml", email_bytes("Re: First", message_id="f2@x", in_reply_to="f1@x"))
    assert run(cfg)["ignored"] == 1
    assert "incoming.update_existing" in log_rows(cfg)["2.eml"]["detail"]


@pytest.mark.parametrize(("choice", "created", "updated", "ignored"), [
    ("reopen", 0, 1, 0), ("new_linked", 1, 0, 0), ("ignore", 0, 0, 1),
])
def test_reply_to_a_closed_ticket(tmp_path: Path, choice: str, created: int, updated: int, ignored: int) -> None:
    cfg = write_config(tmp_path, extra_incoming=f'closed_ticket_reply = "{choice}"\n')
    drop(tmp_path, "1.eml", email_bytes("VPN", message_id="v1@x"))
    run(cfg)
    con = sqlite3.connect(tmp_path / "tickets.db")
    con.execute("UPDATE tickets SET status = 'closed'")
    con.commit()
    con.close()
    drop(tmp_path, "2.eml", email_bytes("Re: VPN", message_id="v2@x", in_reply_to="v1@x"))
    summary = run(cfg)
    assert (summary["created"], summary["updated"], summary["ignored"]) == (created, updated, ignored)
    first = ticket_row(tmp_path, 1)
    assert first["status"] == ("open" if choice == "reopen" else "closed")
    if choice == "new_linked":
        assert ticket_row(tmp_path, 2)["linked_ticket_id"] == 1


def test_defaults_and_custom_ticket_tag_and_body_search(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        extra_incoming='default_type = "Incident"\ndefault_priority = "P3"\nticket_tag = "Ticket#{id}"\n'
        "search_body_for_tag = true\n",
    )
    drop(tmp_path, "1.eml", email_bytes("Printer", message_id="p1@x"))
    run(cfg)
    row = ticket_row(tmp_path, 1)
    assert (row["type"], row["priority"], row["status"]) == ("Incident", "P3", "open")
    drop(tmp_path, "2.eml", email_bytes("AW: Ticket#1 Printer", message_id="p2@x"))
    drop(tmp_path, "3.eml", email_bytes("Another thing", message_id="p3@x", body="About Ticket#1 again"))
    summary = run(cfg)
    assert summary["updated"] == 2
    assert decision(tmp_path, "3.eml")["thread"]["how"] == "body_tag"


def test_oversized_email_is_quarantined_raw_kept_and_releasable(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra_incoming="max_email_mb = 0.01\n")
    raw = email_bytes("Huge scan", message_id="h@x", body="x" * 30000)
    drop(tmp_path, "big.eml", raw)
    assert run(cfg)["quarantined"] == 1
    assert (tmp_path / "mail Quarantine" / "big.eml").read_bytes() == raw
    (entry,) = invoke_json(cfg, "quarantine", "list")
    assert "max_email_mb" in entry["detail"]
    retry = invoke(cfg, "quarantine", "retry", str(entry["id"]))
    assert retry.exit_code == 1 and "stays in quarantine" in retry.stdout
    release = invoke(cfg, "quarantine", "release", str(entry["id"]))
    assert release.exit_code == 0, release.stderr
    assert "created (ticket 1)" in release.stdout
    assert invoke_json(cfg, "quarantine", "list") == []
    (ticket,) = invoke_json(cfg, "tickets", "list")
    assert ticket["subject"] == "Huge scan"


# ----------------------------------------------------------------------------------------------- rules

RULES = """
[[rules]]
name = "Drop newsletters"
stop = true
conditions = [{ field = "header:List-Unsubscribe", op = "regex", value = "." }]
actions = { ignore = true }

[[mailboxes.rules]]
name = "VIP"
match = "any"
conditions = [
  { field = "from", op = "contains", value = "@board.example" },
  { field = "cc", op = "exact", value = "ceo@example.com" },
]
actions = { priority = "P1", team = "Exec Support", no_acknowledgement = true }

[[mailboxes.rules]]
name = "Outage"
conditions = [
  { field = "subject", op = "regex", value = "\\\\b(down|outage)\\\\b" },
  { field = "body", op = "contains", value = "test only", negate = true },
]
actions = { type = "Incident", status = "Triage", category = "Network", agent = "nina" }
stop = true

[[mailboxes.rules]]
name = "Never reached after Outage"
conditions = [{ field = "subject", op = "contains", value = "down" }]
actions = { priority = "P9" }

[[mailboxes.rules]]
name = "Invoices"
conditions = [{ field = "attachment", op = "regex", value = "\\\\.pdf$" }]
actions = { category = "Billing" }

[[mailboxes.rules]]
name = "Supplier"
conditions = [{ field = "from", op = "exact", value = "cases@supplier.example" }]
actions = { update_ticket_pattern = "Your ref: HD-(\\\\d+)", update_ticket_in = "body" }
"""


def rules_config(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path)
    text = cfg.read_text()
    top, _, mailbox = text.partition("[[mailboxes]]")
    global_rules, _, mailbox_rules = RULES.partition("[[mailboxes.rules]]")
    cfg.write_text(top + global_rules + "\n[[mailboxes]]" + mailbox + "\n[[mailboxes.rules]]" + mailbox_rules)
    return cfg


def test_rules_each_condition_and_action(tmp_path: Path) -> None:
    from email.message import EmailMessage

    cfg = rules_config(tmp_path)
    drop(tmp_path, "news.eml", email_bytes("Weekly digest", message_id="n@x",
                                           headers={"List-Unsubscribe": "<mailto:u@list.example>"}))
    drop(tmp_path, "vip.eml", email_bytes("Quick question", message_id="vip@x", sender="Chair <chair@board.example>"))
    drop(tmp_path, "down.eml", email_bytes("Mail server down", message_id="down@x"))
    drop(tmp_path, "test.eml", email_bytes("Mail server down", message_id="test@x", body="this is a test only"))
    pdf = EmailMessage()
    pdf["From"] = "ap@vendor.example"
    pdf["Subject"] = "Invoice"
    pdf["Message-ID"] = "<inv@x>"
    pdf.set_content("attached")
    pdf.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="INV-1.PDF")
    drop(tmp_path, "invoice.eml", pdf.as_bytes())
    run(cfg)
    rows = log_rows(cfg)
    assert rows["news.eml"]["status"] == "ignored" and "Drop newsletters" in rows["news.eml"]["detail"]
    vip = decision(tmp_path, "vip.eml")
    assert vip["rules"]["matched"] == ["VIP"] and vip["acknowledge"] is False
    assert ticket_row(tmp_path, rows["vip.eml"]["ticket_id"])["priority"] == "P1"
    assert ticket_row(tmp_path, rows["vip.eml"]["ticket_id"])["team"] == "Exec Support"
    down = ticket_row(tmp_path, rows["down.eml"]["ticket_id"])
    assert (down["type"], down["status"], down["category"], down["agent"], down["priority"]) == (
        "Incident", "Triage", "Network", "nina", ""
    )
    assert decision(tmp_path, "down.eml")["rules"]["matched"] == ["Outage"]  # stop: the next rule never ran
    assert decision(tmp_path, "test.eml")["rules"]["matched"] == ["Never reached after Outage"]  # negated
    assert ticket_row(tmp_path, rows["invoice.eml"]["ticket_id"])["category"] == "Billing"  # case-insensitive


def test_rule_extracts_our_ticket_number_from_a_supplier_email(tmp_path: Path) -> None:
    cfg = rules_config(tmp_path)
    drop(tmp_path, "1.eml", email_bytes("Router broken", message_id="r1@x"))
    run(cfg)
    drop(tmp_path, "2.eml", email_bytes("Case 88812 updated", message_id="s1@supplier.example",
                                        sender="cases@supplier.example", body="Status: replaced. Your ref: HD-1."))
    summary = run(cfg)
    assert summary["updated"] == 1
    d = decision(tmp_path, "2.eml")
    assert d["thread"]["how"] == "rule" and d["ticket_id"] == 1


# ------------------------------------------------------------------------------------------ exclusions


def test_exclusions_and_our_own_addresses_never_open_tickets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    top, _, mailbox = cfg.read_text().partition("[[mailboxes]]")
    cfg.write_text(top + '[exclusions]\naddresses = ["alerts@monitor.example"]\npatterns = ["@spam\\\\.example$"]\n\n'
                   + "[[mailboxes]]" + mailbox)
    drop(tmp_path, "a.eml", email_bytes("Disk", message_id="a@x", sender="alerts@monitor.example"))
    drop(tmp_path, "b.eml", email_bytes("Win", message_id="b@x", sender="x@spam.example"))
    drop(tmp_path, "c.eml", email_bytes("Loop", message_id="c@x", sender="Desk <DESK@example.com>"))
    drop(tmp_path, "d.eml", email_bytes("Real", message_id="d@x"))
    summary = run(cfg)
    assert summary["created"] == 1 and summary["ignored"] == 3
    rows = log_rows(cfg)
    assert "[exclusions] addresses" in rows["a.eml"]["detail"]
    assert "exclusion pattern" in rows["b.eml"]["detail"]
    assert "one of our own mailboxes" in rows["c.eml"]["detail"]


# -------------------------------------------------------------------------------------- loop protection


def test_bounce_of_our_email_becomes_a_note_on_its_ticket(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    drop(tmp_path, "1.eml", email_bytes("Laptop", message_id="l1@x"))
    run(cfg)
    # an email we sent on ticket 1 (as the outgoing side records it)
    con = sqlite3.connect(tmp_path / "tickets.db")
    con.execute(
        "INSERT INTO actions (ticket_id, kind, mailbox, message_id, subject, created_at) "
        "VALUES (1, 'email_out', 'Desk', 'ours-1@example.com', '[#1] Laptop', '2026-01-01T00:00:00Z')"
    )
    con.commit()
    con.close()
    bounce = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: desk@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <b1@mx.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nUser unknown\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\nFrom: desk@example.com\r\nTo: gone@example.org\r\n"
        b"Subject: Laptop\r\nMessage-ID: <ours-1@example.com>\r\n\r\nWe are on it.\r\n--B--\r\n"
    )
    drop(tmp_path, "bounce.eml", bounce)
    summary = run(cfg)
    assert summary["created"] == 0
    row = log_rows(cfg)["bounce.eml"]
    assert row["status"] == "bounce" and row["ticket_id"] == 1
    kinds = [a["kind"] for a in invoke_json(cfg, "tickets", "show", "1")["actions"]]
    assert kinds == ["email_in", "email_out", "note"]
    assert decision(tmp_path, "bounce.eml")["thread"]["how"] == "bounced_original"
    assert ticket_row(tmp_path, 1)["status"] == "open"


def test_auto_reply_loop_with_changing_addresses_stops_at_the_throttle(tmp_path: Path) -> None:
    """An auto-responder that sends no auto-reply headers and answers from a new address each time: the
    per-sender check alone would never trip; the same-domain, same-subject count does."""
    cfg = write_config(tmp_path, extra_incoming="sender_limit = 3\n")
    for i in range(8):
        drop(tmp_path, f"{i}.eml", email_bytes(f"Re: [#{i + 90}] We received your request", message_id=f"ar{i}@x",
                                               sender=f"noreply-{i}-{i * 7919}@helpdesk.vendor.example"))
        run(cfg)
    rows = log_rows(cfg)
    statuses = [rows[f"{i}.eml"]["status"] for i in range(8)]
    assert statuses == ["created"] * 3 + ["quarantined"] * 5
    reported = [decision(tmp_path, f"{i}.eml").get("reported") for i in range(3, 8)]
    assert reported == [True, False, False, False, False]  # reported once
    assert "mail loop" in rows["3.eml"]["detail"]


def test_same_sender_throttle(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra_incoming="sender_limit = 2\n")
    for i in range(4):
        drop(tmp_path, f"{i}.eml", email_bytes(f"Topic {i}", message_id=f"t{i}@x"))
    summary = run(cfg)
    assert summary["created"] == 2 and summary["quarantined"] == 2


# ------------------------------------------------------------------------------------ hijack-safe threading


@pytest.mark.parametrize(("choice", "expect"), [("new_linked", "created"), ("update", "updated"),
                                                 ("ignore", "ignored")])
def test_stranger_using_a_ticket_tag(tmp_path: Path, choice: str, expect: str) -> None:
    cfg = write_config(tmp_path, extra_incoming=f'unknown_sender_on_tag = "{choice}"\n')
    drop(tmp_path, "1.eml", email_bytes("Salary question", message_id="s1@x", sender="amy@example.org"))
    run(cfg)
    drop(tmp_path, "2.eml", email_bytes("RE: [#1] Salary question", message_id="s2@x", sender="eve@evil.example"))
    drop(tmp_path, "3.eml", email_bytes("RE: [#1] Salary question", message_id="s3@x", sender="amy@example.org"))
    run(cfg)
    rows = log_rows(cfg)
    assert rows["2.eml"]["status"] == expect
    assert rows["3.eml"]["status"] == "updated"  # the requester herself
    if choice == "new_linked":
        assert ticket_row(tmp_path, rows["2.eml"]["ticket_id"])["linked_ticket_id"] == 1
        assert "neither its requester nor anyone on it" in rows["2.eml"]["detail"]


def test_someone_copied_on_the_ticket_may_use_its_tag(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    first = email_bytes("Printer", message_id="p1@x", sender="amy@example.org",
                        headers={"Cc": "Bob <bob@example.org>"})
    drop(tmp_path, "1.eml", first)
    run(cfg)
    drop(tmp_path, "2.eml", email_bytes("RE: [#1] Printer", message_id="p2@x", sender="bob@example.org"))
    assert run(cfg)["updated"] == 1


# ------------------------------------------------------------------------------ explained, dry, simulated


def test_every_row_explains_its_decision(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    run(cfg)
    con = sqlite3.connect(tmp_path / "tickets.db")
    rows = con.execute("SELECT status, detail, decision_json FROM inbound_log").fetchall()
    con.close()
    for status, detail, raw in rows:
        d = json.loads(raw)
        assert detail and d["outcome"] == status and d["reason"] == detail
        assert {"thread", "loop", "rules"} <= set(d)
    shown = invoke(cfg, "logs", "show", "3")
    assert "thread" in shown.stdout and "References" in shown.stdout


def test_dry_run_changes_nothing_byte_for_byte(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    drop(tmp_path, "1.eml", email_bytes("Before", message_id="b@x"))
    run(cfg)
    copy_examples(tmp_path / "mail")

    def snapshot() -> dict[str, str]:
        out = {}
        for p in sorted(tmp_path.rglob("*")):
            if p.is_file() and not p.name.endswith(("-wal", "-shm")):
                out[str(p.relative_to(tmp_path))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    before = snapshot()
    result = invoke(cfg, "run", "--dry-run")
    assert result.exit_code == 0
    assert "Dry run: nothing was changed" in result.stdout or "Would be" in result.stdout
    assert snapshot() == before


def test_simulate_one_file_and_without_a_database(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    sample = tmp_path / "sample.eml"
    sample.write_bytes(
        email_bytes("Automatic reply: away", message_id="a@x", headers={"Auto-Submitted": "auto-replied"})
    )
    result = invoke(cfg, "simulate", str(sample), "--json")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["outcome"] == "auto_reply" and "Auto-Submitted" in d["loop"]
    assert not (tmp_path / "tickets.db").exists()  # simulating created no database
    plain = invoke(cfg, "simulate", str(sample))
    assert "Outcome:  auto_reply" in plain.stdout


def test_rules_test_compares_with_expected_toml(tmp_path: Path) -> None:
    cfg = rules_config(tmp_path)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "vip.eml").write_bytes(email_bytes("Hello", message_id="v@x", sender="chair@board.example"))
    (cases / "vip.toml").write_text('outcome = "created"\nrules = ["VIP"]\npriority = "P1"\nacknowledge = false\n')
    (cases / "down.eml").write_bytes(email_bytes("VPN outage", message_id="d@x"))
    (cases / "down.toml").write_text('outcome = "created"\ntype = "Problem"\n')  # wrong on purpose
    result = invoke(cfg, "rules", "test", str(cases))
    assert result.exit_code == 1
    assert "PASS  vip.eml" in result.stdout
    assert "FAIL  down.eml" in result.stdout and "type: expected 'Problem', got 'Incident'" in result.stdout
    assert "1 passed, 1 failed" in result.stdout
    (cases / "down.toml").write_text('outcome = "created"\ntype = "Incident"\n')
    assert invoke(cfg, "rules", "test", str(cases)).exit_code == 0
    listing = invoke_json(cfg, "rules", "list")
    assert [r["name"] for r in listing][:2] == ["Drop newsletters", "VIP"]


def test_bad_rules_are_config_errors(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text() + '\n[[mailboxes.rules]]\nname = "x"\n'
                   'conditions = [{ field = "smell", value = "y" }]\n')
    result = invoke(cfg, "run")
    assert result.exit_code == 3
    assert "mailboxes[0].rules[0].conditions[0].field is 'smell'" in result.stderr


def test_reprocess_refreshes_stored_emails(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    run(cfg)
    con = sqlite3.connect(tmp_path / "tickets.db")
    con.execute("UPDATE actions SET body_text = 'stale', subject = 'stale'")
    con.commit()
    con.close()
    assert invoke(cfg, "reprocess").exit_code == 2  # says what to re-parse
    assert "Would re-parse 11" in invoke(cfg, "reprocess", "--all", "--dry-run").stdout
    assert "Re-parsed 4" in invoke(cfg, "reprocess", "--ticket", "1").stdout
    shown = invoke_json(cfg, "tickets", "show", "1")
    assert all(a["body_text"] != "stale" for a in shown["actions"])
    other = invoke_json(cfg, "tickets", "show", "2")
    assert other["actions"][0]["body_text"] == "stale"
    assert invoke(cfg, "reprocess", "--all").exit_code == 0
    assert invoke_json(cfg, "tickets", "show", "2")["actions"][0]["subject"] == "VPN client shows this error"


def test_dry_run_without_a_database_creates_none(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    result = invoke(cfg, "run", "--dry-run", "--json")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)[0]["decisions"]) == 12
    assert not any(p.name.startswith("tickets.db") for p in tmp_path.iterdir())
