#!/usr/bin/env python3
"""THREAD and QUOTA scenarios run against a live spate by the Rust
integration tests (tests/imap_thread_quota.rs), with Python's imaplib.

Usage: imap_thread_quota.py SCENARIO HOST PORT --user U --password P
                            [--append-size N]

Scenarios:
  thread  CAPABILITY, SELECT INBOX, THREAD REFERENCES and ORDEREDSUBJECT
          over ALL, UID THREAD REFERENCES, THREAD over a search that
          matches 2:7, and THREAD with an unknown algorithm.
  quota   GETQUOTAROOT INBOX and GETQUOTA ""; with --append-size, an
          APPEND of that many octets to INBOX, then GETQUOTAROOT again;
          SETQUOTA; STATUS INBOX (DELETED DELETED-STORAGE).

Prints ONE line of JSON with what it saw. It asserts nothing about spate
itself: the Rust test does. Standard library only.
"""

import argparse
import imaplib
import json
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


def call(f, *args):
    """[typ, data] of an imaplib call; a BAD (which imaplib raises) as
    ["BAD", message]."""
    try:
        typ, data = f(*args)
        return [typ, text(data)]
    except imaplib.IMAP4.error as e:
        return ["BAD", str(e)]


def login(args):
    m = imaplib.IMAP4(args.host, args.port, timeout=TIMEOUT)
    m.login(args.user, args.password)
    return m


def thread(args, out):
    m = login(args)
    out["capabilities"] = text(m.capabilities)
    m.select("INBOX")
    out["references"] = call(m.thread, "REFERENCES", "UTF-8", "ALL")
    out["orderedsubject"] = call(m.thread, "ORDEREDSUBJECT", "US-ASCII", "ALL")
    out["uid_references"] = call(m.uid, "THREAD", "REFERENCES", "UTF-8", "ALL")
    out["uids"] = call(m.uid, "SEARCH", "ALL")
    out["part"] = call(m.thread, "REFERENCES", "UTF-8", "2:7")
    out["unknown"] = call(m.thread, "SHUFFLE", "UTF-8", "ALL")
    m.logout()


def quota(args, out):
    m = login(args)
    out["capabilities"] = text(m.capabilities)
    out["getquotaroot"] = call(m.getquotaroot, "INBOX")
    out["getquota"] = call(m.getquota, '""')
    if args.append_size:
        body = b"Subject: appended\r\n\r\n" + b"x" * args.append_size + b"\r\n"
        out["append"] = call(m.append, "INBOX", None, None, body)
        out["after_append"] = call(m.getquotaroot, "INBOX")
    out["setquota"] = call(m.setquota, '""', "(STORAGE 999999)")
    out["status"] = call(m.status, "INBOX", "(DELETED DELETED-STORAGE)")
    m.logout()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["thread", "quota"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--append-size", type=int, default=0)
    args = p.parse_args()
    out = {"scenario": args.scenario}
    try:
        {"thread": thread, "quota": quota}[args.scenario](args, out)
    except Exception as e:  # reported, for the Rust test's message
        out["exception"] = repr(e)
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
