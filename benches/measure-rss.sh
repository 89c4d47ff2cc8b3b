#!/usr/bin/env bash
# Broker memory: RSS of an idle `sluice serve` right after start, then its growth per idle
# partition and per idle connection.
#
#   benches/measure-rss.sh [--partitions N] [--connections N] [--no-build]
#
# Builds the release broker (CARGO_TARGET_DIR, default ./target), starts it on free
# 127.0.0.1 ports with a temporary data dir, and reads VmRSS (with its anonymous / file
# split) from /proc/PID/status:
#   1. idle, 3 s after /readyz answers;
#   2. after CreateTopics of one topic with N partitions (default 1000), once every
#      partition directory exists and RSS has settled;
#   3. after N TCP connections (default 1000) have each completed an ApiVersions exchange
#      and stay open, idle.
# Prints a markdown table and stops the broker. Every wait is bounded. The client side is a
# small python3 script (raw Kafka requests on sockets: no client library needed).
set -uo pipefail

partitions=1000
connections=1000
build=true
while [ $# -gt 0 ]; do
    case "$1" in
        --partitions) partitions="${2:?}"; shift ;;
        --connections) connections="${2:?}"; shift ;;
        --no-build) build=false ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo" || exit 1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-rss.XXXXXX")"

if $build; then
    echo "building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR) ..." >&2
    if ! cargo build --release -p sluice >"$work/build.txt" 2>&1; then
        tail -30 "$work/build.txt" >&2
        exit 1
    fi
fi
bin="$CARGO_TARGET_DIR/release/sluice"
[ -x "$bin" ] || { echo "no broker binary at $bin" >&2; exit 1; }

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if port_free "$port"; then echo "$port"; return 0; fi
    done
    return 1
}

broker_pid=""
client_pid=""
cleanup() {
    if [ -n "$client_pid" ]; then kill "$client_pid" 2>/dev/null; wait "$client_pid" 2>/dev/null; fi
    if [ -n "$broker_pid" ]; then
        kill -TERM "$broker_pid" 2>/dev/null
        for _ in $(seq 1 100); do # 10 s
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$broker_pid" 2>/dev/null
        wait "$broker_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kafka_port="$(free_port)" && admin_port="$(free_port)" || { echo "no free port" >&2; exit 1; }
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$kafka_port" \
    --advertise "127.0.0.1:$kafka_port" --admin-listen "127.0.0.1:$admin_port" --node-id 1 \
    >"$work/broker.txt" 2>&1 &
broker_pid=$!
ready=false
for _ in $(seq 1 300); do # 30 s
    kill -0 "$broker_pid" 2>/dev/null || break
    if curl -sf -m 1 "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then ready=true; break; fi
    sleep 0.1
done
$ready || { tail -20 "$work/broker.txt" >&2; echo "broker not ready within 30 s" >&2; exit 1; }

kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$broker_pid/status"; }
# RSS once it has stopped moving: two readings 1 s apart within 64 KiB, at most 10 s.
settled_rss() {
    local a b
    a="$(kib VmRSS)"
    for _ in $(seq 1 10); do
        sleep 1
        b="$(kib VmRSS)"
        [ $((b > a ? b - a : a - b)) -le 64 ] && break
        a="$b"
    done
    echo "$b"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

sleep 2
idle="$(settled_rss)"
idle_anon="$(kib RssAnon)" idle_file="$(kib RssFile)"
idle_threads="$(kib Threads)"

# ---- the client: raw Kafka requests ------------------------------------------------------
cat >"$work/client.py" <<'EOF'
import socket, struct, sys, time

host, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def request(api_key, version, body, corr=1):
    # request header v1: api key, version, correlation id, client id (string)
    header = struct.pack(">hhih", api_key, version, corr, 3) + b"rss"
    msg = header + body
    return struct.pack(">i", len(msg)) + msg

def read_response(s):
    s.settimeout(30)
    buf = b""
    while len(buf) < 4:
        chunk = s.recv(4 - len(buf))
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    (size,) = struct.unpack(">i", buf)
    body = b""
    while len(body) < size:
        chunk = s.recv(size - len(body))
        if not chunk:
            raise SystemExit("connection closed")
        body += chunk
    return body

if mode == "topic":
    # CreateTopics v2: [name, partitions, replication factor, no assignments, no configs],
    # timeout, validate_only=false
    name = b"rss-idle-partitions"
    body = (struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
            + struct.pack(">ihii", n, 1, 0, 0) + struct.pack(">ib", 60000, 0))
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(request(19, 2, body))
    resp = read_response(s)
    # correlation id, throttle ms, topics count, name, error code
    (nlen,) = struct.unpack(">h", resp[12:14])
    (err,) = struct.unpack(">h", resp[14 + nlen:16 + nlen])
    if err != 0:
        raise SystemExit(f"CreateTopics error code {err}")
    print("created", flush=True)
elif mode == "connections":
    socks = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(request(18, 0, b"", corr=i))  # ApiVersions v0
        read_response(s)
        socks.append(s)
    print("connected", flush=True)
    # Hold them open until killed (bounded by the caller) or for at most 10 minutes.
    time.sleep(600)
EOF

python3 "$work/client.py" 127.0.0.1 "$kafka_port" topic "$partitions" >"$work/topic.txt" 2>&1 ||
    { cat "$work/topic.txt" >&2; exit 1; }
# Partitions materialise on the broker once the metadata record is applied.
made=0
for _ in $(seq 1 600); do # 60 s
    made="$(find "$work/data" -maxdepth 3 -type d -name 'rss-idle-partitions-*' 2>/dev/null | wc -l)"
    [ "$made" -ge "$partitions" ] && break
    sleep 0.1
done
[ "$made" -ge "$partitions" ] || { echo "only $made of $partitions partition dirs after 60 s" >&2; exit 1; }
with_partitions="$(settled_rss)"
part_anon="$(kib RssAnon)" part_file="$(kib RssFile)"
part_threads="$(kib Threads)"
part_fds="$(ls "/proc/$broker_pid/fd" | wc -l)"

python3 "$work/client.py" 127.0.0.1 "$kafka_port" connections "$connections" >"$work/conns.txt" 2>&1 &
client_pid=$!
connected=false
for _ in $(seq 1 600); do # 60 s
    grep -q connected "$work/conns.txt" 2>/dev/null && { connected=true; break; }
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.1
done
$connected || { cat "$work/conns.txt" >&2; echo "connections not established within 60 s" >&2; exit 1; }
with_connections="$(settled_rss)"
conn_anon="$(kib RssAnon)" conn_file="$(kib RssFile)"

per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) / n }'; }
echo "| state | VmRSS MiB | anon MiB | file MiB | growth |"
echo "|---|---|---|---|---|"
echo "| idle after start ($idle_threads threads) | $(mib "$idle") | $(mib "$idle_anon") | $(mib "$idle_file") | |"
echo "| + $partitions idle partitions (1 topic; $part_fds fds) | $(mib "$with_partitions") | $(mib "$part_anon") | $(mib "$part_file") | $(per "$idle" "$with_partitions" "$partitions") KiB per partition |"
echo "| + $connections idle connections (after ApiVersions) | $(mib "$with_connections") | $(mib "$conn_anon") | $(mib "$conn_file") | $(per "$with_partitions" "$with_connections" "$connections") KiB per connection |"
echo
echo "sluice $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
