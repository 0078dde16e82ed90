#!/usr/bin/env bash
# Gateway throughput against peers (issue 5, point 5; `make bench-load`).
#
# One small OpenAI-style upstream (services/bench/cmd/bench-upstream) and
# the same 100,000 infergate keys behind four front doors, measured in one
# run, alternating A/B/A/B over several rounds:
#   direct   wrk -> upstream
#   haproxy  HAProxy checking X-API-Key against a map file
#   nginx    nginx with map $http_x_api_key
#   gateway  the real infergate-gateway binary, the keys loaded through the
#            event stream (embedded NATS) and linked to the deployment
# wrk runs on one core, the servers on the other (taskset). Every server
# is single-threaded (HAProxy nbthread 1, nginx 1 worker, the gateway's
# GOMAXPROCS follows its one-core affinity).
#
# It installs wrk, haproxy and nginx from Debian packages when missing
# (needs root), builds the Go helpers, and prints a Markdown table.
# GATEWAY_GOMAXPROCS sets the gateways' GOMAXPROCS (unpinned, Go takes
# both cores where HAProxy and nginx run one thread); LIGHT=0 skips the
# one-connection pass.
# Tunables (environment): KEYS, DURATION (s per measurement), ROUNDS,
# CONNS, LIGHT_CONNS (connections of the latency pass), SERVER_CPU, CLIENT_CPU, PIN (0: no taskset),
# FORWARDED=1 (HAProxy and nginx also set X-Forwarded-For, -Host and
# -Proto upstream, as the gateway always does, so every front door sends
# the upstream the same headers), TARGETS (add gateway-nethttp for the gateway with its HTTP/1.1 fast path
# off, --http1-fastpath=false, as an A/B in the same run), WORK (scratch dir, kept with
# KEEP=1), GATEWAY_PPROF=1 (run services/bench/cmd/bench-gateway — the
# same gateway package plus net/http/pprof — and take a 10 s CPU profile of
# it under load into $PPROF_OUT, default /tmp/gateway.pprof, and the CPU
# per request it shows; INFERGATE_HTTP1_FASTPATH=false profiles the
# net/http path instead). TARGETS may also name minimal-loop and
# minimal-goroutines: services/bench/cmd/bench-loopproxy, a measuring
# instrument — the least proxy this traffic needs (key check, forward,
# relay; none of the gateway's other work) as one epoll event loop or as
# a goroutine per connection, to measure what the front end's model
# alone is worth on this machine; minimal-splice is the goroutine one
# relaying answers with splice(2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KEYS=${KEYS:-100000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
LIGHT_CONNS=${LIGHT_CONNS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TARGETS=${TARGETS:-direct haproxy nginx gateway}
FORWARDED=${FORWARDED:-0}
WORK=${WORK:-$(mktemp -d /tmp/infergate-load.XXXXXX)}
PORT_UP=18001 PORT_HAPROXY=18002 PORT_NGINX=18003 PORT_GATEWAY=18004 PORT_NATS=14222 PORT_PPROF=18005 PORT_GATEWAY_NETHTTP=18006 PORT_MIN_LOOP=18007 PORT_MIN_GOROUTINES=18008 PORT_MIN_SPLICE=18009
HOST=model-chat.bench.localhost

log() { echo "load: $*" >&2; }

install_tools() {
	local need=()
	command -v wrk >/dev/null || need+=(wrk)
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
	command -v taskset >/dev/null || need+=(util-linux)
	command -v curl >/dev/null || need+=(curl)
	if [ ${#need[@]} -gt 0 ]; then
		log "installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq "${need[@]}" >/dev/null
	fi
	# Debian starts the packaged services; they are not ours to run.
	if command -v service >/dev/null; then
		service nginx stop >/dev/null 2>&1 || true
		service haproxy stop >/dev/null 2>&1 || true
	fi
}

PIDS=()
declare -A PID_OF
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

# exec: run in the background, the function's subshell becomes the server
# itself, so $! is the server's pid and cleanup can stop it.
# PIN=0 runs everything unpinned (all cores shared), as issue 5's trial did.
on_server_cpu() {
	if [ "${PIN:-1}" = 0 ]; then exec "$@"; fi
	exec taskset -c "$SERVER_CPU" "$@"
}

wait_http() { # url [host]
	for _ in $(seq 1 600); do
		if curl -fsS -o /dev/null ${2:+-H "Host: $2"} "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	log "$1 did not answer"; return 1
}

build() {
	log "building the helpers and the gateway into $WORK/bin"
	mkdir -p "$WORK/bin"
	(cd "$ROOT" && go build -o "$WORK/bin/" ./services/bench/cmd/bench-upstream ./services/bench/cmd/bench-nats \
		./services/bench/cmd/bench-seed ./services/bench/cmd/bench-gateway ./services/bench/cmd/bench-loopproxy \
		./services/gateway/cmd/infergate-gateway)
}

start_servers() {
	on_server_cpu "$WORK/bin/bench-nats" --store-dir "$WORK/nats" --port $PORT_NATS 2>"$WORK/nats.log" &
	PIDS+=($!)
	PID_OF[nats]=$!
	on_server_cpu "$WORK/bin/bench-upstream" --addr 127.0.0.1:$PORT_UP 2>"$WORK/upstream.log" &
	PIDS+=($!)
	PID_OF[direct]=$!
	wait_http "http://127.0.0.1:$PORT_UP/v1/models"
	log "generating $KEYS keys and seeding the stream"
	"$WORK/bin/bench-seed" --keys "$KEYS" --out "$WORK" --nats-url nats://127.0.0.1:$PORT_NATS \
		--upstream http://127.0.0.1:$PORT_UP --project bench --deployment chat

	if [ "${GATEWAY_PPROF:-0}" = 1 ]; then
		# The same gateway package with net/http/pprof on the side.
		on_server_cpu "$WORK/bin/bench-gateway" --addr 127.0.0.1:$PORT_GATEWAY \
			--nats-url nats://127.0.0.1:$PORT_NATS --pprof-addr 127.0.0.1:$PORT_PPROF 2>"$WORK/gateway.log" &
	else
		on_server_cpu env ${GATEWAY_GOMAXPROCS:+GOMAXPROCS=$GATEWAY_GOMAXPROCS} "$WORK/bin/infergate-gateway" --addr 127.0.0.1:$PORT_GATEWAY \
			--nats-url nats://127.0.0.1:$PORT_NATS --region local --base-domain localhost --log-level warn --upstream-allow 127.0.0.1 2>"$WORK/gateway.log" &
	fi
	PIDS+=($!)
	PID_OF[gateway]=$!
	if [[ " $TARGETS " == *" gateway-nethttp "* ]]; then
		# The same binary with the HTTP/1.1 fast path off: net/http and
		# ReverseProxy only, for an A/B in the same run.
		on_server_cpu env ${GATEWAY_GOMAXPROCS:+GOMAXPROCS=$GATEWAY_GOMAXPROCS} "$WORK/bin/infergate-gateway" --addr 127.0.0.1:$PORT_GATEWAY_NETHTTP --http1-fastpath=false \
			--nats-url nats://127.0.0.1:$PORT_NATS --region local --base-domain localhost --log-level warn --upstream-allow 127.0.0.1 2>"$WORK/gateway-nethttp.log" &
		PIDS+=($!)
		PID_OF[gateway-nethttp]=$!
	fi

	local m
	for m in $(minimal_modes); do
		local mode=goroutine splice=false
		[ $m = loop ] && mode=loop
		[ $m = splice ] && splice=true
		on_server_cpu "$WORK/bin/bench-loopproxy" --addr 127.0.0.1:$(minimal_port $m) --upstream 127.0.0.1:$PORT_UP \
			--keys "$WORK/keys.txt" --mode $mode --splice=$splice 2>"$WORK/minimal-$m.log" &
		PIDS+=($!)
		PID_OF[minimal-$m]=$!
	done

	local haproxy_fwd="" nginx_fwd=""
	if [ "$FORWARDED" = 1 ]; then
		haproxy_fwd=$'    option forwardfor\n    http-request set-header X-Forwarded-Host %[req.hdr(host)]\n    http-request set-header X-Forwarded-Proto http'
		nginx_fwd=$'            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            proxy_set_header X-Forwarded-Host $host;\n            proxy_set_header X-Forwarded-Proto $scheme;'
	fi
	cat >"$WORK/haproxy.cfg" <<-CFG
	global
	    maxconn 8000
	    nbthread 1
	defaults
	    mode http
	    timeout connect 5s
	    timeout client 60s
	    timeout server 60s
	    option http-keep-alive
	    http-reuse always
	frontend fe
	    bind 127.0.0.1:$PORT_HAPROXY
	    http-request return status 401 content-type application/json string '{"error":{"message":"Invalid API key for this deployment.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}' unless { req.hdr(x-api-key),map($WORK/haproxy-keys.map) -m found }
	    http-request del-header x-api-key
	$haproxy_fwd
	    default_backend model
	backend model
	    server up 127.0.0.1:$PORT_UP
	CFG
	on_server_cpu haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
	PIDS+=($!)
	PID_OF[haproxy]=$!

	mkdir -p "$WORK/nginx"
	cat >"$WORK/nginx.conf" <<-CFG
	daemon off;
	worker_processes 1;
	user root;
	pid $WORK/nginx/nginx.pid;
	error_log $WORK/nginx/error.log warn;
	events { worker_connections 8192; }
	http {
	    access_log off;
	    client_body_temp_path $WORK/nginx/body;
	    proxy_temp_path $WORK/nginx/proxy;
	    fastcgi_temp_path $WORK/nginx/fastcgi;
	    uwsgi_temp_path $WORK/nginx/uwsgi;
	    scgi_temp_path $WORK/nginx/scgi;
	    map_hash_bucket_size 512;
	    map_hash_max_size 262144;
	    map \$http_x_api_key \$api_key_ok {
	        default 0;
	        include $WORK/nginx-keys.map;
	    }
	    upstream model {
	        server 127.0.0.1:$PORT_UP;
	        keepalive 256;
	        keepalive_requests 10000000;
	    }
	    server {
	        listen 127.0.0.1:$PORT_NGINX backlog=4096;
	        keepalive_requests 10000000;
	        location / {
	            if (\$api_key_ok = 0) {
	                return 401 '{"error":{"message":"Invalid API key for this deployment.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}';
	            }
	            proxy_pass http://model;
	            proxy_http_version 1.1;
	            proxy_set_header Connection "";
	            proxy_set_header X-API-Key "";
	$nginx_fwd
	        }
	    }
	}
	CFG
	on_server_cpu nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" 2>"$WORK/nginx.log" &
	PIDS+=($!)
	local nginx_master=$!

	wait_http "http://127.0.0.1:$PORT_GATEWAY/readyz"
	# nginx's work is its worker's.
	for _ in $(seq 1 100); do
		PID_OF[nginx]=$(awk '{print $1}' "/proc/$nginx_master/task/$nginx_master/children" 2>/dev/null)
		[ -n "${PID_OF[nginx]}" ] && break
		sleep 0.1
	done
	local ports="$PORT_HAPROXY $PORT_NGINX $PORT_GATEWAY"
	if [[ " $TARGETS " == *" gateway-nethttp "* ]]; then
		wait_http "http://127.0.0.1:$PORT_GATEWAY_NETHTTP/readyz"
		ports="$ports $PORT_GATEWAY_NETHTTP"
	fi
	for m in $(minimal_modes); do
		wait_http "http://127.0.0.1:$(minimal_port $m)/readyz"
		ports="$ports $(minimal_port $m)"
	done
	for port in $ports; do
		local key code
		key=$(head -1 "$WORK/keys.txt")
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" -H "X-API-Key: $key" -d '{}' "http://127.0.0.1:$port/v1/chat/completions")
		[ "$code" = 200 ] || { log "port $port answered $code to a good key"; exit 1; }
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" -H "X-API-Key: ig_bad" -d '{}' "http://127.0.0.1:$port/v1/chat/completions")
		[ "$code" = 401 ] || { log "port $port answered $code to a bad key"; exit 1; }
	done
}

write_lua() {
	cat >"$WORK/keys.lua" <<-'LUA'
	-- Every request carries the next of the 100,000 keys (each thread
	-- starts at a random one); the requests are formatted once, up front,
	-- so wrk spends no time building them.
	local reqs, i = {}, 0
	init = function(args)
	  local body = '{"model":"bench-model","messages":[{"role":"user","content":"Say hello."}]}'
	  for key in io.lines(args[1]) do
	    reqs[#reqs + 1] = wrk.format("POST", "/v1/chat/completions",
	      {["Host"] = args[2], ["Content-Type"] = "application/json", ["X-API-Key"] = key}, body)
	  end
	  math.randomseed(os.time())
	  i = math.random(#reqs)
	end
	request = function()
	  i = i % #reqs + 1
	  return reqs[i]
	end
	done = function(summary, latency, requests)
	  io.write(string.format("RESULT %.1f %d %d %d %d\n",
	    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
	    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
	    summary.requests))
	end
	LUA
}

# minimal_modes: the modes of bench-loopproxy that TARGETS names
# (minimal-loop, minimal-goroutines, minimal-splice).
minimal_modes() {
	local m
	for m in loop goroutines splice; do
		[[ " $TARGETS " == *" minimal-$m "* ]] && echo "$m"
	done
	return 0
}

# minimal_port m: the port of bench-loopproxy's mode m (loop, goroutines,
# splice).
minimal_port() {
	case $1 in
	loop) echo "$PORT_MIN_LOOP" ;;
	goroutines) echo "$PORT_MIN_GOROUTINES" ;;
	splice) echo "$PORT_MIN_SPLICE" ;;
	esac
}

url_of() {
	case $1 in
	direct) echo "http://127.0.0.1:$PORT_UP" ;;
	haproxy) echo "http://127.0.0.1:$PORT_HAPROXY" ;;
	nginx) echo "http://127.0.0.1:$PORT_NGINX" ;;
	gateway) echo "http://127.0.0.1:$PORT_GATEWAY" ;;
	gateway-nethttp) echo "http://127.0.0.1:$PORT_GATEWAY_NETHTTP" ;;
	minimal-*) echo "http://127.0.0.1:$(minimal_port "${1#minimal-}")" ;;
	esac
}

# cpu_ticks pid: the process's utime+stime, in clock ticks (1/100 s).
cpu_ticks() {
	awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# measure target seconds [connections] -> "rps p50_us p99_us errors requests cpu_us_per_request loadavg1 others_cpu_us_per_request"
# CPU per request is the target process's own CPU time (utime+stime
# from /proc/<pid>/stat) over the requests it answered: unlike req/s,
# it hardly moves when other work shares the machine. For direct it is
# the upstream's; a proxy's own figure leaves the upstream's out. The
# last figure is what the other processes on the server core (the
# upstream, and NATS, which stores the gateway's usage flushes) spent per
# request meanwhile: their CPU is taken from the proxy's core too.
measure() {
	local pin=(taskset -c "$CLIENT_CPU")
	[ "${PIN:-1}" = 0 ] && pin=()
	local pid=${PID_OF[$1]:-} t0 t1 o0 o1 res
	t0=$(cpu_ticks "$pid")
	o0=$(others_ticks "$1")
	res=$("${pin[@]}" wrk -t1 -c"${3:-$CONNS}" -d"$2"s --timeout 5s -s "$WORK/keys.lua" "$(url_of "$1")" -- "$WORK/keys.txt" "$HOST" |
		awk '/^RESULT/ {print $2, $3, $4, $5, $6}')
	t1=$(cpu_ticks "$pid")
	o1=$(others_ticks "$1")
	echo "$res" | awk -v d=$((t1 - t0)) -v o=$((o1 - o0)) -v l="$(cut -d' ' -f1 /proc/loadavg)" \
		'{printf "%s %.1f %s %.1f\n", $0, ($5 > 0 ? d * 10000 / $5 : 0), l, ($5 > 0 ? o * 10000 / $5 : 0)}'
}

# others_ticks target: the CPU ticks of the upstream and NATS, less the
# target's own (direct is the upstream).
others_ticks() {
	local sum=0 p
	for p in direct nats; do
		[ "$p" = "$1" ] || sum=$((sum + $(cpu_ticks "${PID_OF[$p]:-}")))
	done
	echo "$sum"
}

# ports_free fails, saying so, when another run (or anything else) holds
# one of the benchmark's ports: a second run beside a first would seed
# the first one's stream and measure its servers.
ports_free() {
	local p
	for p in $PORT_UP $PORT_HAPROXY $PORT_NGINX $PORT_GATEWAY $PORT_NATS $PORT_PPROF $PORT_GATEWAY_NETHTTP $PORT_MIN_LOOP $PORT_MIN_GOROUTINES $PORT_MIN_SPLICE; do
		if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			log "port $p is in use (another bench-load still running?): stop it first"
			exit 1
		fi
	done
}

main() {
	ports_free
	install_tools
	build
	write_lua
	start_servers
	log "warming up"
	for t in $TARGETS; do measure "$t" 3 >/dev/null; done
	: >"$WORK/results.txt"
	for r in $(seq 1 "$ROUNDS"); do
		for t in $TARGETS; do
			res=$(measure "$t" "$DURATION")
			log "round $r $t: $res (req/s p50_us p99_us errors requests cpu_us/req load1 others_cpu_us/req)"
			echo "$t $res" >>"$WORK/results.txt"
			if [ "$t" = gateway ] && [ "$r" = 1 ] && [ "${GATEWAY_PPROF:-0}" = 1 ]; then
				log "profiling the gateway under load"
				measure gateway 12 >"$WORK/profiled.txt" &
				local load=$!
				sleep 1
				curl -s -o "$WORK/gateway.pprof" "http://127.0.0.1:$PORT_PPROF/debug/pprof/profile?seconds=10"
				wait "$load" || true
				cp "$WORK/gateway.pprof" "${PPROF_OUT:-/tmp/gateway.pprof}"
				log "profile in ${PPROF_OUT:-/tmp/gateway.pprof}"
				# CPU per request: the profile's CPU seconds over the
				# requests of its 10 s (the load's rate).
				local cpu rps
				cpu=$(go tool pprof -top "$WORK/gateway.pprof" 2>/dev/null | awk '/Total samples/ {v = $6; if (v ~ /ms$/) {sub(/ms$/, "", v); v /= 1000} else sub(/s$/, "", v); print v}')
				rps=$(awk '{print $1}' "$WORK/profiled.txt")
				log "profiled round: $rps req/s, $cpu s of CPU in 10 s: $(awk -v c="$cpu" -v r="$rps" 'BEGIN {if (r > 0) printf "%.1f", c / (r * 10) * 1e6}') µs of CPU per request"
			fi
		done
	done
	# Latency without queueing: one connection, one request at a time, so
	# a percentile is the request's own cost and not the wait behind 63
	# others (at saturation a closed loop's latency is connections /
	# throughput: whoever is slower shows a higher p99).
	: >"$WORK/results-light.txt"
	for r in $(seq 1 "$ROUNDS"); do
		[ "${LIGHT:-1}" = 0 ] && break
		for t in $TARGETS; do
			res=$(measure "$t" "$DURATION" "$LIGHT_CONNS")
			log "light round $r $t: $res"
			echo "$t $res" >>"$WORK/results-light.txt"
		done
	done
	summarize "$WORK/results.txt" "$CONNS"
	[ "${LIGHT:-1}" = 0 ] || summarize "$WORK/results-light.txt" "$LIGHT_CONNS"
}

# summarize: the median of each figure over the rounds, and ratios to
# direct; p99 added is the target's median p99 minus direct's.
summarize() {
	local CONNS=$2
	echo
	local placement="wrk on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU"
	[ "${PIN:-1}" = 0 ] && placement="unpinned"
	echo "$(nproc) CPUs, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); wrk -t1 -c$CONNS; $placement; $KEYS keys; $ROUNDS rounds of ${DURATION}s, alternating"
	echo "$(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy", $3}'); $(nginx -v 2>&1 | sed 's|nginx version: nginx/|nginx |'); $(go version | awk '{print $3}')"
	echo
	awk -v order="$TARGETS" '
	function median(arr, n,    i, j, t) {
		for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
		return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
	}
	{ n[$1]++; rps[$1, n[$1]] = $2; p50[$1, n[$1]] = $3; p99[$1, n[$1]] = $4; errs[$1] += $5; all[$1] = all[$1] " " int($2); cpu[$1, n[$1]] = $7; loads[$1] = loads[$1] " " $8; oth[$1, n[$1]] = $9 }
	END {
		split(order, ts, " ")
		for (k in ts) { t = ts[k]
			for (i = 1; i <= n[t]; i++) { a[i] = rps[t, i] } mr[t] = median(a, n[t])
			for (i = 1; i <= n[t]; i++) { a[i] = p50[t, i] } m50[t] = median(a, n[t])
			for (i = 1; i <= n[t]; i++) { a[i] = p99[t, i] } m99[t] = median(a, n[t])
			for (i = 1; i <= n[t]; i++) { a[i] = cpu[t, i] } mcpu[t] = median(a, n[t])
			for (i = 1; i <= n[t]; i++) { a[i] = oth[t, i] } moth[t] = median(a, n[t])
		}
		print "| front door | req/s (median) | runs | p50 | p99 | throughput / direct | p99 added | CPU / request | upstream + NATS CPU / request | errors | load average (1 min) |"
		print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
		for (k = 1; k <= length(ts); k++) { t = ts[k]
			printf "| %s | %d | %s | %.2f ms | %.2f ms | %.2f | %s | %.1f µs | %.1f µs | %d | %s |\n", t, mr[t], substr(all[t], 2), m50[t] / 1000, m99[t] / 1000,
				(mr["direct"] > 0) ? mr[t] / mr["direct"] : 0, (t == "direct") ? "—" : sprintf("%+.2f ms", (m99[t] - m99["direct"]) / 1000), mcpu[t], moth[t], errs[t], substr(loads[t], 2)
		}
		# Each front door against nginx and HAProxy round by round: the
		# rounds alternate, so a ratio within a round leaves out most of
		# the drift of the machine between rounds.
		print ""
		for (k = 1; k <= length(ts); k++) { t = ts[k]
			if (t == "direct") continue
			for (q = 1; q <= 2; q++) { peer = (q == 1) ? "nginx" : "haproxy"
				if (t == peer || n[peer] == 0 || n[t] != n[peer]) continue
				line = ""; ahead = 0
				for (i = 1; i <= n[t]; i++) {
					a[i] = (rps[peer, i] > 0) ? rps[t, i] / rps[peer, i] : 0
					line = line sprintf(" %.2f", a[i]); if (a[i] > 1) ahead++
				}
				printf "- %s / %s by round:%s (median %.2f, ahead in %d of %d)\n", t, peer, line, median(a, n[t]), ahead, n[t]
			}
		}
	}' "$1"
}

main "$@"
