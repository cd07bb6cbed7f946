#!/usr/bin/env python3
"""Memory per idle SMTP or IMAP connection (issue 2 target: under 16 KiB for
SMTP; the IMAP issue's target: under 32 KiB).

Starts `spate serve` on a private 127.0.0.x address, opens CONNECTIONS idle
sessions (each has read its 220 greeting), and reads the server's VmRSS
from /proc/PID/status before and after. A warm-up of 100 sessions comes
first so one-time allocations (executor buffers, TLS/crypto tables, ...)
are not charged to the idle sessions. Then every session sends EHLO and
stays idle again, and RSS is read once more.

    benches/idle_memory.py                       # 5000 connections
    benches/idle_memory.py --connections 10000 --spate target/release/spate
    benches/idle_memory.py --protocol imap       # IMAP, 5000 connections

With --protocol imap the server has an imap listener and a mailbox tier
(Maildir++ under the work directory, USERS users userN:{PLAIN}x, each with
an empty INBOX); the sessions read the `* OK` greeting and stay idle
(not authenticated), then every session sends LOGIN (users in turn) and
stays idle again (authenticated), then SELECTs INBOX and enters IDLE
(each watching its folder), and RSS is read after each step.

Raises RLIMIT_NOFILE for itself and the server (root may raise the hard
limit). Standard library only; only loopback addresses are used.
"""

import argparse
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def cpu_seconds(pid):
    """User plus system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(n, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_sessions(addr, n, deadline, proto="smtp"):
    socks = []
    for _ in range(n):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(socks)} sessions opened in time")
        s = socket.create_connection(addr, timeout=10)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(512)
            if not chunk:
                raise ConnectionError(f"closed before greeting after {len(socks)} sessions")
            buf += chunk
        if not greeting_ok(proto, buf):
            raise ConnectionError(f"session {len(socks)}: {buf!r}")
        socks.append(s)
    return socks


def greeting_ok(proto, buf):
    return buf.startswith(b"* OK" if proto == "imap" else b"220")


def login_all(socks, users):
    for i, s in enumerate(socks):
        s.sendall(f"a LOGIN user{i % users + 1} x\r\n".encode())
    for s in socks:
        buf = b""
        while b"\r\n" not in buf or not any(l.startswith(b"a ") for l in buf.split(b"\r\n")):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during LOGIN")
            buf += chunk
        line = next(l for l in buf.split(b"\r\n") if l.startswith(b"a "))
        if not line.startswith(b"a OK"):
            raise ConnectionError(f"LOGIN: {line!r}")


def idle_all(socks):
    """SELECT INBOX then IDLE on every session (each now holds a selected
    folder and a watch on it)."""
    for s in socks:
        s.sendall(b"b SELECT INBOX\r\nc IDLE\r\n")
    for s in socks:
        buf = b""
        while not any(l.startswith(b"+ ") for l in buf.split(b"\r\n")):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during SELECT/IDLE")
            buf += chunk
        if b"b OK" not in buf:
            raise ConnectionError(f"SELECT: {buf!r}")


def ehlo_all(socks):
    for s in socks:
        s.sendall(b"EHLO idle.test\r\n")
    for s in socks:
        buf = b""
        while not any(l.startswith(b"250 ") for l in buf.split(b"\r\n")):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during EHLO")
            buf += chunk


def settle(pid):
    time.sleep(1.0)
    return rss_kib(pid)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--spate", default=os.environ.get("SPATE"))
    p.add_argument("--cores", type=int, default=0)
    p.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/var/tmp"))
    p.add_argument("--protocol", choices=("smtp", "imap"), default="smtp")
    p.add_argument("--users", type=int, default=10, help="IMAP users to log in as, in turn")
    a = p.parse_args()

    if not a.spate:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "spate"], cwd=ROOT, check=True)
        a.spate = os.path.join(ROOT, "target/release/spate")
    limit = raise_nofile(a.connections * 2 + 1000)
    if limit < a.connections + 200:
        sys.exit(f"RLIMIT_NOFILE is {limit}; need {a.connections + 200}")

    work = tempfile.mkdtemp(prefix="spate-idle.", dir=a.dir)
    ip = f"127.{random.randint(20, 220)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
    cfg = os.path.join(work, "spate.toml")
    imap_listener = mailbox_tier = ""
    if a.protocol == "imap":
        imap_listener = f'[[listener]]\naddress = "{ip}:0"\nprotocol = "imap"\n'
        mailbox_tier = (f'mailbox_dir = "{work}/mail"\nusers_file = "{work}/users"\n'
                        f'max_connections_per_ip = {a.connections * 2 + 1000}\n')
        with open(os.path.join(work, "users"), "w") as f:
            for u in range(1, a.users + 1):
                f.write(f"user{u}:{{PLAIN}}x\n")
                for sub in ("cur", "new", "tmp"):
                    os.makedirs(os.path.join(work, "mail", f"user{u}", sub))
    with open(cfg, "w") as f:
        f.write(
            f'''hostname = "bench.test"
spool_dir = "{work}/spool"
cores = {a.cores}
shutdown_grace = "5s"

[[listener]]
address = "{ip}:0"
protocol = "smtp"

{imap_listener}
[dns]
nameservers = ["{ip}:53"]

[local]
domains = ["example.test"]
{mailbox_tier}
[smtp]
max_connections = {a.connections * 2 + 1000}
max_connections_per_ip = {a.connections * 2 + 1000}
command_timeout = "3600s"
'''
        )
    server = subprocess.Popen(
        [a.spate, "serve", "--config", cfg],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(work, "stderr"), "w"),
        text=True,
    )
    socks = []
    try:
        addr = None
        deadline = time.monotonic() + 30
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("spate not ready in 30 s")
            line = server.stdout.readline()
            if not line:
                raise RuntimeError("spate exited before ready: " + open(os.path.join(work, "stderr")).read()[-2000:])
            w = line.split()
            if w[:2] == ["listening", a.protocol]:
                host, port = w[2].rsplit(":", 1)
                addr = (host, int(port))
            if w == ["ready"]:
                break
        deadline = time.monotonic() + 120
        start = rss_kib(server.pid)
        socks += open_sessions(addr, 100, deadline, a.protocol)
        if a.protocol == "imap":  # the warm-up logs in too (auth tables, users file)
            login_all(socks, a.users)
        base = settle(server.pid)
        fresh = open_sessions(addr, a.connections, deadline, a.protocol)
        socks += fresh
        after = settle(server.pid)
        if a.protocol == "imap":
            login_all(fresh, a.users)
        else:
            ehlo_all(socks)
        after_ehlo = settle(server.pid)
        after_idle = None
        if a.protocol == "imap":
            idle_all(fresh)
            after_idle = settle(server.pid)
            cpu0 = cpu_seconds(server.pid)
            time.sleep(10)
            idle_cpu = cpu_seconds(server.pid) - cpu0
        anon = rss_kib(server.pid, "RssAnon")
        n = a.connections
        step = "LOGIN" if a.protocol == "imap" else "EHLO"
        target = 32 if a.protocol == "imap" else 16
        per = (after - base) / n
        per_ehlo = (after_ehlo - base) / n
        print(
            f"[idle] VmRSS at ready {start} KiB, after 100 warm-up sessions {base} KiB, "
            f"after {n} more idle sessions {after} KiB, after {step} on all {after_ehlo} KiB (RssAnon {anon} KiB)",
            file=sys.stderr,
        )
        verdict = "met" if per < target else "NOT met"
        verdict_step = "met" if per_ehlo < target else "NOT met"
        print()
        print(f"| protocol | idle sessions | VmRSS before (KiB) | VmRSS after (KiB) | KiB per idle session | after {step}: KiB per session | target < {target} KiB (idle / after {step}) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {a.protocol} | {n} | {base} | {after} | {per:.2f} | {per_ehlo:.2f} | {verdict} / {verdict_step} |")
        if after_idle is not None:
            per_idle = (after_idle - base) / n
            print()
            print(f"In IDLE (SELECT INBOX, IDLE; {a.users} users' INBOXes watched): VmRSS {after_idle} KiB, "
                  f"{per_idle:.2f} KiB per session (target < {target} KiB: {'met' if per_idle < target else 'NOT met'}); "
                  f"server CPU over the next 10 s with nothing happening: {idle_cpu:.2f} s")
    finally:
        for s in socks:
            s.close()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
