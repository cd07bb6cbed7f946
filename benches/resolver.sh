#!/usr/bin/env bash
# Resolver benchmark (issue 3): 100,000 messages to 1,000 domains, resolved
# by 4 worker threads in queue-run batches through one resolver thread
# against our own hickory-server on loopback. Prints the MX, A and AAAA
# queries the DNS server saw and the queries per message (target: at most
# 1,000 MX queries). The measurement lives in tests/mx_resolution.rs so CI
# checks the bound too; this runs it optimised and shows its report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --release --quiet --test mx_resolution hundred_thousand_messages_to_a_thousand_domains \
    -- --exact --nocapture 2>&1 | grep -E 'messages to 1000 domains|test result'
