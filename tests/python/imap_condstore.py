#!/usr/bin/env python3
"""Client-side RFC 7162 CONDSTORE / QRESYNC scenarios run against a live
spate by tests/imap_condstore.rs, with Python's imaplib.

Usage: imap_condstore.py SCENARIO HOST PORT --user U --password P

Scenarios (INBOX holds the six messages the Rust test delivered):
  resync   two sessions: A changes flags, B (CONDSTORE) asks what changed
           with CHANGEDSINCE and SEARCH MODSEQ; a conditional STORE of B
           on a message A changed meanwhile; STATUS HIGHESTMODSEQ after
           each change.
  qresync  B (ENABLE QRESYNC) learns HIGHESTMODSEQ and leaves; A expunges
           and flags; B comes back with SELECT (QRESYNC ...) and UID FETCH
           (CHANGEDSINCE n VANISHED); then expunges seen live as VANISHED.
  status   STATUS INBOX (UIDVALIDITY HIGHESTMODSEQ MESSAGES).

Prints ONE line of JSON with what it saw. It asserts nothing about spate:
the Rust test does. Standard library only.
"""

import argparse
import imaplib
import json
import re
import sys

TIMEOUT = 30


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    if isinstance(b, (list, tuple)):
        return [text(x) for x in b]
    if b is None:
        return None
    return str(b)


def login(args):
    c = imaplib.IMAP4(args.host, args.port, timeout=TIMEOUT)
    c.login(args.user, args.password)
    return c


def cmd(c, name, *params):
    """Runs one command; its tagged result and the untagged responses it
    brought (imaplib keeps them by name), which are then forgotten."""
    c.untagged_responses.clear()
    typ, data = c._simple_command(name, *params)
    untagged = {k: text(v) for k, v in c.untagged_responses.items()}
    c.untagged_responses.clear()
    return {"typ": typ, "data": text(data), "untagged": untagged}


def select(c, mailbox, params=None, examine=False):
    args = [mailbox] + ([params] if params else [])
    r = cmd(c, "EXAMINE" if examine else "SELECT", *args)
    if r["typ"] == "OK":
        c.state = "SELECTED"
    return r


def highest(c):
    typ, data = c.status("INBOX", "(HIGHESTMODSEQ)")
    return int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1))


def resync(args):
    out = {}
    a = login(args)
    a.select("INBOX")
    b = login(args)
    out["enable"] = cmd(b, "ENABLE", "CONDSTORE")
    out["b_select"] = select(b, "INBOX", "(CONDSTORE)")
    out["b_modseqs"] = cmd(b, "FETCH", "1:*", "(MODSEQ)")
    steps = [highest(a)]
    a.store("2", "+FLAGS", "(\\Flagged)")
    steps.append(highest(a))
    a.store("4", "+FLAGS", "(\\Answered)")
    steps.append(highest(a))
    since = int(out["b_select"]["untagged"]["HIGHESTMODSEQ"][0])
    out["b_changed"] = cmd(b, "UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %d)" % since)
    out["b_unchanged"] = cmd(b, "UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %d)" % steps[-1])
    out["b_search"] = cmd(b, "UID", "SEARCH", "MODSEQ", str(since + 1))
    # B's knowledge is now steps[-1]; A changes message 1 after it.
    a.store("1", "+FLAGS", "(\\Seen)")
    steps.append(highest(a))
    out["b_conditional"] = cmd(
        b, "STORE", "1,3", "(UNCHANGEDSINCE %d)" % steps[-2], "+FLAGS.SILENT", "(\\Deleted)"
    )
    steps.append(highest(a))
    out["b_flags_after"] = cmd(b, "FETCH", "1,3", "(FLAGS)")
    out["steps"] = steps
    for c in (a, b):
        c.logout()
    return out


def qresync(args):
    out = {}
    b = login(args)
    out["enable"] = cmd(b, "ENABLE", "QRESYNC")
    first = select(b, "INBOX")
    out["b_first"] = first
    validity = int(first["untagged"]["UIDVALIDITY"][0])
    known = int(first["untagged"]["HIGHESTMODSEQ"][0])
    cmd(b, "UNSELECT")
    b.state = "AUTH"

    a = login(args)
    a.select("INBOX")
    a.store("2,4", "+FLAGS", "(\\Deleted)")
    a.expunge()
    a.uid("STORE", "3", "+FLAGS", "(\\Flagged)")

    out["b_resync"] = select(b, "INBOX", "(QRESYNC (%d %d))" % (validity, known))
    out["b_resync_known"] = select(b, "INBOX", "(QRESYNC (%d %d 3:6))" % (validity, known))
    out["b_vanished_fetch"] = cmd(
        b, "UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %d VANISHED)" % known
    )
    # Live: A expunges UID 5; B hears VANISHED 5, not EXPUNGE.
    a.uid("STORE", "5", "+FLAGS", "(\\Deleted)")
    a.expunge()
    out["b_noop"] = cmd(b, "NOOP")
    # B's own expunge: VANISHED and the new HIGHESTMODSEQ in the tagged OK.
    b.uid("STORE", "6", "+FLAGS", "(\\Deleted)")
    out["b_expunge"] = cmd(b, "EXPUNGE")
    out["a_noop"] = cmd(a, "NOOP")
    out["b_reselect"] = select(b, "INBOX", examine=True)
    for c in (a, b):
        c.logout()
    return out


def status(args):
    c = login(args)
    typ, data = c.status("INBOX", "(UIDVALIDITY HIGHESTMODSEQ MESSAGES)")
    c.logout()
    return {"typ": typ, "data": text(data)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["resync", "qresync", "status"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    args = p.parse_args()
    try:
        out = {"resync": resync, "qresync": qresync, "status": status}[args.scenario](args)
    except Exception as e:  # reported to the Rust test, which fails
        out = {"exception": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
