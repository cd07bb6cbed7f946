#!/usr/bin/env bash
# Spreads the receive/transmit queue IRQs of one network interface over a
# list of CPUs, one queue per CPU in turn, by writing
# /proc/irq/N/smp_affinity_list. Give it the cores spate runs on (or the
# cores next to them) so each core handles the packets of its own
# connections.
#
#   spread-irqs.sh [--dry-run] INTERFACE CPULIST
#   spread-irqs.sh --dry-run eth0 0-7
#   spread-irqs.sh eth0 0-3,8-11
#
# The queue IRQs are the interface's MSI/MSI-X vectors
# (/sys/class/net/IF/device/msi_irqs, or the PCI device's above a virtio
# device) whose name in /proc/interrupts marks
# a queue (IF-..., ...-TxRx-N, ...-rx-N, ...-tx-N, virtioN-input.N,
# virtioN-output.N); without msi_irqs, the /proc/interrupts lines named
# IF-*. Stop irqbalance first (or ban these CPUs in it), or it moves them
# back. Settings do not survive a reboot: run it from a boot unit.
#
# SPREAD_IRQS_ROOT, when set, is a directory read and written instead of
# / (for tests on a fake /proc and /sys tree).
set -euo pipefail

root="${SPREAD_IRQS_ROOT:-}"
dry_run=0

usage() {
    echo "usage: $0 [--dry-run] INTERFACE CPULIST   (CPULIST like 0-3,8,10-11)" >&2
    exit 2
}

die() {
    echo "spread-irqs: $*" >&2
    exit 1
}

if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=1
    shift
fi
[[ $# -eq 2 ]] || usage
interface="$1"
cpulist="$2"
[[ "$interface" =~ ^[A-Za-z0-9_.:-]+$ ]] || die "bad interface name: $interface"
[[ -e "$root/sys/class/net/$interface" ]] || die "no interface $interface in $root/sys/class/net"

# Expand a CPU list (0-3,8) into one CPU number per line.
cpus=()
IFS=',' read -r -a parts <<<"$cpulist"
for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
        first="${BASH_REMATCH[1]}"
        last="${BASH_REMATCH[2]}"
        ((first <= last)) || die "bad CPU range: $part"
        for ((cpu = first; cpu <= last; cpu++)); do
            cpus+=("$cpu")
        done
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
        cpus+=("$part")
    else
        die "bad CPU list: $cpulist"
    fi
done
((${#cpus[@]} > 0)) || die "empty CPU list"
for cpu in "${cpus[@]}"; do
    [[ -d "$root/sys/devices/system/cpu/cpu$cpu" ]] || die "no CPU $cpu on this host"
done

# The name /proc/interrupts gives an IRQ (its last field), or nothing.
irq_name() {
    awk -v irq="$1:" '$1 == irq { print $NF; exit }' "$root/proc/interrupts"
}

is_queue_name() {
    local name="$1"
    [[ "$name" == "$interface"-* ]] ||
        [[ "$name" =~ -(TxRx|rx|tx|txrx|Rx|Tx)-[0-9]+$ ]] ||
        [[ "$name" =~ ^virtio[0-9]+-(input|output)\.[0-9]+$ ]]
}

irqs=()
msi_dir="$root/sys/class/net/$interface/device/msi_irqs"
# A virtio NIC's vectors belong to the PCI device above the virtio one.
if [[ ! -d "$msi_dir" ]]; then
    msi_dir="$root/sys/class/net/$interface/device/../msi_irqs"
fi
if [[ -d "$msi_dir" ]]; then
    while read -r irq; do
        name="$(irq_name "$irq")"
        if [[ -n "$name" ]] && is_queue_name "$name"; then
            irqs+=("$irq")
        fi
    done < <(find "$msi_dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n)
else
    while read -r irq; do
        irqs+=("$irq")
    done < <(awk -v prefix="$interface-" 'index($NF, prefix) == 1 { sub(":", "", $1); print $1 }' \
        "$root/proc/interrupts")
fi
((${#irqs[@]} > 0)) || die "no queue IRQs found for $interface"

for comm in "$root"/proc/[0-9]*/comm; do
    if [[ -r "$comm" && "$(cat "$comm")" == "irqbalance" ]]; then
        echo "spread-irqs: warning: irqbalance is running and may move these IRQs again" >&2
        break
    fi
done

echo "spreading ${#irqs[@]} queue IRQs of $interface over CPUs ${cpus[*]}"
index=0
for irq in "${irqs[@]}"; do
    cpu="${cpus[index % ${#cpus[@]}]}"
    index=$((index + 1))
    target="$root/proc/irq/$irq/smp_affinity_list"
    echo "irq $irq ($(irq_name "$irq")) -> cpu $cpu"
    if ((dry_run == 0)); then
        echo "$cpu" >"$target" || die "cannot write $target (root needed; managed IRQs cannot be moved)"
    fi
done
if ((dry_run)); then
    echo "dry run: nothing written"
fi
