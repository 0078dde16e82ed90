// Package metrics is the gateway's Prometheus instrumentation, on a
// registry of its own (no globals), so several gateways can live in one
// process.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/infergate/infergate/services/internal/authmap"
)

// GatewayNotReady is the decision label of a request refused because the
// gateway has not caught up with the stream yet.
const GatewayNotReady = "gateway_not_ready"

// GatewayStale is the decision label of a request to an auth-enabled
// deployment refused because the gateway was past its staleness bound.
const GatewayStale = "gateway_stale"

// Stream is what the gateway knows about the event stream, read at scrape
// time.
type Stream struct {
	Applied          uint64
	StreamLast       uint64
	Lag              uint64
	Connected        bool
	Ready            bool
	Stale            bool
	SinceLastEvent   time.Duration // -1 when none yet
	SinceLastContact time.Duration // -1 when none yet
	// SnapshotStart is the sequence of the snapshot the map started from;
	// 0 when it replayed the stream from the start.
	SnapshotStart uint64
	// MapOffHeapBytes is the auth map's memory outside the Go heap.
	MapOffHeapBytes int
	// SinceSynced is how long ago the gateway last knew it held everything
	// the stream held; -1 when never.
	SinceSynced time.Duration
	// RefusingStale is true while past the staleness bound.
	RefusingStale bool
	// Resets counts auth maps dropped because the stream was another life
	// of it, went back or was gone (the first placement included).
	Resets uint64
}

// Metrics holds the gateway's collectors.
type Metrics struct {
	// Registry is what /metrics serves.
	Registry *prometheus.Registry

	decisions      [authmap.NumResults]prometheus.Counter
	notReady       prometheus.Counter
	stale          prometheus.Counter
	upstream       prometheus.Histogram
	upstreamErrors *prometheus.CounterVec
}

// New registers the collectors; stream is called at every scrape.
func New(stream func() Stream) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "infergate_gateway_decisions_total",
		Help: "Requests to deployments by the gateway's decision: allowed, auth_disabled, missing_api_key, invalid_api_key, deployment_not_found, deployment_not_ready, gateway_not_ready.",
	}, []string{"result"})
	// Resolve every label once, so counting a decision is one atomic add.
	for r := authmap.Result(1); r < authmap.NumResults; r++ {
		m.decisions[r] = decisions.WithLabelValues(r.String())
	}
	m.notReady = decisions.WithLabelValues(GatewayNotReady)
	m.stale = decisions.WithLabelValues(GatewayStale)
	m.upstream = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "infergate_gateway_upstream_response_seconds",
		Help:    "Time from sending a request upstream to the upstream's response headers (or its failure).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14), // 0.5 ms .. ~75 s
	})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "infergate_gateway_upstream_errors_total",
		Help: "Proxied requests that got no response from the upstream (502), by cause: unreachable, or canceled by the client.",
	}, []string{"cause"})
	gauge := func(name, help string, f func(Stream) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(stream()) })
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	secs := func(d time.Duration) float64 {
		if d < 0 {
			return -1
		}
		return d.Seconds()
	}
	reg.MustRegister(
		decisions, m.upstream, m.upstreamErrors,
		gauge("infergate_gateway_snapshot_start_sequence", "Stream sequence of the auth map snapshot the gateway started from; 0: it replayed the stream from the start.",
			func(s Stream) float64 { return float64(s.SnapshotStart) }),
		gauge("infergate_gateway_authmap_offheap_bytes", "Memory the auth map holds outside the Go heap (its key table, on huge pages), which the go_memstats metrics do not count.",
			func(s Stream) float64 { return float64(s.MapOffHeapBytes) }),
		gauge("infergate_gateway_applied_sequence", "Stream sequence of the last event record applied to the auth map.",
			func(s Stream) float64 { return float64(s.Applied) }),
		gauge("infergate_gateway_stream_last_sequence", "The stream's last sequence, as last read from NATS.",
			func(s Stream) float64 { return float64(s.StreamLast) }),
		gauge("infergate_gateway_lag_events", "Stream last sequence minus applied sequence.",
			func(s Stream) float64 { return float64(s.Lag) }),
		gauge("infergate_gateway_nats_connected", "1 while the gateway's NATS connection is up.",
			func(s Stream) float64 { return b(s.Connected) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "infergate_gateway_stream_resets_total",
			Help: "Auth maps dropped and rebuilt because the event stream was another life of it (deleted and created again), went back, or was gone; the first placement on a stream counts as one."},
			func() float64 { return float64(stream().Resets) }),
		gauge("infergate_gateway_seconds_since_synced", "Seconds since the gateway last knew its auth map held everything the stream held (its staleness); -1 before the first time.",
			func(s Stream) float64 { return secs(s.SinceSynced) }),
		gauge("infergate_gateway_refusing_stale", "1 while the gateway is past --max-staleness and answers requests to auth-enabled deployments with 503 gateway_stale.",
			func(s Stream) float64 { return b(s.RefusingStale) }),
		gauge("infergate_gateway_ready", "1 once the gateway has caught up with the stream as of its start, or of its new life after a reset.",
			func(s Stream) float64 { return b(s.Ready) }),
		gauge("infergate_gateway_stale", "1 while the gateway cannot confirm it is up to date with the stream (NATS down or unanswered); it keeps serving from its map.",
			func(s Stream) float64 { return b(s.Stale) }),
		gauge("infergate_gateway_seconds_since_last_event", "Seconds since the last event record was applied; -1 before the first.",
			func(s Stream) float64 { return secs(s.SinceLastEvent) }),
		gauge("infergate_gateway_seconds_since_stream_contact", "Seconds since the stream's last sequence was last read; the staleness bound of the auth map. -1 before the first read.",
			func(s Stream) float64 { return secs(s.SinceLastContact) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Usage is the usage flusher's state, read at scrape time.
type Usage struct {
	Published, Failures, Merged, Dropped uint64
	PendingRows                          int64
	Overflow, OtherMap                   uint64
}

// UsageStats registers the usage collectors; f is called at every scrape.
func (m *Metrics) UsageStats(f func() Usage) {
	counter := func(name, help string, v func(Usage) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(f())) })
	}
	m.Registry.MustRegister(
		counter("infergate_gateway_usage_flushes_total", "Usage flush messages the usage stream acknowledged.",
			func(u Usage) uint64 { return u.Published }),
		counter("infergate_gateway_usage_flush_failures_total", "Attempts to publish a usage flush that failed (kept and retried with the same message id).",
			func(u Usage) uint64 { return u.Failures }),
		counter("infergate_gateway_usage_merged_requests_total", "Requests whose counts were merged into an earlier minute of the same key and deployment because the pending bound was hit while NATS was away (counted, minute less exact).",
			func(u Usage) uint64 { return u.Merged }),
		counter("infergate_gateway_usage_dropped_requests_total", "Requests whose counts were dropped because the pending bound was hit while NATS was away and their key and deployment had nothing pending.",
			func(u Usage) uint64 { return u.Dropped }),
		counter("infergate_gateway_usage_uncounted_requests_total", "Requests not counted in usage: no free cell in the interval's table (more key and deployment pairs in one interval than it holds), or decided on an auth map the gateway had just replaced.",
			func(u Usage) uint64 { return u.Overflow + u.OtherMap }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "infergate_gateway_usage_pending_rows", Help: "Usage rows (key, deployment, minute) waiting to be published."},
			func() float64 { return float64(f().PendingRows) }),
	)
}

// StreamLoopStats registers the HTTP/1.1 fast path's event-loop
// collectors; f (streams parked now, streams parked ever) is called at
// every scrape.
func (m *Metrics) StreamLoopStats(f func() (now, total uint64)) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "infergate_gateway_streams_parked", Help: "Streams an event loop carries between chunks now (HTTP/1.1 fast path, Linux)."},
			func() float64 { n, _ := f(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "infergate_gateway_streams_parked_total", Help: "Times a stream was parked on an event loop (once per stream, again after each hand-back to its goroutine)."},
			func() float64 { _, t := f(); return float64(t) }),
	)
}

// Decided counts one decision.
func (m *Metrics) Decided(r authmap.Result) {
	if r > 0 && r < authmap.NumResults {
		m.decisions[r].Inc()
	}
}

// RefusedNotReady counts a request refused before the gateway was ready.
func (m *Metrics) RefusedNotReady() { m.notReady.Inc() }

// RefusedStale counts a request refused past the staleness bound.
func (m *Metrics) RefusedStale() { m.stale.Inc() }

// Upstream records how long the upstream took to answer.
func (m *Metrics) Upstream(d time.Duration) { m.upstream.Observe(d.Seconds()) }

// UpstreamError counts a proxied request that got no response.
func (m *Metrics) UpstreamError(canceled bool) {
	cause := "unreachable"
	if canceled {
		cause = "client_canceled"
	}
	m.upstreamErrors.WithLabelValues(cause).Inc()
}
