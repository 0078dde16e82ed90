package tally

import (
	"fmt"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/usage"
	"google.golang.org/protobuf/proto"
)

// TestFlusherBound: while nothing can be published, the first flush is
// frozen as it was, later counts wait merged by minute, and past
// MaxPending a row joins its pair's newest minute or, for a pair with
// nothing waiting, is dropped — counted either way.
func TestFlusherBound(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	var evs []*eventv1.Event
	for _, name := range []string{"a", "b", "c"} {
		agg := &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, Name: name}
		evs = append(evs, &eventv1.Event{Project: "p", Aggregate: agg, Payload: &eventv1.Event_DeploymentCreated{
			DeploymentCreated: &eventv1.DeploymentCreated{DeploymentId: "id-" + name, Name: name, UpstreamUrl: "http://up"}}})
	}
	m.Apply(1, evs)
	dep := map[string]uint32{}
	for _, name := range []string{"a", "b", "c"} {
		dep[name] = m.Decide("p", name, "", "", time.Now()).Deployment
	}
	c := NewCounter(0, m)
	f := NewFlusher(FlusherConfig{Counter: c, Map: func() *authmap.Map { return m }, Region: "eu", ID: "gw", MaxPending: 2})
	minute := func(n int64) int64 { return (28_000_000 + n) * int64(time.Minute) }
	flush := func() {
		if err := f.Flush(t.Context()); err == nil {
			t.Fatal("flushed without NATS")
		}
	}

	c.Count(m, dep["a"], 0, usage.ClassOK, minute(0))
	flush()
	c.Count(m, dep["a"], 0, usage.ClassOK, minute(1))
	c.Count(m, dep["b"], 0, usage.ClassOK, minute(1))
	flush()
	c.Count(m, dep["a"], 0, usage.ClassRefused, minute(2)) // a new minute of a: merged into minute 1
	c.Count(m, dep["c"], 0, usage.ClassOK, minute(2))      // c has nothing waiting: dropped
	flush()

	st := f.Stats()
	if st.Merged != 1 || st.Dropped != 1 || st.PendingRows != 2 || st.Failures != 3 || st.Published != 0 {
		t.Errorf("stats %+v", st)
	}
	if in := inflight(t, f); in.GetSequence() != 1 || len(in.GetRows()) != 1 || in.GetRows()[0].GetCounts().GetOk() != 1 {
		t.Errorf("the frozen message changed: %v", in)
	}
	a := f.pending[rowKey{"p", "a", "", minute(1) / int64(time.Minute) * 60}]
	if a == nil || a.n[usage.ClassOK] != 1 || a.n[usage.ClassRefused] != 1 || a.last != minute(2) {
		t.Errorf("a's waiting row: %+v", a)
	}
	// The next message carries what was dropped.
	f.inflight = nil
	if err := f.freeze(); err != nil {
		t.Fatal(err)
	}
	if in := inflight(t, f); in.GetSequence() != 2 || in.GetDropped() != 1 || len(in.GetRows()) != 2 || len(f.pending) != 0 {
		t.Errorf("next message: %v", in)
	}
}

// inflight decodes f's frozen message.
func inflight(t *testing.T, f *Flusher) *usagev1.Flush {
	t.Helper()
	var msg usagev1.Flush
	if err := proto.Unmarshal(f.inflight, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.GetSequence() != f.inflightSeq {
		t.Errorf("sequence %d encoded, %d kept", msg.GetSequence(), f.inflightSeq)
	}
	return &msg
}

// pendingRows fills f with n pending rows of one minute, as a flush of n
// pairs leaves them.
func pendingRows(f *Flusher, n int) {
	for i := range n {
		k := rowKey{"p", "d", fmt.Sprintf("key-%06d", i), 28_000_000 * 60}
		r := f.newRow()
		r.n[usage.ClassOK] = 1
		f.pending[k] = r
	}
}

// BenchmarkFreezeAll: every message of a flush of 100,000 pairs (98 of
// maxRows), frozen one after the other as Flush does once each is
// published.
func BenchmarkFreezeAll(b *testing.B) {
	f := NewFlusher(FlusherConfig{Counter: NewCounter(0, authmap.New()), Map: authmap.New})
	for b.Loop() {
		b.StopTimer()
		pendingRows(f, 100_000)
		b.StartTimer()
		for len(f.pending) > 0 {
			f.inflight = nil
			if err := f.freeze(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkFlushWork: what a flush of 100,000 pairs does besides
// publishing: merge the drained rows, freeze the 49 messages, marshal
// each.
func BenchmarkFlushWork(b *testing.B) {
	f := NewFlusher(FlusherConfig{Counter: NewCounter(0, authmap.New()), Map: authmap.New})
	rows := make([]Row, 100_000)
	for i := range rows {
		rows[i] = Row{Project: "team-a", Deployment: "chat", Key: fmt.Sprintf("key-%06d", i), Last: 28_000_000 * int64(time.Minute)}
		rows[i].Counts[usage.ClassOK] = 3
	}
	for b.Loop() {
		f.merge(rows)
		for len(f.pending) > 0 {
			f.inflight = nil
			if err := f.freeze(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
