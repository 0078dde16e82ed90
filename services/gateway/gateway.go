// Package gateway is the infergate edge gateway (SPEC §3): it keeps an
// in-memory auth map built from the event stream and answers every request
// to a deployment from it — no database, no RPC on the request path —
// proxying allowed requests to the deployment's upstream.
//
// Its own process is cmd/infergate-gateway; the one-process stack embeds
// it with New, Run and Handler.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
	"github.com/infergate/infergate/services/gateway/internal/metrics"
	"github.com/infergate/infergate/services/gateway/internal/proxy"
	"github.com/infergate/infergate/services/gateway/internal/route"
	"github.com/infergate/infergate/services/gateway/internal/tally"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/snapshots"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// Config is a gateway's configuration.
type Config struct {
	// Events is the event store, on an existing NATS connection. Required.
	Events *eventstore.Store
	// NATS is that connection, for reporting its state; may be nil (the
	// gateway then judges the connection by whether the stream answers).
	NATS *nats.Conn
	// Region is this gateway's region; it serves deployments whose
	// regions include it, or that have none. Default "local".
	Region string
	// BaseDomain of deployment host names,
	// model-<deployment>.<project>.<base-domain>. Default "localhost".
	BaseDomain string
	// ID names this gateway (in logs now, in propagation reports later);
	// default random.
	ID string
	// Log defaults to discarding.
	Log *slog.Logger
	// Now is the clock key expiry is checked against; default time.Now.
	Now func() time.Time
	// Upstreams is the policy the address of every upstream connection
	// must pass (--upstream-allow; docs/gateway.md, "Upstream policy"):
	// a refused one is answered 502. Nil is the default policy: loopback,
	// link-local and unspecified addresses refused.
	Upstreams *upstreampolicy.Policy
	// PollInterval is how often the stream's last sequence is read for
	// lag and staleness; default 1 s.
	PollInterval time.Duration
	// MaxStaleness bounds how long the gateway serves auth-enabled
	// deployments from a map it cannot confirm is current: past it (since
	// it last knew it held everything the stream held) such requests get
	// 503 gateway_stale with Retry-After until it has caught up. It is
	// checked before every decision, so a process that was frozen admits
	// nothing queued on old state. 0 means DefaultMaxStaleness; negative
	// means never (serve forever from the last map: a trade-off of
	// availability over revocation, see docs/gateway.md).
	MaxStaleness time.Duration
	// Snapshots, if set, is where the gateway starts its auth map from
	// (the latest usable snapshot, then the records after it); nil:
	// replay the whole stream. Gateways only read snapshots: the control
	// plane's snapshotter writes them (snapshots.Snapshotter).
	Snapshots *snapshots.Store
	// Heartbeat is how often the gateway reports its applied sequence on
	// NATS when nothing changes (receipts, SPEC §5); it also reports at
	// once after every applied record. Default receipts.DefaultHeartbeat.
	// Reports need NATS; without it there are none.
	Heartbeat time.Duration
	// Bounds are the data plane's time bounds (docs/gateway.md, "Time
	// bounds"); zero fields take their defaults. Serve the gateway with a
	// Front made with the same.
	Bounds Bounds
	// Usage is how the gateway counts and publishes usage
	// (docs/usage.md).
	Usage Usage
}

// Usage configures usage counting.
type Usage struct {
	// FlushInterval is how often counts are published to the usage
	// stream; 0: DefaultUsageFlushInterval; negative: usage is not
	// counted.
	FlushInterval time.Duration
	// MaxPending bounds the rows (deployment, key, minute) kept while
	// NATS is away; 0: 100,000 (~10 MB).
	MaxPending int
	// Cells is how many (deployment, key) pairs one interval's counter
	// table holds; 0: 16,384 (1 MiB a table, three tables).
	Cells int
}

// DefaultUsageFlushInterval is how often a gateway publishes its counts.
const DefaultUsageFlushInterval = tally.DefaultInterval

// Bounds are the data plane's time bounds, on both front ends.
type Bounds = bounds.Bounds

// The bounds' defaults (docs/gateway.md, "Time bounds", says why each).
const (
	DefaultHeadTimeout             = bounds.DefaultHead
	DefaultBodyTimeout             = bounds.DefaultBody
	DefaultBodyMinRate             = int64(bounds.DefaultBodyMinRate)
	DefaultUpstreamConnectTimeout  = bounds.DefaultConnect
	DefaultUpstreamResponseTimeout = bounds.DefaultResponseHead
	DefaultWriteTimeout            = bounds.DefaultWrite
	DefaultIdleTimeout             = bounds.DefaultIdle
)

// DefaultMaxStaleness is the staleness bound when Config sets none.
const DefaultMaxStaleness = 5 * time.Minute

// ErrInvalidConfig wraps every configuration problem.
var ErrInvalidConfig = errors.New("gateway: invalid config")

func (c *Config) setDefaults() {
	if c.Region == "" {
		c.Region = "local"
	}
	if c.BaseDomain == "" {
		c.BaseDomain = "localhost"
	}
	c.BaseDomain = strings.ToLower(strings.Trim(c.BaseDomain, "."))
	if c.ID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.ID = "gw-" + hex.EncodeToString(b[:])
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.MaxStaleness == 0 {
		c.MaxStaleness = DefaultMaxStaleness
	}
	c.Bounds.SetDefaults()
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Events == nil {
		errs = append(errs, fmt.Errorf("%w: Events is required", ErrInvalidConfig))
	}
	if c.ID == "" || strings.ContainsAny(c.ID, ".*> \t") || strings.ContainsAny(c.Region, ".*> \t") {
		errs = append(errs, fmt.Errorf("%w: id %q and region %q must be NATS subject tokens", ErrInvalidConfig, c.ID, c.Region))
	}
	if strings.ContainsAny(c.BaseDomain, "/: ") {
		errs = append(errs, fmt.Errorf("%w: base domain %q is not a host name", ErrInvalidConfig, c.BaseDomain))
	}
	if err := c.Bounds.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrInvalidConfig, err))
	}
	return errors.Join(errs...)
}

// Gateway is one edge gateway.
type Gateway struct {
	cfg      Config
	reporter *receipts.Reporter // nil without NATS
	// authMap is the map requests are decided on; Reset swaps in a new
	// one, so the map of a stream that no longer exists is never read
	// again.
	authMap  atomic.Pointer[authmap.Map]
	follower *follow.Follower
	metrics  *metrics.Metrics
	proxy    *proxy.Handler
	handler  http.Handler
	// snapshotSeq is the sequence of the snapshot the map started from;
	// 0: none.
	snapshotSeq atomic.Uint64
	// usage counts requests and flushes the counts (nil: not counted).
	usage   *tally.Counter
	flusher *tally.Flusher
}

// New returns a gateway; it serves nothing but 503s until Run has caught
// it up with the stream.
func New(cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Log = cfg.Log.With("gateway", cfg.ID, "region", cfg.Region)
	g := &Gateway{cfg: cfg}
	g.authMap.Store(authmap.New())
	var (
		connected func() bool
		onApplied func(uint64)
	)
	if cfg.NATS != nil {
		connected = cfg.NATS.IsConnected
		rep, err := receipts.NewReporter(cfg.NATS, cfg.ID, cfg.Region, cfg.Heartbeat,
			g.Receipt, cfg.Log)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		g.reporter = rep
		// Report at once after every record once ready; while replaying
		// at start-up the heartbeat says "not ready" and nobody waits on
		// this gateway, and a report (with its flush, a round trip to
		// NATS) per replayed record cost 8 % of a cold start's CPU
		// (docs/benchmarks.md). The record that makes the gateway ready
		// is reported at once: the follower is ready before OnApplied.
		onApplied = func(uint64) {
			if g.follower.Ready() {
				rep.Changed()
			}
		}
	}
	var onReady func()
	if g.reporter != nil {
		onReady = g.reporter.Changed
	}
	g.follower = follow.New(follow.Config{
		Name:         "gateway",
		Source:       cfg.Events,
		Consumer:     mapConsumer{g},
		Log:          cfg.Log,
		Now:          cfg.Now,
		PollInterval: cfg.PollInterval,
		Connected:    connected,
		OnApplied:    onApplied,
		OnReady:      onReady,
	})
	if cfg.Usage.FlushInterval >= 0 {
		g.usage = tally.NewCounter(cfg.Usage.Cells, g.authMap.Load())
		var js jetstream.JetStream
		if cfg.NATS != nil {
			js, _ = jetstream.New(cfg.NATS)
		}
		g.flusher = tally.NewFlusher(tally.FlusherConfig{
			Counter: g.usage, Map: g.authMap.Load, JS: js, Region: cfg.Region, ID: cfg.ID,
			Interval: cfg.Usage.FlushInterval, MaxPending: cfg.Usage.MaxPending, Log: cfg.Log,
		})
	}
	g.metrics = metrics.New(g.streamMetrics)
	if g.flusher != nil {
		g.metrics.UsageStats(func() metrics.Usage {
			st := g.flusher.Stats()
			return metrics.Usage{Published: st.Published, Failures: st.Failures, Merged: st.Merged, Dropped: st.Dropped,
				PendingRows: st.PendingRows, Overflow: st.Overflow, OtherMap: st.OtherMap}
		})
	}
	g.proxy = proxy.New(proxy.Config{
		Usage:     g.usage,
		Map:       g.authMap.Load,
		Region:    cfg.Region,
		Ready:     g.follower.Ready,
		Stale:     g.StaleAt,
		Now:       cfg.Now,
		Metrics:   g.metrics,
		Log:       cfg.Log,
		Upstreams: cfg.Upstreams,
		Bounds:    cfg.Bounds,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", g.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(g.metrics.Registry, promhttp.HandlerOpts{Registry: g.metrics.Registry}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		proxy.WriteError(w, http.StatusNotFound, proxy.CodeDeploymentNotFound)
	})
	g.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = proxy.BoundWrites(w, cfg.Bounds.Write)
		switch t, kind := route.Parse(r, cfg.BaseDomain); kind {
		case route.Deployment:
			g.proxy.Serve(w, r, t)
		case route.Unroutable:
			g.metrics.Decided(authmap.ResultDeploymentNotFound)
			proxy.Refuse(w, r, http.StatusNotFound, proxy.CodeDeploymentNotFound)
		case route.BadPath:
			proxy.Refuse(w, r, http.StatusBadRequest, proxy.CodeInvalidPath)
		default:
			mux.ServeHTTP(w, r)
		}
	})
	return g, nil
}

// Run replays the event stream from the start (or from the latest usable
// snapshot, see Config.Snapshots) into the auth map, then follows it live, until ctx ends; it returns ctx's error. Losing NATS is
// not an error: the gateway keeps serving from its map, reports itself
// stale, and resumes from the last applied record when NATS is back.
// With NATS it also reports its applied sequence (receipts) as it moves.
func (g *Gateway) Run(ctx context.Context) error {
	g.cfg.Log.Info("gateway starting", "base_domain", g.cfg.BaseDomain)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if g.reporter != nil {
		wg.Go(func() { _ = g.reporter.Run(ctx) })
	}
	if g.flusher != nil {
		wg.Go(func() { _ = g.flusher.Run(ctx) })
	}
	return g.follower.Run(ctx)
}

// FlushUsage publishes what the gateway counted and has not published
// yet, now, within ctx; a process calls it after its server has stopped,
// so the last requests' counts are not lost. Without usage counting it
// does nothing.
func (g *Gateway) FlushUsage(ctx context.Context) error {
	if g.flusher == nil {
		return nil
	}
	return g.flusher.Flush(ctx)
}

// Handler is the gateway's whole HTTP surface: deployments by host and by
// /d/ path, and for any other request /healthz, /readyz and /metrics.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Ready reports whether the gateway has caught up with the stream's last
// sequence as of start-up. It stays true while NATS is away (the gateway
// serves its map and reports staleness; see Status).
func (g *Gateway) Ready() bool { return g.follower.Ready() }

// Applied is the stream sequence of the last record applied.
func (g *Gateway) Applied() uint64 { return g.follower.Applied() }

// WaitApplied blocks until the gateway has applied the record at seq (or a
// later one), or ctx ends: after it returns nil, the next request sees
// every change up to seq.
func (g *Gateway) WaitApplied(ctx context.Context, seq uint64) error {
	return g.follower.WaitFor(ctx, seq)
}

// Receipt is what the gateway reports to the control plane: the stream's
// life its map is built from, the last sequence applied, and readiness.
func (g *Gateway) Receipt() receipts.State {
	cp := g.follower.Checkpoint()
	return receipts.State{Stream: cp.Stream, Sequence: cp.Sequence, Ready: g.Ready(),
		Stale: g.StaleAt(g.cfg.Now()), MaxStaleness: max(g.cfg.MaxStaleness, 0)}
}

// StaleAt reports whether, at now, the gateway is past its staleness
// bound: it has not known itself to hold everything the stream held for
// longer than MaxStaleness. Requests to auth-enabled deployments are then
// refused with 503 gateway_stale.
func (g *Gateway) StaleAt(now time.Time) bool {
	if g.cfg.MaxStaleness < 0 {
		return false
	}
	return now.UnixNano()-g.follower.SyncedUnixNano() > int64(g.cfg.MaxStaleness)
}

// Changed returns a channel closed when the next record is applied; a
// propagation reporter waits on it to publish the applied sequence as it
// moves.
func (g *Gateway) Changed() <-chan struct{} { return g.follower.Changed() }

// Bounds are the gateway's time bounds, defaults filled in.
func (g *Gateway) Bounds() Bounds { return g.cfg.Bounds }

// ID is the gateway's id.
func (g *Gateway) ID() string { return g.cfg.ID }

// Region is the gateway's region.
func (g *Gateway) Region() string { return g.cfg.Region }

// Status is what /readyz reports.
type Status struct {
	ID     string `json:"id"`
	Region string `json:"region"`
	// Ready: caught up with the stream as of start-up, or as of the
	// stream's new life after a reset.
	Ready bool `json:"ready"`
	// Stream names the life of the event stream the map is built from
	// (name@creation time); "none" while the stream is gone.
	Stream string `json:"stream"`
	// Resets counts how often the map was dropped and rebuilt because the
	// stream was another life of it, went back, or was gone (the first
	// placement on a stream included).
	Resets uint64 `json:"resets"`
	// RefusingStale: past its staleness bound; requests to auth-enabled
	// deployments get 503 gateway_stale until it has caught up.
	RefusingStale bool `json:"refusing_stale"`
	// SecondsSinceSynced is how long ago the gateway last knew it held
	// everything the stream held (-1: never); MaxStalenessSeconds its
	// bound (-1: none).
	SecondsSinceSynced  float64 `json:"seconds_since_synced"`
	MaxStalenessSeconds float64 `json:"max_staleness_seconds"`
	// Stale: NATS is disconnected, or the stream has not answered for
	// three poll intervals; the map may miss recent changes.
	Stale              bool   `json:"stale"`
	AppliedSequence    uint64 `json:"applied_sequence"`
	StreamLastSequence uint64 `json:"stream_last_sequence"`
	Lag                uint64 `json:"lag"`
	// SnapshotSequence is the sequence of the snapshot the map started
	// from; 0: it replayed the stream from the start.
	SnapshotSequence   uint64  `json:"snapshot_sequence"`
	NATSConnected      bool    `json:"nats_connected"`
	SecondsSinceEvent  float64 `json:"seconds_since_last_event"`
	SecondsSinceStream float64 `json:"seconds_since_stream_contact"`
	Error              string  `json:"error,omitempty"`
}

// Status reports the gateway's state.
func (g *Gateway) Status() Status {
	s := g.follower.Status()
	st := Status{
		ID:                  g.cfg.ID,
		Region:              g.cfg.Region,
		Ready:               s.Ready,
		Stream:              s.Stream.String(),
		RefusingStale:       s.Ready && g.StaleAt(g.cfg.Now()),
		SecondsSinceSynced:  seconds(s.SinceSynced),
		MaxStalenessSeconds: -1,
		Resets:              s.Resets,
		Stale:               s.Stale,
		AppliedSequence:     s.Applied,
		StreamLastSequence:  s.StreamLast,
		Lag:                 s.Lag,
		SnapshotSequence:    g.snapshotSeq.Load(),
		NATSConnected:       s.Connected,
		SecondsSinceEvent:   seconds(s.SinceLastEvent),
		SecondsSinceStream:  seconds(s.SinceLastContact),
	}
	if g.cfg.MaxStaleness > 0 {
		st.MaxStalenessSeconds = g.cfg.MaxStaleness.Seconds()
	}
	if s.Err != nil {
		st.Error = s.Err.Error()
	}
	return st
}

func seconds(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return d.Seconds()
}

func (g *Gateway) streamMetrics() metrics.Stream {
	s := g.follower.Status()
	return metrics.Stream{
		Applied:          s.Applied,
		StreamLast:       s.StreamLast,
		Lag:              s.Lag,
		Connected:        s.Connected,
		Ready:            s.Ready,
		Stale:            s.Stale,
		SinceLastEvent:   s.SinceLastEvent,
		SinceLastContact: s.SinceLastContact,
		SnapshotStart:    g.snapshotSeq.Load(),
		MapOffHeapBytes:  g.authMap.Load().OffHeapBytes(),
		Resets:           s.Resets,
		SinceSynced:      s.SinceSynced,
		RefusingStale:    s.Ready && g.StaleAt(g.cfg.Now()),
	}
}

// readyz is 200 once the gateway has caught up with the stream as of its
// start, and stays 200 while it is stale (NATS away): its map is then the
// best answer there is, and taking every gateway out of the load balancer
// because the control plane is down would turn a control-plane outage into
// a data-plane one. The body says how stale it is.
func (g *Gateway) readyz(w http.ResponseWriter, _ *http.Request) {
	st := g.Status()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !st.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(st)
}
