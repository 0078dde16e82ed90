package receipts

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/services/internal/eventstore"
)

// Reporter publishes one gateway's receipts.
type Reporter struct {
	nc        *nats.Conn
	id        string
	region    string
	heartbeat time.Duration
	state     func() State
	log       *slog.Logger
	changed   chan struct{}
}

// State is what a gateway reports: the life of the stream it follows, the
// last sequence of it applied, and whether it has caught up.
type State struct {
	Stream   eventstore.Identity
	Sequence uint64
	Ready    bool
	// Stale is true while the gateway refuses requests to auth-enabled
	// deployments as stale.
	Stale bool
	// MaxStaleness is the gateway's staleness bound; 0: none (it serves
	// forever).
	MaxStaleness time.Duration
}

func (r *Reporter) report(st State, leaving bool) Report {
	return Report{
		ID: r.id, Region: r.region, Stream: st.Stream.Stream, StreamCreated: st.Stream.Created,
		Sequence: st.Sequence, Ready: st.Ready, IntervalMS: r.heartbeat.Milliseconds(),
		MaxStalenessMS: st.MaxStaleness.Milliseconds(), Stale: st.Stale, Leaving: leaving,
	}
}

// NewReporter returns a reporter for gateway id in region; state tells the
// stream, applied sequence and readiness. heartbeat 0 means
// DefaultHeartbeat.
func NewReporter(nc *nats.Conn, id, region string, heartbeat time.Duration, state func() State, log *slog.Logger) (*Reporter, error) {
	if heartbeat == 0 {
		heartbeat = DefaultHeartbeat
	}
	if id == "" || region == "" || strings.ContainsAny(id+region, ".*> ") {
		return nil, fmt.Errorf("receipts: id %q and region %q must be non-empty subject tokens", id, region)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{nc: nc, id: id, region: region, heartbeat: heartbeat, state: state, log: log, changed: make(chan struct{}, 1)}, nil
}

// Changed tells the reporter the state changed; it reports at once. It
// never blocks, so the gateway can call it after every applied record.
func (r *Reporter) Changed() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Run reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	subject := SubjectPrefix + "." + r.region + "." + r.id
	tick := time.NewTicker(r.heartbeat)
	defer tick.Stop()
	var last State
	for {
		st := r.state()
		if err := r.nc.Publish(subject, r.report(st, false).marshal()); err != nil && ctx.Err() == nil {
			r.log.Warn("receipt not published", "err", err)
		}
		// Flush promptly after a change so the waiting caller hears it now,
		// not when the connection's buffer next fills.
		if st.Sequence != last.Sequence || st.Ready != last.Ready || st.Stale != last.Stale || !st.Stream.Equal(last.Stream) {
			_ = r.nc.FlushTimeout(time.Second)
			last = st
		}
		select {
		case <-ctx.Done():
			// Say goodbye, so the control plane stops counting this
			// gateway now rather than after its staleness bound.
			_ = r.nc.Publish(subject, r.report(r.state(), true).marshal())
			_ = r.nc.FlushTimeout(time.Second)
			return nil
		case <-tick.C:
		case <-r.changed:
		}
	}
}
