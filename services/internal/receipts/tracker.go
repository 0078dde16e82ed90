package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/durationpb"

	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// Tracker follows every gateway's reports and implements
// propagation.Waiter.
type Tracker struct {
	sub *nats.Subscription
	now func() time.Time
	// stream reads the life of the stream writes go to now.
	stream func(ctx context.Context) (eventstore.Identity, error)

	mu sync.Mutex // mu protects the fields below
	// gateways are the latest report of each gateway, by id.
	gateways map[string]seen
	// changed is closed and replaced on every report.
	changed chan struct{}
}

type seen struct {
	Report
	at time.Time
}

// NewTracker subscribes to the reports; Close stops it. stream reads the
// life of the stream the writes go to: a receipt counts only if it is for
// that life.
func NewTracker(nc *nats.Conn, stream func(ctx context.Context) (eventstore.Identity, error)) (*Tracker, error) {
	t := &Tracker{now: time.Now, stream: stream, gateways: map[string]seen{}, changed: make(chan struct{})}
	sub, err := nc.Subscribe(SubjectPrefix+".>", t.receive)
	if err != nil {
		return nil, fmt.Errorf("receipts: subscribe: %w", err)
	}
	t.sub = sub
	return t, nil
}

// Close unsubscribes.
func (t *Tracker) Close() { _ = t.sub.Unsubscribe() }

func (t *Tracker) receive(msg *nats.Msg) {
	var r Report
	if err := json.Unmarshal(msg.Data, &r); err != nil || r.validate() != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	prev, ok := t.gateways[r.ID]
	if ok && prev.Region == r.Region && r.Sequence < prev.Sequence && prev.Ready && r.identity().Equal(prev.identity()) {
		// Out-of-order delivery cannot move a gateway backwards; a restarted
		// gateway starts not ready and climbs again.
		r.Sequence = prev.Sequence
	}
	t.gateways[r.ID] = seen{Report: r, at: t.now()}
	close(t.changed)
	t.changed = make(chan struct{})
}

// Gateway is a live gateway as the tracker sees it.
type Gateway struct {
	ID       string
	Region   string
	Sequence uint64
	Ready    bool
	LastSeen time.Time
}

// Gateways returns the live gateways, sorted by id.
func (t *Tracker) Gateways() []Gateway {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Gateway
	now := t.now()
	for _, g := range t.gateways {
		if g.live(now) {
			out = append(out, Gateway{ID: g.ID, Region: g.Region, Sequence: g.Sequence, Ready: g.Ready, LastSeen: g.at})
		}
	}
	slices.SortFunc(out, func(a, b Gateway) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

func (g seen) live(now time.Time) bool {
	return now.Sub(g.at) <= missedHeartbeats*time.Duration(g.IntervalMS)*time.Millisecond
}

// count reports, under t.mu, how many live ready gateways of the regions
// there are and how many have applied seq of the stream's life id.
func (t *Tracker) count(id eventstore.Identity, seq uint64, regions []string) (total, applied uint32) {
	now := t.now()
	for _, g := range t.gateways {
		if !g.Ready || !g.live(now) || (len(regions) > 0 && !slices.Contains(regions, g.Region)) {
			continue
		}
		total++
		if g.Sequence >= seq && !id.IsZero() && g.identity().Equal(id) {
			applied++
		}
	}
	return total, applied
}

// Wait blocks until every live, ready gateway of the regions (every
// region when empty) has applied sequence, or timeout passes, or ctx ends,
// and says how far the change got. With no live gateway it returns at once
// and the change is not confirmed: nothing enforces it yet, and claiming
// otherwise would let a caller trust a receipt nobody gave.
func (t *Tracker) Wait(ctx context.Context, sequence uint64, regions []string, timeout time.Duration) *propagationv1.Propagation {
	start := t.now()
	// The stream's life now: the write just appended went to it (or to a
	// later one, which no receipt of this one may confirm either).
	sctx, cancel := context.WithTimeout(ctx, timeout)
	id, err := t.stream(sctx)
	cancel()
	if err != nil {
		id = eventstore.Identity{} // confirms nothing
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Re-check at least every 100 ms so a gateway that goes quiet drops out
	// of the count even if nobody else reports.
	recheck := time.NewTicker(100 * time.Millisecond)
	defer recheck.Stop()
	for {
		t.mu.Lock()
		total, applied := t.count(id, sequence, regions)
		changed := t.changed
		t.mu.Unlock()
		done := total > 0 && applied == total
		// With no live gateway there is nothing to wait for: answer at once.
		if !done && total > 0 {
			select {
			case <-changed:
				continue
			case <-recheck.C:
				continue
			case <-deadline.C:
			case <-ctx.Done():
			}
		}
		return &propagationv1.Propagation{
			Sequence:        sequence,
			Gateways:        total,
			GatewaysApplied: applied,
			Confirmed:       done,
			Waited:          durationpb.New(t.now().Sub(start)),
		}
	}
}
