package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	if msg.Subject != SubjectPrefix+"."+r.Region+"."+r.ID {
		// A gateway's NATS user may publish on its own subject only
		// (natsauth): a report is believed only for the gateway its
		// subject names, so one gateway cannot speak for another.
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.Leaving {
		delete(t.gateways, r.ID)
	} else {
		t.gateways[r.ID] = seen{Report: r, at: t.now()}
	}
	close(t.changed)
	t.changed = make(chan struct{})
}

// Gateway is a gateway as the tracker last heard of it.
type Gateway struct {
	ID       string
	Region   string
	Stream   eventstore.Identity
	Sequence uint64
	Ready    bool
	Stale    bool
	LastSeen time.Time
}

// Gateways returns the gateways heard from within a few heartbeats,
// sorted by id.
func (t *Tracker) Gateways() []Gateway {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Gateway
	now := t.now()
	for _, g := range t.gateways {
		if g.heard(now) {
			out = append(out, Gateway{ID: g.ID, Region: g.Region, Stream: g.identity(), Sequence: g.Sequence,
				Ready: g.Ready, Stale: g.Stale, LastSeen: g.at})
		}
	}
	slices.SortFunc(out, func(a, b Gateway) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// heard reports whether the gateway's reports are still coming.
func (g seen) heard(now time.Time) bool {
	return now.Sub(g.at) <= missedHeartbeats*time.Duration(g.IntervalMS)*time.Millisecond
}

// silentPastBound reports whether the gateway has not reported for longer
// than its staleness bound: whatever it did since, it now refuses requests
// to auth-enabled deployments (it cannot have been in step with the stream
// after its last report). Never true for a gateway without a bound.
func (g seen) silentPastBound(now time.Time) bool {
	return g.MaxStalenessMS > 0 && now.Sub(g.at) > time.Duration(g.MaxStalenessMS)*time.Millisecond
}

// forgotten is how long after its bound a silent gateway is kept, listed
// as refusing, before the tracker forgets it.
const forgotten = 10 * time.Minute

// tally counts, under t.mu, the gateways of the regions that must enforce
// the change at seq of the stream's life id: every ready gateway heard
// from recently, and every one that went silent, until well past its
// staleness bound (a frozen or cut-off gateway may still be serving from
// its map until then, so it is not dropped). done is true when each has
// applied the change or refuses as stale.
func (t *Tracker) tally(id eventstore.Identity, seq uint64, regions []string) (p *propagationv1.Propagation, done bool) {
	now := t.now()
	p = &propagationv1.Propagation{Sequence: seq}
	done = true
	for gid, g := range t.gateways {
		if g.silentPastBound(now) && now.Sub(g.at) > time.Duration(g.MaxStalenessMS)*time.Millisecond+forgotten {
			delete(t.gateways, gid)
			continue
		}
		if !g.Ready || (len(regions) > 0 && !slices.Contains(regions, g.Region)) {
			continue // a gateway that is not ready refuses every request
		}
		p.Gateways++
		if g.Sequence >= seq && !id.IsZero() && g.identity().Equal(id) {
			p.GatewaysApplied++
			continue
		}
		lag := &propagationv1.LaggingGateway{
			Id:              g.ID,
			Region:          g.Region,
			AppliedSequence: g.Sequence,
			LastHeard:       timestamppb.New(g.at),
			RefusingAsStale: (g.heard(now) && g.Stale) || g.silentPastBound(now),
		}
		if !g.identity().Equal(id) {
			lag.OtherStream = g.identity().String()
		}
		p.Lagging = append(p.Lagging, lag)
		done = done && lag.RefusingAsStale
	}
	slices.SortFunc(p.Lagging, func(a, b *propagationv1.LaggingGateway) int { return strings.Compare(a.Id, b.Id) })
	return p, done && p.Gateways > 0
}

// Wait blocks until every gateway of the regions (every region when
// empty) that must enforce the change has applied sequence or refuses as
// stale, or timeout passes, or ctx ends, and says how far the change got
// and who lags. With no gateway to count it returns at once and the change
// is not confirmed: nothing enforces it yet, and claiming otherwise would
// let a caller trust a receipt nobody gave.
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
	// Re-check at least every 100 ms so a silent gateway passing its
	// bound is seen even if nobody else reports.
	recheck := time.NewTicker(100 * time.Millisecond)
	defer recheck.Stop()
	for {
		t.mu.Lock()
		p, done := t.tally(id, sequence, regions)
		changed := t.changed
		t.mu.Unlock()
		if !done && p.Gateways > 0 {
			select {
			case <-changed:
				continue
			case <-recheck.C:
				continue
			case <-deadline.C:
			case <-ctx.Done():
			}
		}
		p.Confirmed = done
		p.Waited = durationpb.New(t.now().Sub(start))
		return p
	}
}
