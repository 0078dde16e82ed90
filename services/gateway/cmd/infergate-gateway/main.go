// Command infergate-gateway runs one edge gateway (SPEC §3) against an
// external NATS cluster: it replays the event stream into its auth map,
// follows it live and proxies requests to deployments. Flags fall back to
// INFERGATE_* environment variables; see -help.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natslog"
	"github.com/infergate/infergate/services/internal/snapshots"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// main exits 0 when SIGINT or SIGTERM stops the gateway, whatever it was
// waiting for (NATS, the stream), and 1 on any other failure.
func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "infergate-gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr, natsURL, natsNkey, natsCA, region, baseDomain, id, logLevel string
		grace                                                             time.Duration
	)
	env := controlplane.Env
	fs := flag.NewFlagSet("infergate-gateway", flag.ExitOnError)
	fs.StringVar(&addr, "addr", env("INFERGATE_ADDR", "127.0.0.1:8000"), "listen address (env INFERGATE_ADDR)")
	fs.StringVar(&natsURL, "nats-url", env("INFERGATE_NATS_URL", nats.DefaultURL), "NATS server URLs, comma-separated (env INFERGATE_NATS_URL)")
	fs.StringVar(&natsNkey, "nats-nkey", env("INFERGATE_NATS_NKEY", ""), "NATS nkey seed file of this gateway's own NATS user, whose receipt subject is infergate.gateways.<region>.<id> (env INFERGATE_NATS_NKEY)")
	fs.StringVar(&natsCA, "nats-ca", env("INFERGATE_NATS_CA", ""), "CA file for the NATS servers' TLS certificates; default the system's (env INFERGATE_NATS_CA)")
	fs.StringVar(&region, "region", env("INFERGATE_REGION", "local"), "this gateway's region (env INFERGATE_REGION)")
	fs.StringVar(&baseDomain, "base-domain", env("INFERGATE_BASE_DOMAIN", "localhost"), "base domain of model-<deployment>.<project>.<base-domain> (env INFERGATE_BASE_DOMAIN)")
	fs.StringVar(&id, "id", env("INFERGATE_GATEWAY_ID", ""), "gateway id; default random (env INFERGATE_GATEWAY_ID)")
	fs.StringVar(&logLevel, "log-level", env("INFERGATE_LOG_LEVEL", "info"), "debug, info, warn or error (env INFERGATE_LOG_LEVEL)")
	fs.DurationVar(&grace, "shutdown-grace", 30*time.Second, "how long open requests (streams) may take at shutdown")
	snapshotBucket := fs.String("snapshot-bucket", env("INFERGATE_SNAPSHOT_BUCKET", snapshots.DefaultBucket),
		`object store bucket to start the auth map from (the latest usable snapshot, which the control plane saves; in a region, on its leaf server, the region's copy made by admin stream create-mirror); "" for none (env INFERGATE_SNAPSHOT_BUCKET)`)
	fastPath := fs.Bool("http1-fastpath", env("INFERGATE_HTTP1_FASTPATH", "true") != "false",
		"serve common HTTP/1.1 requests on the gateway's own fast path instead of net/http (env INFERGATE_HTTP1_FASTPATH)")
	upstreamAllow := fs.String("upstream-allow", env("INFERGATE_UPSTREAM_ALLOW", ""),
		"upstream addresses allowed despite the default policy (which refuses loopback, link-local and unspecified addresses): CIDRs, addresses and host names, comma-separated (env INFERGATE_UPSTREAM_ALLOW)")
	maxStaleness := fs.String("max-staleness", env("INFERGATE_MAX_STALENESS", gateway.DefaultMaxStaleness.String()),
		"how long the gateway may serve auth-enabled deployments from a map it cannot confirm is current (NATS or the hub away, the process frozen) before it answers 503 gateway_stale; 0: forever, trading revocation for availability (env INFERGATE_MAX_STALENESS)")
	usageEvery := fs.String("usage-flush-interval", env("INFERGATE_USAGE_FLUSH_INTERVAL", gateway.DefaultUsageFlushInterval.String()),
		"how often the gateway publishes its usage counts to the usage stream INFERGATE_USAGE; negative: count nothing (env INFERGATE_USAGE_FLUSH_INTERVAL; docs/usage.md)")
	usagePending := fs.String("usage-max-pending", env("INFERGATE_USAGE_MAX_PENDING", "0"),
		"usage rows (key, deployment, minute) kept while NATS is away; past it counts merge into an earlier minute or are dropped, counted in /metrics; 0: 100000 (env INFERGATE_USAGE_MAX_PENDING)")
	bnds, bndsErr := boundFlags(fs, env)
	hubDomain := fs.String("hub-domain", env("INFERGATE_HUB_DOMAIN", ""),
		`read the region's mirror of the event stream on this gateway's (leaf) NATS server, and check through the hub's JetStream domain, named here (e.g. "hub"), that it copies the hub stream's current life; "": read the hub's stream itself (env INFERGATE_HUB_DOMAIN; docs/multi-region.md)`)
	_ = fs.Parse(os.Args[1:])
	if err := errors.Join(bndsErr(), bnds.Validate()); err != nil {
		return err
	}
	staleness, err := time.ParseDuration(*maxStaleness)
	if err != nil || staleness < 0 {
		return fmt.Errorf("--max-staleness %q: want a duration such as 5m, or 0 for none", *maxStaleness)
	}
	if staleness == 0 {
		staleness = -1 // gateway.Config: negative is "never"
	}
	usageCfg, err := usageFlags(*usageEvery, *usagePending)
	if err != nil {
		return err
	}
	upstreams, err := upstreampolicy.Parse(*upstreamAllow)
	if err != nil {
		return fmt.Errorf("--upstream-allow: %w", err)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if natsNkey != "" && id == "" {
		// The gateway's NATS user may publish receipts on its own subject
		// only, which names its id.
		return errors.New("--id is required with --nats-nkey")
	}
	// Without an nkey (a server without users) the id may be random.
	natsOpts, err := natsauth.GatewayIdentity(region, cmp.Or(id, "unnamed")).ClientOptions(natsNkey, natsCA)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// Until the gateway exists (NATS may be down at start), /healthz says
	// alive and everything else is 503: never an empty map's 404s.
	var handler handlerSwap
	handler.set(starting{})
	srv := httpserver.New(addr, &handler)

	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	// The front end sets srv's timeouts from the bounds: streams (SSE)
	// and request bodies may last as long as they make progress.
	front := gateway.NewFront(srv, *fastPath, *bnds)
	wg.Go(func() { serveErr <- front.Serve(ctx, ln, grace) })
	log.Info("listening", "addr", ln.Addr().String(), "region", region, "base_domain", baseDomain, "http1_fastpath", *fastPath,
		"upstream_allow", upstreams.String())

	opts := []nats.Option{
		nats.Name("infergate-gateway"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
	}
	opts = append(opts, natslog.Options(log, "serving from the map within its staleness bound")...)
	opts = append(opts, natsOpts...)
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		stop()
		return errors.Join(fmt.Errorf("connect to NATS at %s: %w", natsURL, err), <-serveErr)
	}
	defer nc.Close()
	var gwDone *gateway.Gateway
	runErr := func() error {
		store, err := openStore(ctx, nc, *hubDomain, log)
		if err != nil {
			return err // only ctx's end: asked to stop
		}
		var snaps *snapshots.Store
		if *snapshotBucket != "" {
			js, _ := jetstream.New(nc)
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			snaps, err = snapshots.Open(octx, js, snapshots.Config{Bucket: *snapshotBucket, ReadOnly: true})
			cancel()
			if err != nil {
				// Only a short cut: start by replaying the whole stream.
				log.Warn("snapshot bucket not available; replaying the stream from the start", "err", err)
			}
		}
		gw, err := gateway.New(gateway.Config{
			Events: store, NATS: nc, Region: region, BaseDomain: baseDomain, ID: id, Log: log,
			Snapshots: snaps, Upstreams: upstreams, MaxStaleness: staleness, Bounds: *bnds,
			Usage: usageCfg,
		})
		if err != nil {
			return err
		}
		gwDone = gw
		handler.set(gw.Handler())
		front.Use(gw)
		if err := gw.Run(ctx); !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}()
	signalled := ctx.Err() != nil
	stop()
	wg.Wait()
	if gwDone != nil {
		// The server has stopped: publish the counts of its last requests.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if ferr := gwDone.FlushUsage(fctx); ferr != nil {
			log.Warn("usage: last counts not published", "err", ferr)
		}
		cancel()
	}
	err = errors.Join(runErr, <-serveErr)
	if signalled {
		// Asked to stop: whatever it was waiting for ended because of it.
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Info("stopped by signal", "err", err)
		}
		return nil
	}
	return err
}

// usageFlags reads --usage-flush-interval and --usage-max-pending.
func usageFlags(every, pending string) (gateway.Usage, error) {
	var (
		u    gateway.Usage
		errs []error
		err  error
	)
	if u.FlushInterval, err = time.ParseDuration(every); err != nil || u.FlushInterval == 0 {
		errs = append(errs, fmt.Errorf("--usage-flush-interval %q: want a duration such as 10s, or negative to count nothing", every))
	}
	if u.MaxPending, err = strconv.Atoi(pending); err != nil || u.MaxPending < 0 {
		errs = append(errs, fmt.Errorf("--usage-max-pending %q: want a number of rows, 0 for the default", pending))
	}
	return u, errors.Join(errs...)
}

// boundFlags declares the data plane's time bounds (docs/gateway.md,
// "Time bounds"), each a flag falling back to an INFERGATE_* variable;
// errs reports the variables that are not durations (or numbers).
func boundFlags(fs *flag.FlagSet, env func(string, string) string) (b *gateway.Bounds, errs func() error) {
	b = new(gateway.Bounds)
	var bad []error
	dur := func(p *time.Duration, name, envName string, def time.Duration, usage string) {
		v := def
		if s := env(envName, ""); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				bad = append(bad, fmt.Errorf("%s: %w", envName, err))
			}
			v = d
		}
		fs.DurationVar(p, name, v, usage+" (env "+envName+")")
	}
	dur(&b.Head, "head-timeout", "INFERGATE_HEAD_TIMEOUT", gateway.DefaultHeadTimeout,
		"how long a new connection may take to send its first byte, and any request its whole head")
	dur(&b.Body, "body-timeout", "INFERGATE_BODY_TIMEOUT", gateway.DefaultBodyTimeout,
		"how long a request body may take, plus a second per --body-min-rate bytes received")
	rate := gateway.DefaultBodyMinRate
	if s := env("INFERGATE_BODY_MIN_RATE", ""); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			bad = append(bad, fmt.Errorf("INFERGATE_BODY_MIN_RATE: %w", err))
		}
		rate = n
	}
	fs.Int64Var(&b.BodyMinRate, "body-min-rate", rate, "bytes per second a request body must keep up, past --body-timeout (env INFERGATE_BODY_MIN_RATE)")
	dur(&b.Connect, "upstream-connect-timeout", "INFERGATE_UPSTREAM_CONNECT_TIMEOUT", gateway.DefaultUpstreamConnectTimeout,
		"how long a connect to an upstream may take (502 past it)")
	dur(&b.ResponseHead, "upstream-response-timeout", "INFERGATE_UPSTREAM_RESPONSE_TIMEOUT", gateway.DefaultUpstreamResponseTimeout,
		"how long the upstream may take to send its response head (504 past it); generous: a model may think for minutes before its first token")
	dur(&b.Write, "write-timeout", "INFERGATE_WRITE_TIMEOUT", gateway.DefaultWriteTimeout,
		"how long one write to a client may block: a client that stops reading loses its connection and its upstream request")
	dur(&b.Idle, "idle-timeout", "INFERGATE_IDLE_TIMEOUT", gateway.DefaultIdleTimeout,
		"how long a keep-alive connection may wait for its next request")
	return b, func() error { return errors.Join(bad...) }
}

// openStore binds to the event stream — or, with a hub domain, to the
// region's mirror of it — retrying while NATS is unreachable or no
// operator has created the stream yet; a stream that differs from the
// declaration is an error at once. It logs the first failure and the
// success after it, not every attempt.
func openStore(ctx context.Context, nc *nats.Conn, hubDomain string, log *slog.Logger) (*eventstore.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	open := func(ctx context.Context) (*eventstore.Store, error) {
		return eventstore.Open(ctx, js, eventstore.Config{})
	}
	if hubDomain != "" {
		hub, err := jetstream.NewWithDomain(nc, hubDomain)
		if err != nil {
			return nil, err
		}
		open = func(ctx context.Context) (*eventstore.Store, error) {
			return eventstore.OpenMirror(ctx, js, hub, eventstore.MirrorConfig{OriginDomain: hubDomain})
		}
	}
	for wait, failed := 250*time.Millisecond, false; ; wait = min(2*wait, 5*time.Second) {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// Bind and verify only: an operator owns the stream's
		// configuration (infergate admin stream).
		store, err := open(octx)
		cancel()
		if err == nil {
			if failed {
				log.Info("event stream reachable")
			}
			return store, nil
		}
		if errors.Is(err, eventstore.ErrStreamMismatch) {
			return nil, err
		}
		if !failed {
			log.Warn("event stream not reachable yet; retrying until it is", "err", err)
			failed = true
		} else {
			log.Debug("event stream still not reachable", "in", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// handlerSwap serves whatever handler was last set.
type handlerSwap struct {
	mu sync.RWMutex // mu protects h
	h  http.Handler
}

func (s *handlerSwap) set(h http.Handler) {
	s.mu.Lock()
	s.h = h
	s.mu.Unlock()
}

func (s *handlerSwap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	h := s.h
	s.mu.RUnlock()
	h.ServeHTTP(w, r)
}

// starting answers while the event store cannot be opened.
type starting struct{}

func (starting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"error":{"message":"The gateway cannot reach its event stream yet.","type":"server_error","param":null,"code":"gateway_not_ready"}}` + "\n"))
}
