#!/usr/bin/env python3
"""An LMTP client for the Rust integration tests (tests/lmtp.rs), with
Python's smtplib.LMTP.

Usage: lmtp_client.py HOST PORT --from ADDR --to ADDR [--to ADDR ...]
                      --subject TEXT --size N

Connects, tries EHLO (an LMTP server must refuse it, RFC 2033 4.1), sends
LHLO, then one transaction: MAIL, every RCPT, and DATA with a message of
about N bytes. smtplib's data() reads one reply; RFC 2033 4.2 sends one per
recipient accepted at RCPT, so the rest are read with getreply(). A second
transaction pipelines MAIL and every RCPT in one write.

Prints ONE line of JSON with what it saw; asserts nothing about spate
itself (the Rust test does). Standard library only.
"""

import argparse
import json
import smtplib
import sys

TIMEOUT = 30


def message(subject, size, sender, to):
    head = (
        f"From: <{sender}>\r\nTo: <{to[0]}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@client.test>\r\n\r\n"
    )
    body = []
    i = 0
    while sum(len(l) for l in body) < size:
        body.append(f"{subject} line {i:06} abcdefghijklmnopqrstuvwxyz\r\n")
        i += 1
    return head + "".join(body)


def reply(pair):
    code, text = pair
    return [code, text.decode("utf-8", "replace")]


def transaction(lmtp, sender, to, msg, pipelined):
    out = {}
    if pipelined:
        # PIPELINING (RFC 2920, required by RFC 2033 4.1): every envelope
        # command in one write, then the replies.
        lines = [f"MAIL FROM:<{sender}>"] + [f"RCPT TO:<{r}>" for r in to]
        lmtp.send(("\r\n".join(lines) + "\r\n").encode())
        out["mail"] = reply(lmtp.getreply())
    else:
        out["mail"] = reply(lmtp.mail(sender))
    accepted = 0
    rcpts = []
    for r in to:
        got = reply(lmtp.getreply() if pipelined else lmtp.rcpt(r))
        rcpts.append(got)
        if got[0] // 100 == 2:
            accepted += 1
    out["rcpt"] = rcpts
    if accepted == 0:
        lmtp.rset()
        out["data"] = []
        return out
    replies = [reply(lmtp.data(msg.encode()))]
    for _ in range(accepted - 1):
        replies.append(reply(lmtp.getreply()))
    out["data"] = replies
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--size", type=int, default=200)
    a = p.parse_args()
    result = {}
    try:
        lmtp = smtplib.LMTP(a.host, a.port, local_hostname="py.test", timeout=TIMEOUT)
        result["ehlo"] = reply(lmtp.docmd("EHLO", "py.test"))
        code, _ = lmtp.ehlo("py.test")  # sends LHLO (ehlo_msg)
        result["lhlo"] = code
        result["features"] = sorted(lmtp.esmtp_features.keys())
        msg = message(a.subject, a.size, a.sender, a.to)
        result["first"] = transaction(lmtp, a.sender, a.to, msg, False)
        msg = message(a.subject + "-2", a.size, a.sender, a.to)
        result["second"] = transaction(lmtp, a.sender, a.to, msg, True)
        result["quit"] = reply(lmtp.docmd("QUIT"))
        lmtp.close()
    except Exception as e:  # report, the Rust side fails the test
        result["exception"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
