package receipts

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Reporter publishes one gateway's receipts.
type Reporter struct {
	nc        *nats.Conn
	id        string
	region    string
	heartbeat time.Duration
	state     func() (sequence uint64, ready bool)
	log       *slog.Logger
	changed   chan struct{}
}

// NewReporter returns a reporter for gateway id in region; state tells the
// applied sequence and readiness. heartbeat 0 means DefaultHeartbeat.
func NewReporter(nc *nats.Conn, id, region string, heartbeat time.Duration, state func() (uint64, bool), log *slog.Logger) (*Reporter, error) {
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
	var last uint64
	for {
		seq, ready := r.state()
		if err := r.nc.Publish(subject, Report{
			ID: r.id, Region: r.region, Sequence: seq, Ready: ready, IntervalMS: r.heartbeat.Milliseconds(),
		}.marshal()); err != nil && ctx.Err() == nil {
			r.log.Warn("receipt not published", "err", err)
		}
		// Flush promptly after a change so the waiting caller hears it now,
		// not when the connection's buffer next fills.
		if seq != last {
			_ = r.nc.FlushTimeout(time.Second)
			last = seq
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.changed:
		}
	}
}
