#!/usr/bin/env bash
# Many long SSE streams through one gateway and through nginx (issue 12,
# point 5; `make bench-streams`).
#
# STREAMS concurrent chat-completion streams (default 10,000), a chunk a
# second each for DURATION seconds (default 60), opened over RAMP seconds,
# to each target in turn, ROUNDS times alternating:
#   gateway  the real infergate-gateway binary (auth on, a linked key
#            loaded through the event stream), HTTP/1.1 fast path
#   nginx    nginx, 1 worker, proxy_buffering off, the same key checked
#            with a map, upstream keep-alive
#   direct   the upstream itself, for the latency the others add
# services/bench/cmd/bench-streams is the upstream (one process) and the
# client (another): each holds a descriptor per stream. The front doors
# run on SERVER_CPU, the rest on CLIENT_CPU (PIN=0: unpinned).
#
# It reports, per target (medians over the rounds): resident memory per
# open stream (VmRSS growth / streams, /proc/<pid>/status; nginx: its
# worker), CPU per relayed chunk (utime+stime growth over the chunks the
# client read in the same window, /proc/<pid>/stat), chunk latency p50 and
# p99 (upstream send → client read) and p99 added against direct; for the
# gateway also its Go heap and goroutines per stream (from /metrics) and
# its resident set after every stream has closed.
#
# A proxy needs two descriptors per stream (client and upstream): the
# script raises the soft limit to the hard one and, if 2×STREAMS+100 does
# not fit under the hard limit, runs fewer streams and says so.
# Tunables: STREAMS, DURATION, RAMP, ROUNDS (default 1), TARGETS (default
# "gateway nginx direct"), SERVER_CPU, CLIENT_CPU, PIN, KEEP=1 (keep WORK),
# GATEWAY_GOGC / GATEWAY_GOMEMLIMIT / GATEWAY_GOMAXPROCS (the gateway's
# GOGC, GOMEMLIMIT, GOMAXPROCS; pinned, Go's default GOMAXPROCS is 1),
# GATEWAY_PPROF=1 (run services/bench/cmd/bench-gateway — the gateway
# package plus net/http/pprof — and save a 10 s CPU profile and a heap
# profile taken while every stream is open to $WORK/streams-cpu.pprof and
# $WORK/streams-heap.pprof).
# Needs root for apt-get (nginx) when nginx is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STREAMS=${STREAMS:-10000}
DURATION=${DURATION:-60}
RAMP=${RAMP:-10}
ROUNDS=${ROUNDS:-1}
TARGETS=${TARGETS:-gateway nginx direct}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WORK=${WORK:-$(mktemp -d /tmp/infergate-streams.XXXXXX)}
PORT_UP=18101 PORT_NGINX=18103 PORT_GATEWAY=18104 PORT_NATS=14223 PORT_PPROF=18105
HOST=model-chat.bench.localhost

log() { echo "streams: $*" >&2; }

# Descriptors: two per stream for a proxy (client side and upstream
# side), one per stream for the upstream and the client, plus headroom.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ]; then
	ulimit -n "$hard"
	fit=$(((hard - 100) / 2))
	if [ "$STREAMS" -gt "$fit" ]; then
		log "the hard descriptor limit is $hard: a proxy needs 2 per stream + headroom, so $fit streams instead of $STREAMS (raise LimitNOFILE / ulimit -Hn for more)"
		STREAMS=$fit
	fi
fi

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
	log "installing nginx"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq nginx >/dev/null
fi
if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi

PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

on_cpu() { # cpu cmd...
	local cpu=$1
	shift
	if [ "${PIN:-1}" = 0 ]; then exec "$@"; fi
	exec taskset -c "$cpu" "$@"
}

wait_http() {
	for _ in $(seq 1 600); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	log "$1 did not answer"
	return 1
}

log "building into $WORK/bin"
mkdir -p "$WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/" ./services/bench/cmd/bench-streams ./services/bench/cmd/bench-nats \
	./services/bench/cmd/bench-seed ./services/bench/cmd/bench-gateway ./services/gateway/cmd/infergate-gateway)

on_cpu "$CLIENT_CPU" "$WORK/bin/bench-nats" --store-dir "$WORK/nats" --port $PORT_NATS 2>"$WORK/nats.log" &
PIDS+=($!)
on_cpu "$CLIENT_CPU" "$WORK/bin/bench-streams" upstream --addr 127.0.0.1:$PORT_UP --duration "${DURATION}s" 2>"$WORK/upstream.log" &
PIDS+=($!)
sleep 0.5
"$WORK/bin/bench-seed" --keys 100 --out "$WORK" --nats-url nats://127.0.0.1:$PORT_NATS \
	--upstream http://127.0.0.1:$PORT_UP --project bench --deployment chat
KEY=$(head -1 "$WORK/keys.txt")

genv=()
[ -n "${GATEWAY_GOGC:-}" ] && genv+=("GOGC=$GATEWAY_GOGC")
[ -n "${GATEWAY_GOMEMLIMIT:-}" ] && genv+=("GOMEMLIMIT=$GATEWAY_GOMEMLIMIT")
[ -n "${GATEWAY_GOMAXPROCS:-}" ] && genv+=("GOMAXPROCS=$GATEWAY_GOMAXPROCS")
if [ "${GATEWAY_PPROF:-0}" = 1 ]; then
	on_cpu "$SERVER_CPU" env "${genv[@]}" "$WORK/bin/bench-gateway" --addr 127.0.0.1:$PORT_GATEWAY \
		--nats-url nats://127.0.0.1:$PORT_NATS --pprof-addr 127.0.0.1:$PORT_PPROF 2>"$WORK/gateway.log" &
else
	on_cpu "$SERVER_CPU" env "${genv[@]}" "$WORK/bin/infergate-gateway" --addr 127.0.0.1:$PORT_GATEWAY \
		--nats-url nats://127.0.0.1:$PORT_NATS --region local --base-domain localhost --log-level warn \
		--upstream-allow 127.0.0.1 2>"$WORK/gateway.log" &
fi
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CFG
daemon off;
worker_processes 1;
worker_rlimit_nofile $hard;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections $((2 * STREAMS + 1100)); }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    map_hash_bucket_size 512;
    map \$http_x_api_key \$api_key_ok {
        default 0;
        include $WORK/nginx-keys.map;
    }
    upstream model {
        server 127.0.0.1:$PORT_UP;
        keepalive 1024;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        location / {
            if (\$api_key_ok = 0) {
                return 401 '{"error":{"message":"Invalid API key for this deployment.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}';
            }
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-API-Key "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffering off;
            proxy_read_timeout 10m;
        }
    }
}
CFG
on_cpu "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" 2>"$WORK/nginx.log" &
NGINX_MASTER=$!
PIDS+=($NGINX_MASTER)

wait_http "http://127.0.0.1:$PORT_GATEWAY/readyz"
NGINX_PID=""
for _ in $(seq 1 100); do
	NGINX_PID=$(cat "/proc/$NGINX_MASTER/task/$NGINX_MASTER/children" 2>/dev/null | awk '{print $1}')
	[ -n "$NGINX_PID" ] && break
	sleep 0.1
done
[ -n "$NGINX_PID" ] || { log "no nginx worker"; exit 1; }

args=()
for t in $TARGETS; do
	case $t in
	gateway) args+=(--target "gateway=http://127.0.0.1:$PORT_GATEWAY@$GATEWAY_PID") ;;
	nginx) args+=(--target "nginx=http://127.0.0.1:$PORT_NGINX@$NGINX_PID") ;;
	direct) args+=(--target "direct=http://127.0.0.1:$PORT_UP") ;;
	*) log "unknown target $t"; exit 1 ;;
	esac
done

if [ "${GATEWAY_PPROF:-0}" = 1 ]; then
	(
		# While the first round's gateway streams are all open.
		sleep $((RAMP + 8))
		curl -s -o "$WORK/streams-heap.pprof" "http://127.0.0.1:$PORT_PPROF/debug/pprof/heap"
		curl -s -o "$WORK/streams-cpu.pprof" "http://127.0.0.1:$PORT_PPROF/debug/pprof/profile?seconds=10"
		log "profiles in $WORK/streams-{cpu,heap}.pprof"
	) &
fi

log "$STREAMS streams per target, ${DURATION}s each, $ROUNDS round(s): $TARGETS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
(
	ulimit -n "$hard" 2>/dev/null || true
	on_cpu "$CLIENT_CPU" "$WORK/bin/bench-streams" run --streams "$STREAMS" --duration "${DURATION}s" --ramp "${RAMP}s" \
		--rounds "$ROUNDS" --host "$HOST" --key "$KEY" --metrics-path /metrics "${args[@]}"
)
echo
echo "$(nproc) CPUs, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); front doors on CPU $SERVER_CPU, client and upstream on CPU $CLIENT_CPU (PIN=${PIN:-1})"
echo "$(nginx -v 2>&1 | sed 's|nginx version: nginx/|nginx |'); $(go version | awk '{print $3}'); descriptor limit $(ulimit -n)"
