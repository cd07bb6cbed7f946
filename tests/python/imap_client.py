#!/usr/bin/env python3
"""Client-side IMAP scenarios run against a live spate by the Rust
integration tests (tests/imap_clients.rs), with Python's imaplib.

Usage: imap_client.py SCENARIO HOST PORT --user U --password P
                      [--mode plain|starttls|imaps] [--cafile PEM]
                      [--smtp HOST:PORT] [--rcpt ADDR]

Scenarios:
  session   the whole single-session tour: CAPABILITY, LOGIN, LIST,
            SELECT/EXAMINE, FETCH (many items), STORE, SEARCH, COPY/UID
            COPY, MOVE, APPEND, EXPUNGE, CREATE/RENAME/DELETE (with a
            non-ASCII and a hierarchical name), SUBSCRIBE/LSUB, STATUS,
            LOGOUT. Expects INBOX to hold the three messages the Rust test
            delivered (and nothing else).
  fetch     over --mode: LOGIN, SELECT, BODY.PEEK[] of every message, LOGOUT.
  multi     two sessions on INBOX: \\Recent, flag changes and EXPUNGE seen
            by the other session on NOOP.
  idle      IDLE, then a delivery through SMTP (--smtp, --rcpt): the time
            until `* n EXISTS`, then DONE.
  bad       wrong password, unknown command, FETCH before SELECT, path
            traversal in CREATE/SELECT, an oversized literal.
  privacy   LOGIN over plain text (expected refused), then STARTTLS and
            LOGIN.

Prints ONE line of JSON with what it saw; message bytes are base64. It
asserts nothing about spate itself: the Rust test does. Standard library
only.
"""

import argparse
import base64
import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
import sys
import time

TIMEOUT = 30


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    if isinstance(b, (list, tuple)):
        return [text(x) for x in b]
    if b is None:
        return None
    return str(b)


def b64(b):
    return base64.b64encode(b).decode()


def attempt(fn, *args):
    """Runs an imaplib call: [typ, data as text] or ["EXC", message]."""
    try:
        typ, data = fn(*args)
        return [typ, text(data)]
    except (imaplib.IMAP4.error, imaplib.IMAP4.abort) as e:
        return ["EXC", f"{type(e).__name__}: {e}"]


def mutf7(name):
    """Modified UTF-7 (RFC 3501 5.1.3)."""
    out, run = [], []

    def flush():
        if run:
            raw = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def connect(args, mode=None):
    mode = mode or args.mode
    if mode == "imaps":
        m = imaplib.IMAP4_SSL(
            args.host, args.port, ssl_context=context(args.cafile), timeout=TIMEOUT
        )
    else:
        m = imaplib.IMAP4(args.host, args.port, timeout=TIMEOUT)
        if mode == "starttls":
            m.starttls(ssl_context=context(args.cafile))
    return m


def login(args, mode=None):
    m = connect(args, mode)
    m.login(args.user, args.password)
    return m


def pop(m, name):
    """Pops the untagged responses called `name` (as text)."""
    _, data = m.response(name)
    return [x for x in text(data) if x is not None]


def fetch_parts(data):
    """imaplib FETCH data as [[prefix, literal-or-None], ...]."""
    out = []
    for d in data:
        if isinstance(d, tuple):
            out.append([text(d[0]), b64(d[1])])
        elif d is not None and d != b")":
            out.append([text(d), None])
    return out


def uid_of(resp):
    m = re.search(r"UID (\d+)", resp)
    return int(m.group(1)) if m else None


def session(args):
    out = {}
    m = connect(args)
    out["greeting"] = text(m.welcome)
    out["capabilities"] = sorted(m.capabilities)
    out["login"] = attempt(m.login, args.user, args.password)
    out["capability_after"] = attempt(m.capability)
    out["list"] = attempt(m.list)

    # EXAMINE: read-only, nothing changes (\Seen stays off after BODY[]).
    typ, data = m.select("INBOX", readonly=True)
    out["examine"] = {
        "typ": typ,
        "exists": text(data),
        "uidvalidity": pop(m, "UIDVALIDITY"),
        "uidnext": pop(m, "UIDNEXT"),
        "readonly": pop(m, "READ-ONLY"),
        "flags": pop(m, "FLAGS"),
    }
    out["examine_fetch_body"] = attempt(m.fetch, "1", "(BODY[TEXT])")
    out["examine_flags"] = attempt(m.fetch, "1", "(FLAGS)")
    out["examine_store"] = attempt(m.store, "1", "+FLAGS", "(\\Flagged)")
    m.close()

    typ, data = m.select("INBOX")
    out["select"] = {
        "typ": typ,
        "exists": text(data),
        "uidvalidity": pop(m, "UIDVALIDITY"),
        "uidnext": pop(m, "UIDNEXT"),
        "recent": pop(m, "RECENT"),
        "permanentflags": pop(m, "PERMANENTFLAGS"),
    }
    typ, data = m.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    out["fetch_meta"] = [typ, text(data)]
    typ, data = m.fetch("1:*", "(ENVELOPE)")
    out["fetch_envelope"] = [typ, text(data)]
    typ, data = m.fetch("1:*", "(BODYSTRUCTURE)")
    out["fetch_bodystructure"] = [typ, text(data)]
    typ, data = m.fetch("1:*", "(UID BODY.PEEK[])")
    out["bodies"] = fetch_parts(data)
    out["flags_after_peek"] = attempt(m.fetch, "1:*", "(FLAGS)")
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out["header_fields"] = fetch_parts(data)
    typ, data = m.fetch("1", "(BODY.PEEK[]<0.10>)")
    out["partial"] = fetch_parts(data)
    typ, data = m.fetch("1", "(BODY[TEXT])")
    out["text"] = fetch_parts(data)
    out["flags_after_body"] = attempt(m.fetch, "1", "(FLAGS)")

    # STORE
    out["store_add"] = attempt(m.store, "2", "+FLAGS", "(\\Flagged \\Answered)")
    out["store_silent"] = attempt(m.store, "3", "+FLAGS.SILENT", "(\\Seen)")
    out["store_remove"] = attempt(m.store, "2", "-FLAGS", "(\\Answered)")
    out["store_remove_silent"] = attempt(m.store, "1", "-FLAGS.SILENT", "(\\Seen)")
    out["flags_after_store"] = attempt(m.fetch, "1:*", "(FLAGS)")

    # SEARCH
    searches = {
        "all": ("ALL",),
        "unseen": ("UNSEEN",),
        "seen": ("SEEN",),
        "flagged": ("FLAGGED",),
        "from": ("FROM", '"sender@client.test"'),
        "from_nobody": ("FROM", '"nobody@nowhere.test"'),
        "subject": ("SUBJECT", '"beta"'),
        "since": ("SINCE", "01-Jan-2020"),
        "before": ("BEFORE", "01-Jan-2020"),
        "or": ("OR", "SUBJECT", "alpha", "SUBJECT", "gamma"),
        "not": ("NOT", "SUBJECT", "alpha"),
        "body": ("BODY", '"the text part"'),
        "text": ("TEXT", "alpha-one"),
        "larger": ("LARGER", "100000"),
        "seq": ("2:3",),
    }
    out["search"] = {k: attempt(m.search, None, *v) for k, v in searches.items()}
    out["uid_search"] = {
        "range": attempt(m.uid, "SEARCH", "UID", "2:*"),
        "one": attempt(m.uid, "SEARCH", "UID", "1"),
        "star": attempt(m.uid, "SEARCH", "UID", "*"),
    }

    # Folders
    out["create_work"] = attempt(m.create, "Work")
    out["create_hier"] = attempt(m.create, '"A/B"')
    out["create_utf7"] = attempt(m.create, '"' + mutf7("Entwürfe") + '"')
    out["create_dup"] = attempt(m.create, "Work")
    out["list_all"] = attempt(m.list, '""', "*")
    out["list_pct"] = attempt(m.list, '""', "%")

    # COPY / UID COPY (COPYUID) / MOVE
    out["copy"] = attempt(m.copy, "1", "Work")
    out["copy_code"] = pop(m, "COPYUID")
    typ, data = m.fetch("2", "(UID)")
    uid2 = uid_of(text(data[0]))
    out["uid_copy"] = attempt(m.uid, "COPY", str(uid2), "Work")
    out["uid_copy_code"] = pop(m, "COPYUID")
    out["copy_missing"] = attempt(m.copy, "1", "NoSuchFolder")
    out["status_work"] = attempt(m.status, "Work", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")

    # APPEND a literal, then fetch it back from the folder
    appended = (
        b"From: <appender@client.test>\r\nTo: <x@example.test>\r\n"
        b"Subject: appended-message\r\nMessage-ID: <appended@client.test>\r\n\r\n"
        b"appended body line 1\r\nline 2 with . and .. dots\r\n"
    )
    out["appended_sent"] = b64(appended)
    out["append"] = attempt(
        m.append, "Work", "(\\Seen \\Flagged)", imaplib.Time2Internaldate(time.time()), appended
    )
    out["append_code"] = pop(m, "APPENDUID")
    typ, data = m.select("Work")
    out["select_work"] = [typ, text(data)]
    typ, data = m.fetch("1:*", "(UID FLAGS BODY.PEEK[])")
    out["work_bodies"] = fetch_parts(data)

    # MOVE message 1 of Work to A/B
    out["move"] = attempt(m._simple_command, "MOVE", "1", '"A/B"')
    out["move_expunge"] = pop(m, "EXPUNGE")
    out["move_code"] = pop(m, "COPYUID")
    out["status_ab"] = attempt(m.status, '"A/B"', "(MESSAGES UIDNEXT)")
    out["status_work_after_move"] = attempt(m.status, "Work", "(MESSAGES)")

    # EXPUNGE in Work: delete the appended one (last) and expunge
    typ, data = m.search(None, "ALL")
    last = text(data[0]).split()[-1]
    out["store_deleted"] = attempt(m.store, last, "+FLAGS", "(\\Deleted)")
    out["expunge"] = attempt(m.expunge)
    out["status_work_after_expunge"] = attempt(m.status, "Work", "(MESSAGES)")
    m.close()

    # RENAME / DELETE / SUBSCRIBE / LSUB
    out["subscribe"] = attempt(m.subscribe, "Work")
    out["subscribe_utf7"] = attempt(m.subscribe, '"' + mutf7("Entwürfe") + '"')
    out["lsub"] = attempt(m.lsub, '""', "*")
    out["rename"] = attempt(m.rename, "Work", "Archive")
    out["rename_utf7"] = attempt(
        m.rename, '"' + mutf7("Entwürfe") + '"', '"' + mutf7("Ordner/Älter") + '"'
    )
    out["status_renamed_utf7"] = attempt(m.status, '"' + mutf7("Ordner/Älter") + '"', "(MESSAGES)")
    out["status_archive"] = attempt(m.status, "Archive", "(MESSAGES)")
    out["list_after_rename"] = attempt(m.list, '""', "*")
    out["delete_ab"] = attempt(m.delete, '"A/B"')
    out["delete_missing"] = attempt(m.delete, "NoSuchFolder")
    out["delete_inbox"] = attempt(m.delete, "INBOX")
    out["unsubscribe"] = attempt(m.unsubscribe, "Work")
    out["lsub_after"] = attempt(m.lsub, '""', "*")
    out["list_final"] = attempt(m.list, '""', "*")
    out["status_inbox"] = attempt(m.status, "INBOX", "(MESSAGES UNSEEN UIDNEXT)")
    out["logout"] = attempt(m.logout)
    return out


def fetch(args):
    out = {}
    m = connect(args)
    out["capabilities"] = sorted(m.capabilities)
    sock = m.sock
    out["tls_version"] = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    out["login"] = attempt(m.login, args.user, args.password)
    typ, data = m.select("INBOX", readonly=True)
    out["select"] = [typ, text(data)]
    typ, data = m.fetch("1:*", "(UID BODY.PEEK[])")
    out["bodies"] = fetch_parts(data)
    out["logout"] = attempt(m.logout)
    return out


def multi(args):
    out = {}
    a = login(args)
    b = login(args)
    a.select("INBOX")
    out["a_recent"] = pop(a, "RECENT")
    b.select("INBOX")
    out["b_recent"] = pop(b, "RECENT")
    out["a_recent_search"] = attempt(a.search, None, "RECENT")
    out["b_recent_search"] = attempt(b.search, None, "RECENT")
    # A flags message 2: B sees a FETCH FLAGS on NOOP.
    pop(b, "FETCH")
    out["a_store"] = attempt(a.store, "2", "+FLAGS", "(\\Flagged)")
    out["b_noop1"] = attempt(b.noop)
    out["b_fetch_after_flag"] = pop(b, "FETCH")
    # A deletes message 1 and expunges: B sees `* 1 EXPUNGE` on NOOP.
    pop(b, "EXPUNGE")
    out["a_delete"] = attempt(a.store, "1", "+FLAGS.SILENT", "(\\Deleted)")
    out["a_expunge"] = attempt(a.expunge)
    out["b_noop2"] = attempt(b.noop)
    out["b_expunge"] = pop(b, "EXPUNGE")
    out["b_exists"] = pop(b, "EXISTS")
    out["b_after"] = attempt(b.fetch, "1:*", "(UID FLAGS)")
    out["a_after"] = attempt(a.fetch, "1:*", "(UID FLAGS)")
    out["a_logout"] = attempt(a.logout)
    out["b_logout"] = attempt(b.logout)
    return out


def readline_until(m, pred, seconds):
    """Reads lines until pred(line) or the time runs out; returns
    (matching line or None, all lines read)."""
    lines = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            line = m.readline()
        except (socket.timeout, TimeoutError):
            break
        if not line:
            break
        lines.append(text(line).rstrip("\r\n"))
        if pred(lines[-1]):
            return lines[-1], lines
    return None, lines


def idle(args):
    out = {}
    m = login(args)
    typ, data = m.select("INBOX")
    out["exists_before"] = text(data)
    tag = m._new_tag().decode()
    m.send(f"{tag} IDLE\r\n".encode())
    cont, lines = readline_until(m, lambda l: l.startswith("+"), 10)
    out["continuation"] = cont
    out["lines_before_delivery"] = lines
    host, port = args.smtp.rsplit(":", 1)
    msg = (
        f"From: <idle-sender@client.test>\r\nTo: <{args.rcpt}>\r\n"
        "Subject: idle-wakeup\r\nMessage-ID: <idle@client.test>\r\n\r\nwake up\r\n"
    )
    with smtplib.SMTP(host, int(port), timeout=TIMEOUT) as s:
        s.sendmail("idle-sender@client.test", [args.rcpt], msg.encode())
    t0 = time.monotonic()
    exists, lines = readline_until(m, lambda l: l.endswith("EXISTS"), 15)
    out["exists_line"] = exists
    out["exists_after_seconds"] = time.monotonic() - t0
    out["lines_in_idle"] = lines
    m.sock.settimeout(TIMEOUT)
    m.send(b"DONE\r\n")
    done, lines = readline_until(m, lambda l: l.startswith(tag + " "), 10)
    out["done"] = done
    out["lines_after_done"] = lines
    out["noop"] = attempt(m.noop)
    out["logout"] = attempt(m.logout)
    return out


def idle_latency(args):
    """One IDLE while `--rounds` messages arrive over SMTP (one connection)
    and, with `--maildir`, as many dropped into the Maildir by another
    program: the seconds from each 250 (or rename) to its EXISTS."""
    out = {"smtp": [], "external": []}
    m = login(args)
    typ, data = m.select("INBOX")
    count = int(text(data)[0])
    tag = m._new_tag().decode()
    m.send(f"{tag} IDLE\r\n".encode())
    out["continuation"], _ = readline_until(m, lambda l: l.startswith("+"), 10)
    host, port = args.smtp.rsplit(":", 1)
    s = smtplib.SMTP(host, int(port), timeout=TIMEOUT)
    for i in range(args.rounds):
        msg = (
            f"From: <idle-sender@client.test>\r\nTo: <{args.rcpt}>\r\n"
            f"Subject: idle-{i}\r\nMessage-ID: <idle-{i}@client.test>\r\n\r\nwake up\r\n"
        )
        s.sendmail("idle-sender@client.test", [args.rcpt], msg.encode())
        t0 = time.monotonic()
        count += 1
        want = f"* {count} EXISTS"
        line, lines = readline_until(m, lambda l: l == want, 15)
        out["smtp"].append(time.monotonic() - t0 if line else None)
    s.quit()
    if args.maildir:
        for i in range(args.rounds):
            name = f"{time.time_ns()}.external{i}.test"
            tmp = os.path.join(args.maildir, "tmp", name)
            with open(tmp, "wb") as f:
                f.write(f"Subject: external-{i}\r\n\r\nbody\r\n".encode())
            os.rename(tmp, os.path.join(args.maildir, "new", name))
            t0 = time.monotonic()
            count += 1
            want = f"* {count} EXISTS"
            line, lines = readline_until(m, lambda l: l == want, 15)
            out["external"].append(time.monotonic() - t0 if line else None)
    m.sock.settimeout(TIMEOUT)
    m.send(b"DONE\r\n")
    out["done"], _ = readline_until(m, lambda l: l.startswith(tag + " "), 10)
    out["logout"] = attempt(m.logout)
    return out


def raw_line(m, line):
    """Sends a raw command line; returns the lines up to the tagged reply
    (or a continuation)."""
    m.send(line)
    tag = line.split(b" ", 1)[0].decode()
    _, lines = readline_until(m, lambda l: l.startswith(tag + " ") or l.startswith("+"), 10)
    return lines


def bad(args):
    out = {}
    m = connect(args)
    out["wrong_password"] = attempt(m.login, args.user, args.password + "-wrong")
    out["unknown_user"] = attempt(m.login, "nobody-here", args.password)
    out["after_wrong_select"] = attempt(m.select, "INBOX")
    out["login"] = attempt(m.login, args.user, args.password)
    out["unknown_command"] = raw_line(m, b"u1 FROBNICATE now\r\n")
    out["fetch_before_select"] = raw_line(m, b"u2 FETCH 1 (FLAGS)\r\n")
    out["uid_fetch_before_select"] = raw_line(m, b"u3 UID FETCH 1 (FLAGS)\r\n")
    out["bad_syntax"] = raw_line(m, b"u4 SELECT\r\n")
    names = ["../x", "a/../../b", "..", "/etc", "x/..", "../../../../tmp/evil", "a.b", "."]
    out["traversal"] = {}
    for n in names:
        q = '"' + n.replace("\\", "\\\\") + '"'
        out["traversal"][n] = {
            "create": attempt(m.create, q),
            "select": attempt(m.select, q),
            "rename": attempt(m.rename, "INBOX", q),
            "append": attempt(m.append, q, None, None, b"Subject: x\r\n\r\nx\r\n"),
            "status": attempt(m.status, q, "(MESSAGES)"),
        }
    out["select_inbox"] = attempt(m.select, "INBOX")
    out["fetch_out_of_range"] = raw_line(m, b"u5 FETCH 999 (FLAGS)\r\n")
    # An announced literal far over the limit: refused before any data.
    out["big_literal"] = raw_line(m, b"u6 APPEND INBOX {999999999}\r\n")
    m.sock.settimeout(TIMEOUT)
    out["noop_after_big"] = attempt(m.noop)
    # A non-synchronising one (over LITERAL-'s 4096): the server may close the
    # connection or read and drop what follows; it must not die.
    out["big_literal_plus"] = raw_line(m, b"u7 APPEND INBOX {999999999+}\r\n")
    m2 = login(args)
    out["new_session"] = attempt(m2.select, "INBOX")
    out["new_session_logout"] = attempt(m2.logout)
    try:
        m.shutdown()
    except Exception:
        pass
    return out


def privacy(args):
    out = {}
    m = connect(args, "plain")
    out["capabilities"] = sorted(m.capabilities)
    out["login_plain"] = attempt(m.login, args.user, args.password)
    out["authenticate_plain"] = attempt(
        m.authenticate, "PLAIN", lambda _: f"\0{args.user}\0{args.password}".encode()
    )
    out["starttls"] = attempt(m.starttls, context(args.cafile))
    out["capabilities_tls"] = sorted(m.capabilities)
    out["login_tls"] = attempt(m.login, args.user, args.password)
    out["select"] = attempt(m.select, "INBOX")
    out["logout"] = attempt(m.logout)
    return out


SCENARIOS = {
    "session": session,
    "fetch": fetch,
    "multi": multi,
    "idle": idle,
    "idle_latency": idle_latency,
    "bad": bad,
    "privacy": privacy,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mode", choices=["plain", "starttls", "imaps"], default="plain")
    ap.add_argument("--cafile")
    ap.add_argument("--smtp")
    ap.add_argument("--rcpt")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--maildir")
    args = ap.parse_args()
    try:
        out = SCENARIOS[args.scenario](args)
    except Exception as e:  # report, let the Rust side show it
        import traceback

        out = {"exception": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
