#!/usr/bin/env bash
# start-dovecot.sh - start a throw-away Dovecot (IMAP, IMAPS, POP3, POP3S) on 127.0.0.1
#
# Usage:  start-dovecot.sh DIR [PORT_BASE]
#   DIR        working dir for this instance (created if missing; use a fresh mktemp -d)
#   PORT_BASE  optional: use PORT_BASE+143 (imap), +993 (imaps), +110 (pop3), +995 (pop3s);
#              without it four free ports are picked at random.
# Env:
#   DOVECOT_USERS   space-separated user:password pairs (default "alice:alicepw bob:bobpw")
#   DOVECOT_TOKENS  space-separated user:token pairs accepted ONLY by SASL XOAUTH2/OAUTHBEARER
#                   (default "alice:alice-oauth-token bob:bob-oauth-token")
#   DOVECOT_ANY_USER=1 (default) also accept ANY username U with password "pw-U" (fresh,
#                   empty mailbox per test without editing files); 0 disables it
#   DOVECOT_FOREGROUND=1  print the ports, then exec `dovecot -F` (for a supervisor / pytest
#                         fixture that wants to own the process). Default: daemonize and return.
#   DOVECOT_FSYNC   mail_fsync value (default "never": fastest; use "optimized" for realism)
#   DOVECOT_EXTRA_CONF  extra config lines appended at the end (e.g. an imap_capability override
#                   that hides MOVE, to test clients on servers without it)
#
# Prints shell-evaluable lines (also written to DIR/ports.env):
#   DOVECOT_DIR=... DOVECOT_CONF=... DOVECOT_PID=... IMAP_PORT=... IMAPS_PORT=... POP3_PORT=...
#   POP3S_PORT=... DOVECOT_CA=DIR/cert.pem DOVECOT_LOG=DIR/dovecot.log
# Stop it with:  kill "$(cat DIR/run/master.pid)"    (or: doveadm -c DIR/dovecot.conf stop)
# (the master takes ~1 s to exit after SIGTERM). If the random ports were grabbed meanwhile,
# dovecot fails with "Address already in use" and this script exits non-zero: just rerun.
#
# Needs the Debian packages dovecot-imapd, dovecot-pop3d (which bring dovecot-core and its
# system users dovecot/dovenull), openssl and python3 (only to find free ports).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 DIR [PORT_BASE]" >&2
  exit 2
fi
DIR=$(realpath -m -- "$1")
PORT_BASE=${2:-}
USERS=${DOVECOT_USERS:-"alice:alicepw bob:bobpw"}
TOKENS=${DOVECOT_TOKENS:-"alice:alice-oauth-token bob:bob-oauth-token"}
ANY_USER=${DOVECOT_ANY_USER:-1}
FSYNC=${DOVECOT_FSYNC:-never}

command -v dovecot >/dev/null || { echo "dovecot not installed (apt-get install dovecot-imapd dovecot-pop3d)" >&2; exit 1; }

mkdir -p "$DIR"/{run,state,home}
# Every parent of DIR must be world-searchable (o+x): Dovecot's auth process and the mail
# processes run as other uids. pytest's tmp_path (/tmp/pytest-of-root/, 0700) is NOT; use
# tempfile.mkdtemp() / mktemp -d directly under /tmp instead.
p=$(dirname "$DIR")
while [[ "$p" != / ]]; do
  if [[ $(( 0$(stat -c %a "$p") & 01 )) -eq 0 ]]; then
    echo "start-dovecot.sh: parent dir $p is not world-searchable (o+x); pick a DIR under /tmp" >&2
    exit 1
  fi
  p=$(dirname "$p")
done
# mail processes run as a non-root uid and must be able to traverse DIR (mktemp -d makes it 0700)
chmod 0755 "$DIR"

if [[ $(id -u) -eq 0 ]]; then
  getent passwd dovecot dovenull >/dev/null || { echo "users dovecot/dovenull missing (they come with dovecot-core)" >&2; exit 1; }
  # Dovecot never accesses mail as uid 0 ("userdb returned 0 as uid"), so use nobody:nogroup.
  MAIL_USER=nobody
  MAIL_GROUP=$(id -gn nobody)
  INTERNAL_USER=dovecot
  INTERNAL_GROUP=dovecot
  LOGIN_USER=dovenull
  chown "$MAIL_USER:$MAIL_GROUP" "$DIR/home"
else
  # unprivileged start: everything runs as the invoking user
  MAIL_USER=$(id -un)
  MAIL_GROUP=$(id -gn)
  INTERNAL_USER=$MAIL_USER
  INTERNAL_GROUP=$MAIL_GROUP
  LOGIN_USER=$MAIL_USER
fi

if [[ -n "$PORT_BASE" ]]; then
  IMAP_PORT=$((PORT_BASE + 143)); IMAPS_PORT=$((PORT_BASE + 993))
  POP3_PORT=$((PORT_BASE + 110)); POP3S_PORT=$((PORT_BASE + 995))
else
  read -r IMAP_PORT IMAPS_PORT POP3_PORT POP3S_PORT < <(python3 -I -S - <<'PY'
import socket
socks = []
for _ in range(4):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()
PY
)
fi

# self-signed certificate, valid for localhost and 127.0.0.1
if [[ ! -s "$DIR/cert.pem" ]]; then
  # EC P-256: ~10 ms to generate (RSA-2048 takes 0.2-1 s on a small VM)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
  chmod 0600 "$DIR/key.pem"   # read by the master as root before dropping privileges
fi

# passwd-files, one per SASL mechanism (the passdb path below is DIR/passdb.%Lm, %Lm = the
# mechanism in lower case): passwords for PLAIN/LOGIN (also IMAP LOGIN and POP3 USER/PASS),
# tokens for XOAUTH2/OAUTHBEARER. Format user:{PLAIN}secret ; must be readable by the auth
# process (INTERNAL_USER). Dovecot re-reads a changed file, but at most once per second.
: > "$DIR/passdb.plain"
for up in $USERS; do
  printf '%s:{PLAIN}%s\n' "${up%%:*}" "${up#*:}" >> "$DIR/passdb.plain"
done
: > "$DIR/passdb.xoauth2"
for ut in $TOKENS; do
  printf '%s:{PLAIN}%s\n' "${ut%%:*}" "${ut#*:}" >> "$DIR/passdb.xoauth2"
done
ln -sf passdb.plain "$DIR/passdb.login"
ln -sf passdb.xoauth2 "$DIR/passdb.oauthbearer"
chmod 0644 "$DIR/passdb.plain" "$DIR/passdb.xoauth2"

ANY_USER_PASSDB=""
if [[ "$ANY_USER" == 1 ]]; then
  ANY_USER_PASSDB='# catch-all: any user name U logs in with password "pw-U" (static, any mechanism)
passdb {
  driver = static
  args = password=pw-%u
}'
fi

cat > "$DIR/dovecot.conf" <<EOF
# self-contained test instance; includes nothing from /etc/dovecot
instance_name = dovecot-test-$(basename "$DIR")
base_dir = $DIR/run
state_dir = $DIR/state
protocols = imap pop3
listen = 127.0.0.1
log_path = $DIR/dovecot.log
auth_verbose = yes

default_internal_user = $INTERNAL_USER
default_internal_group = $INTERNAL_GROUP
default_login_user = $LOGIN_USER
first_valid_uid = 1

ssl = yes
ssl_cert = <$DIR/cert.pem
ssl_key = <$DIR/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
# failed logins: answered after ~0.5 s instead of 2 s (0.5 s is the floor in Dovecot 2.3)
auth_failure_delay = 0

mail_location = maildir:~/Maildir
mail_fsync = $FSYNC

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/passdb.%Lm
}
$ANY_USER_PASSDB
userdb {
  driver = static
  args = uid=$MAIL_USER gid=$MAIL_GROUP home=$DIR/home/%u
}

namespace inbox {
  inbox = yes
  separator = /
  mailbox Trash {
    special_use = \\Trash
    auto = create
  }
  mailbox Sent {
    special_use = \\Sent
    auto = create
  }
  mailbox Drafts {
    special_use = \\Drafts
    auto = create
  }
  mailbox Junk {
    special_use = \\Junk
    auto = create
  }
}

protocol imap {
  mail_max_userip_connections = 100
}
protocol pop3 {
  pop3_uidl_format = %08Xu%08Xv
}

# chroot = (empty): chroot() needs root; dropping it lets the same config run unprivileged
service imap-login {
  chroot =
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
  chroot =
  inet_listener pop3 {
    port = $POP3_PORT
  }
  inet_listener pop3s {
    port = $POP3S_PORT
    ssl = yes
  }
}
# no growing login delay for an IP after failed logins (auth penalty)
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${DOVECOT_EXTRA_CONF:-}
EOF

if [[ "${DOVECOT_FOREGROUND:-0}" == 1 ]]; then
  ENV_LINES="DOVECOT_DIR=$DIR
DOVECOT_CONF=$DIR/dovecot.conf
DOVECOT_PID=$$
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
POP3_PORT=$POP3_PORT
POP3S_PORT=$POP3S_PORT
DOVECOT_CA=$DIR/cert.pem
DOVECOT_LOG=$DIR/dovecot.log"
  printf '%s\n' "$ENV_LINES" > "$DIR/ports.env"
  printf '%s\n' "$ENV_LINES"
  exec dovecot -F -c "$DIR/dovecot.conf"
fi

dovecot -c "$DIR/dovecot.conf"   # daemonizes; listeners are bound when it returns

# wait (max ~5 s) until the IMAP port answers
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$IMAP_PORT") 2>/dev/null; then break; fi
  sleep 0.05
done

ENV_LINES="DOVECOT_DIR=$DIR
DOVECOT_CONF=$DIR/dovecot.conf
DOVECOT_PID=$(cat "$DIR/run/master.pid")
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
POP3_PORT=$POP3_PORT
POP3S_PORT=$POP3S_PORT
DOVECOT_CA=$DIR/cert.pem
DOVECOT_LOG=$DIR/dovecot.log"
printf '%s\n' "$ENV_LINES" > "$DIR/ports.env"
printf '%s\n' "$ENV_LINES"
