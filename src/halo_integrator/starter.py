"""The commented starter config that `integrator init` writes."""

STARTER_CONFIG = """\
# halo-integrator configuration. Every key is optional unless marked; `integrator doctor` checks this file.
# Secrets (passwords, client secrets, tokens) are never kept here: they live in the OS keyring
# (`integrator credentials add MAILBOX`), or in INTEGRATOR_SECRET_<MAILBOX>_<CREDENTIAL>_<KIND> variables.

# Which instance this installation is (production, uat, dev). A run only uses the credentials of its
# instance, and those with no instance. Override with --instance or $INTEGRATOR_INSTANCE.
instance = "production"

# The ticket store, relative to this file.
database = "integrator.db"

[services]
incoming = true   # false: `integrator run` imports nothing and says so
outgoing = true   # false: nothing is sent; acknowledgements stay queued

[logs]
keep_days = 90    # inbound/outbound log rows older than this are pruned by `run` (tickets are kept)

# A mailbox that needs no server: every .eml file in the folder becomes a ticket or a ticket update.
[[mailboxes]]
name = "Demo"
address = "support@example.com"
connection = "folder"     # imap | pop3 | folder (ews | microsoft365 | google: coming)
path = "mail"             # a directory of .eml files, or a Maildir (new/ and cur/)

[mailboxes.incoming]
log_new_tickets = true            # false: only replies to existing tickets are taken
update_existing = true
after_import = "move_to_deleted"  # move_to_deleted | delete | move_to_folder | mark_read
ticket_tag = "[#{id}]"            # how ticket numbers appear in subjects
max_email_mb = 50                 # larger emails are quarantined, raw bytes kept

# An IMAP mailbox (add one interactively with `integrator mailbox add`):
#
# [[mailboxes]]
# name = "Support"
# address = "support@example.com"
# connection = "imap"
#
# [[mailboxes.credentials]]
# name = "prod"
# instance = "production"
# host = "imap.example.com"
# port = 993
# security = "ssl"                # ssl | starttls | none
# username = "support@example.com"
# auth = "password"               # password | oauth2
"""
