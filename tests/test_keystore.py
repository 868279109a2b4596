"""The keystore: lookup order, backend checks, the encrypted-file backend, large secrets, no leaks.

Every test runs on the in-memory keyring selected by the autouse fixture in conftest.py, or on a real
file backend (keyrings.cryptfile / keyrings.alt) writing under the temporary HOME; never the real keyring.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail, null
from keyring.backends.chainer import ChainerBackend
from keyring.errors import KeyringLocked

from halo_integrator import keystore
from halo_integrator.config import SecretsSettings
from halo_integrator.errors import SecretError
from halo_integrator.keystore import SERVICE, Keystore, entry_name, env_name, no_backend_help
from halo_integrator.testing_keyring import MemoryKeyring

SECRET = "Sup3r-S3cret-Valu3-7f1c"  # recognisable, so a leak is easy to spot
CRYPTFILE = "keyrings.cryptfile.cryptfile.CryptFileKeyring"
HAS_CRYPTFILE = importlib.util.find_spec("keyrings.cryptfile") is not None
needs_cryptfile = pytest.mark.skipif(
    not HAS_CRYPTFILE,
    reason="keyrings.cryptfile is not installed (pip install 'halo-integrator[headless]')",
)


def store(**kwargs: object) -> Keystore:
    return Keystore(SecretsSettings(**kwargs), base_dir=None)  # type: ignore[arg-type]


def big_secret(size: int = 20_000) -> str:
    line = "ünïcødé-€-😀-ключ-鍵-" + "x" * 40 + "\n"
    return (line * (size // len(line) + 1))[:size]


# ----------------------------------------------------------------------------------------------- basics


def test_the_suite_uses_the_in_memory_keyring() -> None:
    assert type(keyring.get_keyring()) is MemoryKeyring
    assert os.environ["PYTHON_KEYRING_BACKEND"] == "halo_integrator.testing_keyring.MemoryKeyring"
    assert store().check_backend() == "halo_integrator.testing_keyring.MemoryKeyring"
    assert MemoryKeyring.entries() == {}  # emptied between tests


def test_names() -> None:
    assert entry_name("Support", "prod", "password") == "Support/prod/password"
    assert (
        env_name("IT Support", "prod-1", "client_secret")
        == "INTEGRATOR_SECRET_IT_SUPPORT_PROD_1_CLIENT_SECRET"
    )
    assert env_name("Café.Desk", "a", "token_cache") == "INTEGRATOR_SECRET_CAF__DESK_A_TOKEN_CACHE"


def test_set_get_source_delete() -> None:
    ks = store()
    assert ks.source("Support", "prod", "password") is None
    assert not ks.has("Support", "prod", "password")
    ks.set("Support", "prod", "password", SECRET)
    assert MemoryKeyring.entries() == {(SERVICE, "Support/prod/password"): SECRET}
    assert ks.get("Support", "prod", "password") == SECRET
    assert ks.source("Support", "prod", "password") == "keyring"
    assert ks.has("Support", "prod", "password")
    assert ks.lookup("Support", "prod")("password") == SECRET
    assert ks.delete("Support", "prod", "password") is True
    assert ks.delete("Support", "prod", "password") is False
    assert MemoryKeyring.entries() == {}


def test_delete_all_reports_what_was_there() -> None:
    ks = store()
    ks.set("Support", "prod", "client_secret", "a")
    ks.set("Support", "prod", "refresh_token", "b")
    assert ks.delete_all("Support", "prod", ["password", "client_secret", "refresh_token"]) == [
        "client_secret",
        "refresh_token",
    ]
    assert MemoryKeyring.entries() == {}


def test_empty_secret_is_refused() -> None:
    with pytest.raises(SecretError, match="empty"):
        store().set("Support", "prod", "password", "")


# ------------------------------------------------------------------------------------ lookup order


def test_environment_override_wins_and_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    ks = store()
    ks.set("IT Support", "prod-1", "client_secret", "from-keyring")
    monkeypatch.setenv("INTEGRATOR_SECRET_IT_SUPPORT_PROD_1_CLIENT_SECRET", "  from env \n")
    assert ks.get("IT Support", "prod-1", "client_secret") == "  from env \n"
    assert ks.source("IT Support", "prod-1", "client_secret") == "environment"


def test_empty_environment_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    ks = store()
    ks.set("Support", "prod", "password", "from-keyring")
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD", "")
    assert ks.get("Support", "prod", "password") == "from-keyring"


def test_environment_works_without_any_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    keyring.set_keyring(fail.Keyring())
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD", SECRET)
    assert store().get("Support", "prod", "password") == SECRET


def test_missing_secret_non_interactive_names_the_fix() -> None:
    def never(text: str) -> str:
        raise AssertionError("run must never prompt")

    ks = Keystore(SecretsSettings(), interactive=False, prompter=never)
    with pytest.raises(SecretError) as info:
        ks.get("IT Support", "prod-1", "client_secret")
    msg = str(info.value)
    assert "client_secret" in msg and "'IT Support'" in msg and "'prod-1'" in msg
    assert "INTEGRATOR_SECRET_IT_SUPPORT_PROD_1_CLIENT_SECRET" in msg
    assert 'integrator credentials add "IT Support"' in msg
    assert info.value.exit_code == 4


def test_interactive_get_prompts_with_a_prompt_function() -> None:
    asked: list[str] = []

    def answer(text: str) -> str:
        asked.append(text)
        return SECRET

    ks = Keystore(SecretsSettings(), interactive=True, prompter=answer)
    assert ks.get("Support", "prod", "password") == SECRET
    assert asked == ["Password for Support/prod"]
    assert ks.get("Support", "prod", "client_secret", prompt="Client secret of the app") == SECRET
    assert asked[-1] == "Client secret of the app"
    assert MemoryKeyring.entries() == {}  # a prompted value is returned, not stored


def test_interactive_get_prompts_through_click_hidden_input() -> None:
    from click.testing import CliRunner

    ks = Keystore(SecretsSettings(), interactive=True)
    with CliRunner().isolation(input=SECRET + "\n") as (out, _err, *_):
        value = ks.get("Support", "prod", "password")
    assert value == SECRET
    assert b"Password for Support/prod" in out.getvalue()
    assert SECRET.encode() not in out.getvalue()  # hidden input is not echoed


def test_keyring_value_is_not_prompted_for_in_interactive_mode() -> None:
    ks = Keystore(SecretsSettings(), interactive=True, prompter=lambda text: "typed")
    ks.set("Support", "prod", "password", SECRET)
    assert ks.get("Support", "prod", "password") == SECRET


# ------------------------------------------------------------------------------- unusable backends


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux", ["halo-integrator[headless]", CRYPTFILE, "master_key_file", "INTEGRATOR_KEYRING_KEY",
                   "chmod 600", "INTEGRATOR_SECRET_"]),
        ("win32", ["Credential Manager", "Run whether user is logged on or not", "same Windows account",
                   "INTEGRATOR_SECRET_"]),
        ("darwin", ["LaunchAgent", "cron", "keychain", "INTEGRATOR_SECRET_"]),
    ],
)
def test_no_backend_help_names_the_fix_for_each_os(platform: str, expected: list[str]) -> None:
    text = no_backend_help(platform, env_var="INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD")
    for phrase in expected:
        assert phrase in text
    assert "INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD" in text


@pytest.mark.parametrize(
    ("backend", "words"),
    [(fail.Keyring(), "found none"), (null.Keyring(), "disabled")],
    ids=["fail", "null"],
)
def test_fail_and_null_backends_are_one_clear_error(backend: object, words: str) -> None:
    keyring.set_keyring(backend)  # type: ignore[arg-type]
    ks = store()
    for call in (
        ks.check_backend,
        lambda: ks.get("Support", "prod", "password"),
        lambda: ks.set("Support", "prod", "password", SECRET),
        lambda: ks.source("Support", "prod", "password"),
    ):
        with pytest.raises(SecretError) as info:
            call()
        msg = str(info.value)
        assert words in msg
        assert no_backend_help(sys.platform).split(";")[0] in msg
        assert SECRET not in msg


def test_missing_secret_with_no_backend_names_that_secrets_variable() -> None:
    keyring.set_keyring(null.Keyring())
    with pytest.raises(SecretError) as info:
        store().get("Support", "prod", "password")
    assert "INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD" in str(info.value)


def chain_of(*members: object) -> ChainerBackend:
    """keyring's chainer holding exactly these members (keyring's own finds them on the system)."""
    return type("Chain", (ChainerBackend,), {"backends": list(members)})()  # type: ignore[no-any-return]


def test_chainer_with_no_usable_member_is_an_error() -> None:
    keyring.set_keyring(chain_of())  # what keyring builds when nothing is viable
    with pytest.raises(SecretError, match="none of its backends can be used here") as info:
        store().check_backend()
    assert "master_key_file" in str(info.value) or sys.platform != "linux"


def test_chainer_members_that_cannot_work_are_left_out() -> None:
    keyring.set_keyring(chain_of(null.Keyring(), MemoryKeyring()))
    ks = store()
    assert ks.check_backend() == "halo_integrator.testing_keyring.MemoryKeyring"
    ks.set("Support", "prod", "password", SECRET)
    assert ks.get("Support", "prod", "password") == SECRET


def test_pinned_backend_by_class_path_wins_over_keyrings_choice() -> None:
    keyring.set_keyring(fail.Keyring())
    ks = store(backend="halo_integrator.testing_keyring.MemoryKeyring")
    assert ks.check_backend() == "halo_integrator.testing_keyring.MemoryKeyring"
    ks.set("Support", "prod", "password", SECRET)
    again = store(backend="halo_integrator.testing_keyring.MemoryKeyring")
    assert again.get("Support", "prod", "password") == SECRET


@pytest.mark.parametrize("path", ["keyring.backends.null.Keyring", "keyring.backends.fail.Keyring"])
def test_pinning_the_null_or_fail_backend_is_an_error(path: str) -> None:
    with pytest.raises(SecretError, match="No usable keyring backend"):
        store(backend=path).check_backend()


def test_pinned_secret_service_without_dbus_says_why() -> None:
    # conftest removes DBUS_SESSION_BUS_ADDRESS, as under cron
    with pytest.raises(SecretError) as info:
        store(backend="keyring.backends.SecretService.Keyring").check_backend()
    msg = str(info.value)
    assert "cannot be used here" in msg
    assert "DBUS_SESSION_BUS_ADDRESS" in msg or "SecretService" in msg


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("CryptFileKeyring", "not a dotted class path"),
        ("no_such_module_here.Keyring", "Install the package that provides the module"),
        ("keyrings.cryptfile.no_such_module.Keyring", "pip install 'halo-integrator[headless]'"),
        ("keyrings.alt.no_such_module.Keyring", "pip install keyrings.alt"),
        ("keyring.backends.null.NoSuchClass", "no keyring backend class named"),
        ("os.path", "no keyring backend class named"),
    ],
)
def test_bad_backend_class_path(path: str, words: str) -> None:
    with pytest.raises(SecretError) as info:
        store(backend=path).check_backend()
    assert words in str(info.value)


# --------------------------------------------------------------------------------------- plain text


PLAINTEXT_BACKENDS = [
    pytest.param(
        "keyrings.alt.file.PlaintextKeyring",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("keyrings.alt") is None,
            reason="keyrings.alt is not installed (a test-only package: pip install keyrings.alt)",
        ),
        id="keyrings.alt",
    ),
    pytest.param("keyrings.cryptfile.file.PlaintextKeyring", marks=needs_cryptfile, id="keyrings.cryptfile"),
]


@pytest.mark.parametrize("path", PLAINTEXT_BACKENDS)
def test_plaintext_refused_without_opt_in(path: str) -> None:
    with pytest.raises(SecretError) as info:
        store(backend=path).set("Support", "prod", "password", SECRET)
    assert "allow_plaintext = true" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("path", PLAINTEXT_BACKENDS)
def test_plaintext_allowed_with_opt_in_and_warned(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "plain.cfg"
    monkeypatch.setenv("KEYRING_PROPERTY_FILE_PATH", str(target))
    caplog.set_level(logging.DEBUG, logger="halo_integrator.keystore")
    ks = store(backend=path, allow_plaintext=True)
    ks.set("Support", "prod", "password", SECRET)
    assert target.exists()
    big = big_secret(5_000)
    ks.set("Support", "prod", "token_cache", big)
    again = store(backend=path, allow_plaintext=True)
    assert again.get("Support", "prod", "password") == SECRET
    assert again.get("Support", "prod", "token_cache") == big
    assert again.delete("Support", "prod", "token_cache")
    assert "token_cache" not in target.read_text()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "PLAIN TEXT" in r.getMessage()]
    assert len(warnings) == 2  # once per opened keystore
    assert str(target) in warnings[0].getMessage()
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_plaintext_chain_member_is_left_out_without_opt_in() -> None:
    class PlaintextLookalike(MemoryKeyring):
        """Named like a plain-text backend."""

    keyring.set_keyring(chain_of(PlaintextLookalike(), null.Keyring()))
    with pytest.raises(SecretError, match="plain text"):
        store().check_backend()
    assert "PlaintextLookalike" in store(allow_plaintext=True).check_backend()


# ---------------------------------------------------------------------------------- encrypted file


@pytest.fixture
def fast_cryptfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2 parameters so the tests run in milliseconds (the default is ~0.7 s per operation)."""
    from keyrings.cryptfile.cryptfile import CryptFileKeyring

    monkeypatch.setattr(CryptFileKeyring, "time_cost", 1)
    monkeypatch.setattr(CryptFileKeyring, "memory_cost", 64)
    monkeypatch.setattr(CryptFileKeyring, "parallelism", 1)


@pytest.fixture
def no_getpass(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("getpass() must never be called")

    monkeypatch.setattr(getpass, "getpass", refuse)


def key_file(directory: Path, mode: int = 0o600, key: str = "correct horse battery staple") -> Path:
    path = directory / "keyring.key"
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


@needs_cryptfile
def test_cryptfile_with_master_key_file(
    tmp_path: Path, fast_cryptfile: None, no_getpass: None, _isolated_home: Path
) -> None:
    key_file(tmp_path)
    ks = Keystore(SecretsSettings(backend=CRYPTFILE, master_key_file="keyring.key"), base_dir=tmp_path)
    assert ks.check_backend() == CRYPTFILE
    ks.set("Support", "prod", "password", SECRET)
    big = big_secret(3_000)
    ks.set("Support", "prod", "token_cache", big)
    files = list(_isolated_home.rglob("cryptfile_pass.cfg"))
    assert len(files) == 1  # under the temporary HOME: keyring's default data root
    assert SECRET not in files[0].read_text()
    again = Keystore(SecretsSettings(backend=CRYPTFILE, master_key_file="keyring.key"), base_dir=tmp_path)
    assert again.get("Support", "prod", "password") == SECRET
    assert again.get("Support", "prod", "token_cache") == big


@needs_cryptfile
def test_cryptfile_with_master_key_from_environment(
    monkeypatch: pytest.MonkeyPatch, fast_cryptfile: None, no_getpass: None
) -> None:
    monkeypatch.setenv("INTEGRATOR_KEYRING_KEY", "key from the environment")
    ks = store(backend=CRYPTFILE)
    ks.set("Support", "prod", "password", SECRET)
    assert store(backend=CRYPTFILE).get("Support", "prod", "password") == SECRET


@needs_cryptfile
def test_cryptfile_key_file_readable_by_others_is_refused(
    tmp_path: Path, fast_cryptfile: None, no_getpass: None
) -> None:
    path = key_file(tmp_path, mode=0o644)
    ks = Keystore(SecretsSettings(backend=CRYPTFILE, master_key_file=str(path)))
    with pytest.raises(SecretError) as info:
        ks.check_backend()
    assert f"chmod 600 {path}" in str(info.value)
    assert "correct horse" not in str(info.value)


@needs_cryptfile
def test_cryptfile_without_a_key_is_an_error_not_a_prompt(fast_cryptfile: None, no_getpass: None) -> None:
    with pytest.raises(SecretError) as info:
        store(backend=CRYPTFILE).get("Support", "prod", "password")
    assert "master_key_file" in str(info.value) and "INTEGRATOR_KEYRING_KEY" in str(info.value)


@needs_cryptfile
def test_cryptfile_missing_key_file_and_wrong_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_cryptfile: None, no_getpass: None
) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        settings = SecretsSettings(backend=CRYPTFILE, master_key_file="nope.key")
        Keystore(settings, base_dir=tmp_path).check_backend()
    monkeypatch.setenv("INTEGRATOR_KEYRING_KEY", "first key")
    store(backend=CRYPTFILE).set("Support", "prod", "password", SECRET)
    monkeypatch.setenv("INTEGRATOR_KEYRING_KEY", "another key")
    with pytest.raises(SecretError, match="does not open the encrypted keyring file") as info:
        store(backend=CRYPTFILE).get("Support", "prod", "password")
    assert "another key" not in str(info.value)


@needs_cryptfile
def test_keyrings_chainer_with_cryptfile_gets_the_key_instead_of_prompting(
    monkeypatch: pytest.MonkeyPatch, fast_cryptfile: None, no_getpass: None
) -> None:
    """The trap of research 1.2: with cryptfile installed, keyring's default is a chainer led by it."""
    from keyrings.cryptfile.cryptfile import CryptFileKeyring

    keyring.set_keyring(chain_of(CryptFileKeyring()))
    with pytest.raises(SecretError, match="needs a master key"):
        store().check_backend()
    monkeypatch.setenv("INTEGRATOR_KEYRING_KEY", "k")
    ks = store()
    ks.set("Support", "prod", "password", SECRET)
    assert ks.get("Support", "prod", "password") == SECRET


CHILD = textwrap.dedent(
    """
    import sys
    from halo_integrator.config import SecretsSettings
    from halo_integrator.errors import SecretError
    from halo_integrator.keystore import Keystore
    ks = Keystore(SecretsSettings(backend="keyrings.cryptfile.cryptfile.CryptFileKeyring"))
    try:
        if sys.argv[1] == "set":
            ks.set("Support", "prod", "password", "child-secret")
        print(ks.get("Support", "prod", "password"))
    except SecretError as exc:
        print("SecretError:", exc)
        sys.exit(exc.exit_code)
    """
)


@needs_cryptfile
def test_cryptfile_works_with_no_terminal(_isolated_home: Path) -> None:
    """A real child process, default Argon2 costs, no controlling terminal and stdin at EOF, as under cron."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATOR_")}

    def child(*args: str, key: str | None) -> subprocess.CompletedProcess[str]:
        e = dict(env, INTEGRATOR_KEYRING_KEY=key) if key else env
        return subprocess.run(
            [sys.executable, "-c", CHILD, *args], env=e, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, start_new_session=True, timeout=120,
        )

    done = child("set", key="cron master key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child-secret"
    done = child("get", key="cron master key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child-secret"
    done = child("get", key=None)
    assert done.returncode == 4
    assert "SecretError" in done.stdout and "INTEGRATOR_KEYRING_KEY" in done.stdout
    assert "EOFError" not in done.stdout + done.stderr


# ------------------------------------------------------------------------------------ large secrets


def test_large_secret_round_trip_in_pieces() -> None:
    ks = store()
    value = big_secret(20_000)
    ks.set("Support", "google", "token_cache", value)
    entries = MemoryKeyring.entries()
    header = entries[(SERVICE, "Support/google/token_cache")]
    pieces = {u: v for (_, u), v in entries.items() if u.startswith("Support/google/token_cache#")}
    assert header == f"chunked:{len(pieces)}:{hashlib.sha256(value.encode()).hexdigest()}"
    assert len(pieces) >= 20
    for piece in pieces.values():
        assert len(piece) <= 1000
        assert len(piece.encode("utf-16-le")) <= 2000  # Windows Credential Manager allows 2,560 bytes
    assert ks.get("Support", "google", "token_cache") == value
    assert ks.source("Support", "google", "token_cache") == "keyring"
    assert ks.delete("Support", "google", "token_cache") is True
    assert MemoryKeyring.entries() == {}


def test_astral_characters_are_counted_as_two_utf16_units() -> None:
    ks = store()
    value = "😀" * 700  # 700 characters but 1,400 UTF-16 units: too big for one Windows entry
    ks.set("Support", "prod", "password", value)
    pieces = [v for (_, u), v in MemoryKeyring.entries().items() if "#" in u]
    assert len(pieces) == 2 and all(len(p.encode("utf-16-le")) <= 2000 for p in pieces)
    assert ks.get("Support", "prod", "password") == value


def test_replacing_a_large_secret_removes_stale_pieces() -> None:
    ks = store()
    ks.set("Support", "prod", "token_cache", big_secret(20_000))
    ks.set("Support", "prod", "token_cache", big_secret(3_000))
    assert len([u for (_, u) in MemoryKeyring.entries() if "#" in u]) == 4
    ks.set("Support", "prod", "token_cache", "small now")
    assert MemoryKeyring.entries() == {(SERVICE, "Support/prod/token_cache"): "small now"}
    assert ks.get("Support", "prod", "token_cache") == "small now"


def test_a_value_that_looks_like_a_header_round_trips() -> None:
    ks = store()
    value = "chunked:1:" + "0" * 64
    ks.set("Support", "prod", "password", value)
    assert ks.get("Support", "prod", "password") == value


def test_corrupted_piece_is_an_error() -> None:
    ks = store()
    ks.set("Support", "prod", "token_cache", big_secret(5_000))
    MemoryKeyring().set_password(SERVICE, "Support/prod/token_cache#3", "tampered")
    with pytest.raises(SecretError, match="damaged") as info:
        ks.get("Support", "prod", "token_cache")
    assert "integrator credentials add Support" in str(info.value)
    assert "tampered" not in str(info.value)


def test_missing_piece_is_an_error_and_delete_still_cleans_up() -> None:
    ks = store()
    ks.set("Support", "prod", "token_cache", big_secret(5_000))
    MemoryKeyring().delete_password(SERVICE, "Support/prod/token_cache#2")
    with pytest.raises(SecretError, match="piece 2 of 6 is missing"):
        ks.get("Support", "prod", "token_cache")
    assert ks.delete("Support", "prod", "token_cache") is True
    assert MemoryKeyring.entries() == {}


# ------------------------------------------------------------------------------ errors and leaks


class LockedKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked("Failed to unlock the collection!")


class EchoingKeyring(MemoryKeyring):
    """A badly behaved backend whose error repeats what it was given."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError(f"org.freedesktop.DBus.Error.NoReply while storing {password!r}")


def test_locked_keyring_is_a_secret_error_with_the_backend_name() -> None:
    keyring.set_keyring(LockedKeyring())
    with pytest.raises(SecretError) as info:
        store().get("Support", "prod", "password")
    msg = str(info.value)
    assert "LockedKeyring" in msg and "locked" in msg and "Support/prod/password" in msg


def test_backend_error_never_carries_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="halo_integrator")  # CLI tests may have set it higher
    keyring.set_keyring(EchoingKeyring())
    for value in (SECRET, SECRET * 100):  # a small one and a chunked one
        with pytest.raises(SecretError) as info:
            store().set("Support", "prod", "password", value)
        assert SECRET not in str(info.value)
        assert "NoReply" in str(info.value) and "EchoingKeyring" in str(info.value)
        assert info.value.__suppress_context__
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_backend_error_echoing_part_of_the_secret_is_withheld() -> None:
    class PartialEcho(MemoryKeyring):
        def set_password(self, service: str, username: str, password: str) -> None:
            raise OSError(f"write failed near ...{password[3:15]}...")

    keyring.set_keyring(PartialEcho())
    with pytest.raises(SecretError) as info:
        store().set("Support", "prod", "password", SECRET)
    assert SECRET[3:15] not in str(info.value)
    assert "details withheld" in str(info.value) and "OSError" in str(info.value)


def test_secret_never_appears_in_logs_or_errors(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="halo_integrator")  # CLI tests may have set it higher
    big = SECRET * 200
    ks = store()
    messages: list[str] = []
    ks.set("Support", "prod", "password", SECRET)
    ks.set("Support", "prod", "token_cache", big)
    assert ks.get("Support", "prod", "password") == SECRET
    assert ks.get("Support", "prod", "token_cache") == big
    ks.source("Support", "prod", "password")
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_PROD_CLIENT_SECRET", SECRET)
    assert ks.get("Support", "prod", "client_secret") == SECRET
    ks.set("Support", "prod", "client_secret", SECRET)  # warns that the variable overrides it
    MemoryKeyring().set_password(SERVICE, "Support/prod/token_cache#2", SECRET)
    with pytest.raises(SecretError) as info:
        ks.get("Support", "prod", "token_cache")
    messages.append(str(info.value))
    ks.delete_all("Support", "prod", ["password", "token_cache", "client_secret"])
    with pytest.raises(SecretError) as info:
        ks.get("Support", "prod", "password")
    messages.append(str(info.value))

    logged = [r.getMessage() for r in caplog.records]
    assert any("password for Support/prod from keyring" in m for m in logged)
    assert any("client_secret for Support/prod from environment" in m for m in logged)
    assert any("overrides" in m for m in logged)
    for text in logged + messages:
        assert SECRET not in text


def test_keystore_is_the_only_module_importing_keyring() -> None:
    src = Path(keystore.__file__).parent
    offenders = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if p.name not in ("keystore.py", "testing_keyring.py")
        and any(
            line.strip().startswith(("import keyring", "from keyring"))
            for line in p.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []
