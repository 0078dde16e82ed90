package tally

import (
	"crypto/sha256"
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
	a := pendingRowOf(f, pairKey{"p", "a", ""}, minute(1))
	if a == nil || a.n[usage.ClassOK] != 1 || a.n[usage.ClassRefused] != 1 || a.last != minute(2) {
		t.Errorf("a's waiting row: %+v", a)
	}
	// The next message carries what was dropped.
	f.inflight = nil
	f.freeze()
	if in := inflight(t, f); in.GetSequence() != 2 || in.GetDropped() != 1 || len(in.GetRows()) != 2 || f.pending != 0 {
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

// pendingRowOf is f's pending row of pair p in the minute of t (Unix ns);
// nil when none.
func pendingRowOf(f *Flusher, p pairKey, t int64) *pendingRow {
	for i := range f.rows {
		k := f.rows[i].key
		if q, ok := f.names(k); ok && !f.rows[i].frozen && q == p && int64(k.minute) == t/int64(time.Minute) {
			return &f.rows[i]
		}
	}
	return nil
}

// keysMap is an auth map with one deployment, dep of project, and keys
// of its project named names, created in that order, and the pair id of
// each key at the deployment, in the same order.
func keysMap(tb testing.TB, project, dep string, names []string) (*authmap.Map, []uint64) {
	tb.Helper()
	m := authmap.New()
	agg := &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, Name: dep}
	evs := []*eventv1.Event{{Project: project, Aggregate: agg, Payload: &eventv1.Event_DeploymentCreated{
		DeploymentCreated: &eventv1.DeploymentCreated{DeploymentId: "d1", Name: dep, UpstreamUrl: "http://up"}}}}
	for i, name := range names {
		sum := sha256.Sum256([]byte(name))
		evs = append(evs, &eventv1.Event{Project: project,
			Aggregate: &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_KEY, Name: name},
			Payload: &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
				KeyId: fmt.Sprintf("id-%d", i), Name: name, SecretSha256: sum[:]}}})
	}
	m.Apply(1, evs)
	d := m.Decide(project, dep, "", "", time.Now()).Deployment
	ids := make([]uint64, len(names))
	for i := range ids {
		// Keys are numbered as they were created, from 1 in a decision.
		ids[i] = uint64(d)<<32 | uint64(i+1)
		if _, _, key, ok := m.Names(d, uint32(i+1)); !ok || key != names[i] {
			tb.Fatalf("key %d is %q (%v)", i, key, ok)
		}
	}
	return m, ids
}

// keyNames are n key names, "key-000000" on.
func keyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("key-%06d", i)
	}
	return names
}

// freezeAll freezes every pending row into messages, each taken as
// published once frozen (what Flush does while publishing succeeds).
func freezeAll(f *Flusher) {
	for f.pending > 0 {
		f.inflight = nil
		f.freeze()
	}
}

// addPairs adds a request of every pair of ids to f, in one minute, as
// the drain of a flush of len(ids) pairs does.
func addPairs(f *Flusher, m *authmap.Map, ids []uint64) {
	for _, id := range ids {
		c := counts{last: 28_000_000 * int64(time.Minute)}
		c.n[usage.ClassOK] = 3
		f.add(m, id, &c)
	}
}

// BenchmarkFreezeAll: every message of a flush of 100,000 pairs (391 of
// maxRows), frozen one after the other as Flush does once each is
// published: the pending rows named and encoded.
func BenchmarkFreezeAll(b *testing.B) {
	m, ids := keysMap(b, "team-a", "chat", keyNames(100_000))
	f := NewFlusher(FlusherConfig{Counter: NewCounter(0, m), Map: func() *authmap.Map { return m }})
	f.pace.Off = true // the work alone
	for b.Loop() {
		b.StopTimer()
		addPairs(f, m, ids)
		b.StartTimer()
		freezeAll(f)
	}
}

// BenchmarkFlushWork: what a flush of 100,000 pairs does besides
// draining the counter and publishing: merge the drained cells, freeze
// the 391 messages, name and encode their rows.
func BenchmarkFlushWork(b *testing.B) {
	m, ids := keysMap(b, "team-a", "chat", keyNames(100_000))
	f := NewFlusher(FlusherConfig{Counter: NewCounter(0, m), Map: func() *authmap.Map { return m }})
	f.pace.Off = true // the work alone
	for b.Loop() {
		addPairs(f, m, ids)
		freezeAll(f)
	}
}

// BenchmarkFlush is a whole flush of 100,000 pairs but the publishing:
// the counter's tables swapped and drained (the one taken out, and the
// one taken out before, drained a second time and cleared), the cells
// merged into pending rows, the 391 messages frozen.
func BenchmarkFlush(b *testing.B) {
	m, ids := keysMap(b, "team-a", "chat", keyNames(100_000))
	c := NewCounter(MaxCells, m)
	f := NewFlusher(FlusherConfig{Counter: c, Map: func() *authmap.Map { return m }})
	f.pace.Off = true // the work alone
	now := time.Now().UnixNano()
	swapRows(c, m) // a table taken out before, as at every flush but the first
	for b.Loop() {
		b.StopTimer()
		for _, id := range ids {
			c.Count(m, uint32(id>>32), uint32(id), usage.ClassOK, now)
		}
		b.StartTimer()
		c.swap(m, &f.pace, f.add)
		freezeAll(f)
	}
}
