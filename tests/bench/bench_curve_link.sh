#!/usr/bin/env bash
# bench_curve_link.sh BINDIR [RATE...]: CURVE's all-reduce bandwidth as a fraction of plaintext
# TCP's over a real link instead of loopback. Two network namespaces joined by a veth pair, each
# end shaped with tc (tbf) to RATE (default: none, 25gbit, 10gbit, 1gbit: "none" is the veth pair
# unshaped), then `bench_allreduce 0 tcp,curve 2 --curve` with one rank in each namespace.
# On loopback both ranks' encryption competes with the plaintext baseline's bare memcpy speed on
# the same cores; a donated cluster's links run at 1-25 Gbit/s, where the question is whether
# CURVE keeps up with the link. Needs root (ip netns, tc); prints a skip line otherwise.
# Label bench: figures only, never a pass/fail on speed.
set -u
bin=${1:?usage: bench_curve_link.sh BINDIR [RATE...]}
shift
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(none 25gbit 10gbit 1gbit)
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    echo "bench_curve_link: needs root, ip and tc (iproute2): skip"
    exit 77
fi
a=shoal-bl-a-$$ b=shoal-bl-b-$$ va=shblA$$ vb=shblB$$
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; }
trap cleanup EXIT
set -e
ip netns add "$a"
ip netns add "$b"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$a"
ip link set "$vb" netns "$b"
ip -n "$a" addr add 10.231.0.1/24 dev "$va"
ip -n "$b" addr add 10.231.0.2/24 dev "$vb"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "$va" up
ip -n "$b" link set "$vb" up
set +e
echo "# bench_curve_link: 2 ranks in namespaces $a / $b over veth, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for rate in "${rates[@]}"; do
    for pair in "$a $va" "$b $vb"; do
        set -- $pair
        tc -n "$1" qdisc del dev "$2" root 2>/dev/null
        [ "$rate" = none ] || tc -n "$1" qdisc add dev "$2" root tbf rate "$rate" burst 4mb latency 50ms ||
            { echo "bench_curve_link: tc tbf $rate failed"; exit 1; }
    done
    echo "== link: ${rate/none/veth unshaped}"
    SHOAL_BENCH_NETNS="$a,$b" SHOAL_BENCH_HOSTS=10.231.0.1,10.231.0.2 \
        "$bin/bench_allreduce" 0 tcp,curve 2 --curve | grep -E '^#|^ *(tcp|curve) .*allreduce|curve/tcp'
done
