"""IMAP import speed against a real Dovecot on loopback, side by side with two references.

    python benchmarks/imap_bench.py [--emails 5000] [--rounds 3] [--corpus ../shared/corpus] [--profile]

Starts a throw-away Dovecot (tests/start-dovecot.sh, its default settings), loads N emails of the corpus mix
(every ``kind == message`` file of INDEX.tsv, cycled to N, each copy with its own Message-ID) into the INBOX
of user ``bench``, then times on the same mailbox contents, one round after another:

* floor:      a plain imapclient loop that FETCHes BODY.PEEK[] in batches of 200 (a child process), with
              imaplib's protocol trace off as the connector runs it (IMAPClient turns it on, and it then
              formats every message for the debug log: 2.3 s of CPU for these 120 MB);
* mbsync:     Debian's mbsync (isync), default settings, copying the INBOX to a fresh local Maildir (it
              skips the few corpus emails that have no blank line after the header; the count is printed);
* integrator: `integrator run` importing them all into a fresh database and moving them to Deleted Items.

Between rounds the INBOX is refilled with a server-side COPY from a seed folder. Prints seconds, emails/s and
the ratios integrator/mbsync and integrator/floor (medians), then times a run with nothing new over 20 IMAP
mailboxes (20 users). ``--profile`` runs one more integrator import under cProfile and prints the top.
Not a test: `.ci/run` does not run it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from imapclient import IMAPClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import CORPUS, corpus_messages, integrator_env, process_tree

from dovecot import Dovecot, User, start_dovecot

BENCH = User(name="bench", password="pw-bench")
SEED_FOLDER = "Seed"
FLOOR_SCRIPT = """
import sys
from imapclient import IMAPClient
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
c._imap.debug = 0  # as connectors/imap.py does
c.login(user, password)
c.select_folder("INBOX", readonly=True)
uids = c.search(["ALL"])
n = 0
for i in range(0, len(uids), 200):
    for data in c.fetch(uids[i:i + 200], ["BODY.PEEK[]"]).values():
        n += len(data[b"BODY[]"]) > 0
c.logout()
print(n, len(uids))
"""
_MESSAGE_ID = re.compile(rb"^message-id:[^\n]*\n(?:[ \t][^\n]*\n)*", re.IGNORECASE | re.MULTILINE)


def with_message_id(raw: bytes, n: int) -> bytes:
    """The email with any Message-ID removed from its header block and a unique one put first. A leading
    mbox "From " separator line (some corpus files are mbox extracts) is dropped, as a delivery agent does."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    crlf = b"\r\n" in raw[:2000]
    end = raw.find(b"\r\n\r\n" if crlf else b"\n\n")
    head, body = (raw, b"") if end < 0 else (raw[: end + 1], raw[end + 1 :])
    head = _MESSAGE_ID.sub(b"", head)
    nl = b"\r\n" if crlf else b"\n"
    return b"Message-ID: <bench-" + str(n).encode() + b"@bench.example>" + nl + head + body


def build_mix(corpus: Path, count: int) -> list[bytes]:
    files = [data for _, data in corpus_messages(corpus)]
    return [with_message_id(files[i % len(files)], i) for i in range(count)]


def client(server: Dovecot, user: User) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=120)
    c.login(user.name, user.password)
    return c


def seed(server: Dovecot, user: User, messages: list[bytes]) -> None:
    c = client(server, user)
    try:
        if not c.folder_exists(SEED_FOLDER):
            c.create_folder(SEED_FOLDER)
        for i in range(0, len(messages), 500):
            c.multiappend(SEED_FOLDER, messages[i : i + 500])
    finally:
        c.logout()


def refill_inbox(server: Dovecot, user: User) -> int:
    """Empty INBOX and Trash, then COPY the seed folder into INBOX (server side). Returns the INBOX count."""
    c = client(server, user)
    try:
        for folder in ("INBOX", "Trash"):
            c.select_folder(folder)
            uids = c.search(["ALL"])
            if uids:
                c.delete_messages(uids)
                c.uid_expunge(uids)
        c.select_folder(SEED_FOLDER, readonly=True)
        uids = c.search(["ALL"])
        c.copy(uids, "INBOX")
        return int(c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"])
    finally:
        c.logout()


def counts(server: Dovecot, user: User) -> tuple[int, int]:
    c = client(server, user)
    try:
        return tuple(  # type: ignore[return-value]
            int(c.folder_status(f, [b"MESSAGES"])[b"MESSAGES"]) for f in ("INBOX", "Trash")
        )
    finally:
        c.logout()


def timed(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, str]:
    """Run a command; returns (seconds, CPU seconds of its whole process tree, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    tree = TreeCpu(proc.pid)
    sampler = threading.Thread(target=tree.follow, args=(proc,), daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=3600)
    seconds = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, tree.total(), out


class TreeCpu:
    """User + sys seconds of a process and all its descendants, read from /proc every 20 ms while it runs.

    rusage would miss the parse workers: multiprocessing's fork server, not the importer, is their parent,
    and nobody waits for the fork server. A process that lives less than 20 ms may be missed.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, float] = {}
        self.tick = os.sysconf("SC_CLK_TCK")

    def follow(self, proc: subprocess.Popen[str]) -> None:
        while proc.poll() is None:
            self.sample()
            time.sleep(0.02)

    def sample(self) -> None:
        for pid, fields in process_tree(self.root).items():
            seconds = (int(fields[11]) + int(fields[12])) / self.tick
            self.seen[pid] = max(seconds, self.seen.get(pid, 0.0))

    def total(self) -> float:
        return sum(self.seen.values())


def run_floor(server: Dovecot, user: User) -> tuple[float, float, str]:
    return timed([sys.executable, "-c", FLOOR_SCRIPT, str(server.imap_port), user.name, user.password])


def run_mbsync(server: Dovecot, user: User, work: Path) -> tuple[float, float, str]:
    local = work / "mbsync"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir()
    rc = local / "mbsyncrc"
    rc.write_text(
        textwrap.dedent(
            f"""\
            IMAPAccount bench
            Host 127.0.0.1
            Port {server.imap_port}
            User {user.name}
            Pass {user.password}
            SSLType None
            AuthMechs PLAIN

            IMAPStore remote
            Account bench

            MaildirStore local
            Path {local}/
            Inbox {local}/INBOX
            SubFolders Verbatim

            Channel pull
            Far :remote:INBOX
            Near :local:INBOX
            Create Near
            Sync Pull
            Expunge None
            SyncState *
            """
        )
    )
    seconds, cpu, _ = timed(["mbsync", "-q", "-c", str(rc), "pull"])
    copied = sum(1 for _ in (local / "INBOX" / "new").iterdir()) + sum(1 for _ in (local / "INBOX" / "cur").iterdir())
    return seconds, cpu, str(copied)


def mailbox_toml(server: Dovecot, user: User, name: str) -> str:
    return textwrap.dedent(
        f"""
        [[mailboxes]]
        name = "{name}"
        address = "{user.name}@bench.example"
        connection = "imap"

        [mailboxes.incoming]
        after_import = "move_to_deleted"
        sender_limit = 0  # the cycled corpus repeats senders; a bulk first import is not a mail loop

        [[mailboxes.credentials]]
        name = "default"
        host = "127.0.0.1"
        port = {server.imap_port}
        security = "none"
        username = "{user.name}"
        """
    )


def write_config(directory: Path, body: str) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    cfg = directory / "integrator.toml"
    cfg.write_text('instance = "bench"\ndatabase = "tickets.db"\n' + body, encoding="utf-8")
    return cfg


def run_integrator(cfg: Path, env: dict[str, str], *extra: str) -> tuple[float, float, str]:
    return timed([sys.executable, *extra, "-m", "halo_integrator", "--config", str(cfg), "run", "--json"], env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mailboxes", type=int, default=20, help="for the nothing-new run")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--profile", action="store_true", help="profile one more integrator import")
    args = parser.parse_args()
    if shutil.which("mbsync") is None or shutil.which("dovecot") is None:
        print("needs dovecot-imapd and isync (mbsync)", file=sys.stderr)
        return 1

    messages = build_mix(args.corpus.resolve(), args.emails)
    size = sum(len(m) for m in messages)
    print(f"{len(messages)} emails of the corpus mix, {size / 1e6:.1f} MB (mean {size // len(messages)} bytes)")
    server = start_dovecot()
    work = Path(tempfile.mkdtemp(prefix="halo-imap-bench-"))
    try:
        started = time.perf_counter()
        seed(server, BENCH, messages)
        print(f"loaded the seed folder in {time.perf_counter() - started:.2f} s (MULTIAPPEND)")
        env = integrator_env({"INTEGRATOR_SECRET_BENCH_DEFAULT_PASSWORD": BENCH.password})
        results: dict[str, list[float]] = {"floor": [], "mbsync": [], "integrator": []}
        cpu: dict[str, list[float]] = {k: [] for k in results}
        for r in range(1, args.rounds + 1):
            n = refill_inbox(server, BENCH)
            seconds, used, out = run_floor(server, BENCH)
            assert int(out.split()[0]) == n, (out, n)
            results["floor"].append(seconds)
            cpu["floor"].append(used)
            seconds, used, out = run_mbsync(server, BENCH, work)
            mbsync_copied = int(out)
            results["mbsync"].append(seconds)
            cpu["mbsync"].append(used)
            cfg = write_config(work / "integrator", mailbox_toml(server, BENCH, "Bench"))
            seconds, used, out = run_integrator(cfg, env)
            inbox, trash = counts(server, BENCH)
            assert (inbox, trash) == (0, n), (inbox, trash, out[-500:])
            results["integrator"].append(seconds)
            cpu["integrator"].append(used)
            print(
                f"round {r}: floor {results['floor'][-1]:.2f} s, mbsync {results['mbsync'][-1]:.2f} s, "
                f"integrator {results['integrator'][-1]:.2f} s  ({n} emails; mbsync copied {mbsync_copied})"
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        print()
        print(f"{'':12}{'median s':>10}{'emails/s':>10}{'cpu s':>8}   rounds")
        for k, v in results.items():
            print(
                f"{k:12}{med[k]:>10.2f}{args.emails / med[k]:>10.0f}{statistics.median(cpu[k]):>8.2f}   "
                f"{' '.join(f'{x:.2f}' for x in v)}"
            )
        print(f"(cpu s: user + sys of the command's process tree; {os.cpu_count()} cores; the server not counted)")
        print(f"integrator/mbsync = {med['integrator'] / med['mbsync']:.2f}x (target <= 3x)")
        rounds = [i / m for i, m in zip(results["integrator"], results["mbsync"], strict=True)]
        print(
            f"  round by round: {' '.join(f'{x:.2f}x' for x in rounds)} (median {statistics.median(rounds):.2f}x; "
            "both timed seconds apart on the same mailbox, so this is the steadier comparison)"
        )
        print(f"integrator/floor  = {med['integrator'] / med['floor']:.2f}x")

        if args.profile:
            refill_inbox(server, BENCH)
            cfg = write_config(work / "integrator", mailbox_toml(server, BENCH, "Bench"))
            prof = work / "run.prof"
            seconds, _, _ = run_integrator(cfg, env, "-m", "cProfile", "-o", str(prof))
            import pstats

            print(f"\nprofiled run: {seconds:.2f} s (main process only; parsing runs in worker processes)")
            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(30)

        # nothing new over N mailboxes -----------------------------------------------------------------
        users = [User(name=f"bench{i:02d}", password=f"pw-bench{i:02d}") for i in range(args.mailboxes)]
        for i, user in enumerate(users):
            seed_one = client(server, user)
            seed_one.append("INBOX", with_message_id(messages[i % len(messages)], 100_000 + i))
            seed_one.logout()
        body = "".join(mailbox_toml(server, u, f"Box{i:02d}") for i, u in enumerate(users))
        cfg = write_config(work / "many", body)
        env_many = integrator_env(
            {f"INTEGRATOR_SECRET_BOX{i:02d}_DEFAULT_PASSWORD": u.password for i, u in enumerate(users)}
        )
        run_integrator(cfg, env_many)  # imports the one email of each; later runs find nothing new
        times = [run_integrator(cfg, env_many)[0] for _ in range(5)]
        print(
            f"\nnothing new over {args.mailboxes} IMAP mailboxes: median {statistics.median(times):.3f} s "
            f"(runs {' '.join(f'{t:.3f}' for t in times)}; target < 1 s)"
        )
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"(python start-up alone: {time.perf_counter() - started:.3f} s)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
