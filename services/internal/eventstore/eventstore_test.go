package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
)

func openStore(t *testing.T) *eventstore.Store {
	t.Helper()
	_, js := natstest.JetStream(t)
	return natstest.EventStore(t, js)
}

func keyAgg(name string) eventstore.Aggregate {
	return eventstore.Aggregate{Project: "team-a", Type: eventstore.TypeKey, Name: name}
}

func updated(desc string) *eventv1.Event {
	return &eventv1.Event{
		Id:      uuid.NewString(),
		Time:    timestamppb.Now(),
		Actor:   "test",
		Project: "team-a",
		Payload: &eventv1.Event_KeyUpdated{KeyUpdated: &eventv1.KeyUpdated{KeyId: "k1", Description: desc}},
	}
}

func descriptions(recs []eventstore.Record) []string {
	var out []string
	for _, r := range recs {
		for _, e := range r.Events {
			out = append(out, e.GetKeyUpdated().GetDescription())
		}
	}
	return out
}

func TestAppendThenLoad(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	agg := keyAgg("ci-runner")

	recs, version, err := s.Load(ctx, agg)
	if err != nil || len(recs) != 0 || version != 0 {
		t.Fatalf("Load of a new aggregate = %v, %d, %v; want none, 0, nil", recs, version, err)
	}
	// Another aggregate's events must not show up in this one's history.
	if _, err := s.Append(ctx, keyAgg("other"), 0, []*eventv1.Event{updated("x")}); err != nil {
		t.Fatal(err)
	}
	r1, err := s.Append(ctx, agg, 0, []*eventv1.Event{updated("one")})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Append(ctx, agg, r1.Sequence, []*eventv1.Event{updated("two"), updated("three")})
	if err != nil {
		t.Fatal(err)
	}
	recs, version, err = s.Load(ctx, agg)
	if err != nil {
		t.Fatal(err)
	}
	if version != r2.Sequence {
		t.Errorf("version = %d, want %d", version, r2.Sequence)
	}
	if got, want := fmt.Sprint(descriptions(recs)), "[one two three]"; got != want {
		t.Errorf("events = %s, want %s", got, want)
	}
	if recs[0].Sequence != r1.Sequence || recs[1].Sequence != r2.Sequence {
		t.Errorf("record sequences = %d,%d; want %d,%d", recs[0].Sequence, recs[1].Sequence, r1.Sequence, r2.Sequence)
	}
	if recs[1].Aggregate != agg {
		t.Errorf("record aggregate = %v, want %v", recs[1].Aggregate, agg)
	}

	after, v2, err := s.LoadAfter(ctx, agg, r1.Sequence)
	if err != nil || v2 != version || fmt.Sprint(descriptions(after)) != "[two three]" {
		t.Errorf("LoadAfter = %v, %d, %v; want [two three]", descriptions(after), v2, err)
	}

	// Appending at a stale version is refused.
	if _, err := s.Append(ctx, agg, r1.Sequence, []*eventv1.Event{updated("stale")}); !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("stale append error = %v, want ErrConflict", err)
	}
}

func TestRacingAppendsExactlyOneWins(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	agg := keyAgg("contended")
	base, err := s.Append(ctx, agg, 0, []*eventv1.Event{updated("base")})
	if err != nil {
		t.Fatal(err)
	}

	const racers = 20
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      int
		conflicts int
		others    []error
	)
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.Append(ctx, agg, base.Sequence, []*eventv1.Event{updated(fmt.Sprint("racer-", i))})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, eventstore.ErrConflict):
				conflicts++
			default:
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 || conflicts != racers-1 || len(others) > 0 {
		t.Fatalf("wins=%d conflicts=%d others=%v; want 1 win and %d conflicts", wins, conflicts, others, racers-1)
	}
	recs, _, err := s.Load(ctx, agg)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("stream holds %d records for the aggregate, want 2 (base + the winner): %v", len(recs), descriptions(recs))
	}
}

func TestAppendIsIdempotent(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	agg := keyAgg("retried")
	ev := []*eventv1.Event{updated("once")}

	first, err := s.Append(ctx, agg, 0, ev)
	if err != nil {
		t.Fatal(err)
	}
	// The same command retried (same events, same id, same expected
	// version) stores nothing and reports the first append.
	second, err := s.Append(ctx, agg, 0, ev)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !second.Duplicate || second.Sequence != first.Sequence {
		t.Errorf("retry = %+v, want duplicate of sequence %d", second, first.Sequence)
	}
	// An explicit idempotency id works across different event ids.
	if _, err := s.Append(ctx, agg, first.Sequence, []*eventv1.Event{updated("a")}, eventstore.WithMsgID("req-42")); err != nil {
		t.Fatal(err)
	}
	dup, err := s.Append(ctx, agg, first.Sequence, []*eventv1.Event{updated("b")}, eventstore.WithMsgID("req-42"))
	if err != nil || !dup.Duplicate {
		t.Fatalf("retry with the same id = %+v, %v; want a duplicate", dup, err)
	}
	recs, _, err := s.Load(ctx, agg)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(descriptions(recs)); got != "[once a]" {
		t.Errorf("stored events = %s, want [once a]", got)
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	tests := []struct {
		name   string
		agg    eventstore.Aggregate
		events []*eventv1.Event
	}{
		{"empty name", keyAgg(""), []*eventv1.Event{updated("x")}},
		{"empty project", eventstore.Aggregate{Type: "key", Name: "abcd"}, []*eventv1.Event{updated("x")}},
		{"empty type", eventstore.Aggregate{Project: "p", Name: "abcd"}, []*eventv1.Event{updated("x")}},
		{"dot in name", keyAgg("a.b"), []*eventv1.Event{updated("x")}},
		{"star in name", keyAgg("a*"), []*eventv1.Event{updated("x")}},
		{"gt in project", eventstore.Aggregate{Project: ">", Type: "key", Name: "abcd"}, []*eventv1.Event{updated("x")}},
		{"space in name", keyAgg("a b"), []*eventv1.Event{updated("x")}},
		{"no events", keyAgg("abcd"), nil},
		{"event without payload", keyAgg("abcd"), []*eventv1.Event{{Id: "x"}}},
		{"no message id", keyAgg("abcd"), []*eventv1.Event{{Payload: &eventv1.Event_KeyDeleted{KeyDeleted: &eventv1.KeyDeleted{}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(ctx, tt.agg, 0, tt.events)
			if !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("Append error = %v, want ErrInvalid", err)
			}
		})
	}
	last, err := s.LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last != 0 {
		t.Errorf("stream last sequence = %d after only bad appends, want 0", last)
	}
	if _, _, err := s.Load(ctx, keyAgg("a.b")); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("Load of a bad aggregate: %v, want ErrInvalid", err)
	}
}

// follower applies records and remembers them; it stops after limit
// records to simulate a reader that crashes.
type follower struct {
	mu   sync.Mutex
	seqs []uint64
	text []string
}

func (f *follower) apply(r eventstore.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seqs = append(f.seqs, r.Sequence)
	for _, e := range r.Events {
		f.text = append(f.text, e.GetKeyUpdated().GetDescription())
	}
}

func (f *follower) snapshot() ([]uint64, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.seqs...), append([]string(nil), f.text...)
}

var errStop = errors.New("reader stops")

func TestFollowExactlyOnceAcrossRestartWhileAppending(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	const total = 300

	// A writer appends to several aggregates while the reader runs.
	writerDone := make(chan error, 1)
	go func() {
		versions := map[string]uint64{}
		for i := range total {
			name := fmt.Sprintf("key-%d", i%7)
			r, err := s.Append(ctx, keyAgg(name), versions[name], []*eventv1.Event{updated(fmt.Sprint(i))})
			if err != nil {
				writerDone <- err
				return
			}
			versions[name] = r.Sequence
		}
		writerDone <- nil
	}()

	var f follower
	// First life of the reader: it stops after 50 records.
	n := 0
	err := s.Follow(ctx, 0, func(r eventstore.Record) error {
		f.apply(r)
		n++
		if n == 50 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Follow returned %v, want the handler's error", err)
	}
	seqs, _ := f.snapshot()

	// Second life: resume after the last applied sequence, until all are in.
	followCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- s.Follow(followCtx, seqs[len(seqs)-1]+1, func(r eventstore.Record) error {
			f.apply(r)
			if _, text := f.snapshot(); len(text) == total {
				cancel()
			}
			return nil
		})
	}()
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reader did not receive every event")
	}

	seqs, text := f.snapshot()
	if len(text) != total {
		t.Fatalf("reader applied %d events, want %d", len(text), total)
	}
	for i := range text {
		if text[i] != fmt.Sprint(i) {
			t.Fatalf("event %d is %q: out of order or repeated", i, text[i])
		}
		if i > 0 && seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequence %d follows %d: skipped or repeated", seqs[i], seqs[i-1])
		}
	}
	last, err := s.LastSequence(ctx)
	if err != nil || last != seqs[len(seqs)-1] {
		t.Errorf("LastSequence = %d, %v; want %d", last, err, seqs[len(seqs)-1])
	}
}

func TestFollowOneProject(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	other := eventstore.Aggregate{Project: "team-b", Type: eventstore.TypeKey, Name: "abcd"}
	if _, err := s.Append(ctx, other, 0, []*eventv1.Event{updated("b")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, keyAgg("abcd"), 0, []*eventv1.Event{updated("a")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := s.Follow(ctx, 0, func(r eventstore.Record) error {
		got = append(got, r.Aggregate.Project+":"+r.Events[0].GetKeyUpdated().GetDescription())
		return errStop
	}, eventstore.WithProject("team-a"))
	if !errors.Is(err, errStop) || fmt.Sprint(got) != "[team-a:a]" {
		t.Errorf("Follow(team-a) = %v, %v; want [team-a:a]", got, err)
	}
}

func TestScanIsAStableSnapshot(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	versions := map[string]uint64{}
	for i := range 2500 {
		name := fmt.Sprintf("key-%d", i%3)
		r, err := s.Append(ctx, keyAgg(name), versions[name], []*eventv1.Event{updated(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		versions[name] = r.Sequence
	}
	var got []string
	last, err := s.Scan(ctx, 0, func(r eventstore.Record) error {
		got = append(got, r.Events[0].GetKeyUpdated().GetDescription())
		if len(got) == 10 {
			// Appends during the scan are not part of it.
			if _, err := s.Append(ctx, keyAgg("late"), 0, []*eventv1.Event{updated("late")}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2500 || got[2499] != "2499" || last != 2500 {
		t.Fatalf("scanned %d records, last %d", len(got), last)
	}
	// From a sequence, one aggregate only, stopping early.
	var seqs []uint64
	last, err = s.Scan(ctx, 100, func(r eventstore.Record) error {
		seqs = append(seqs, r.Sequence)
		if len(seqs) == 3 {
			return eventstore.ErrStopScan
		}
		return nil
	}, eventstore.WithAggregates(keyAgg("key-1")))
	if err != nil || fmt.Sprint(seqs) != "[101 104 107]" || last != 107 {
		t.Errorf("filtered scan = %v, last %d, %v", seqs, last, err)
	}
	// Nothing matches: returns at once.
	last, err = s.Scan(ctx, 0, func(eventstore.Record) error { return nil }, eventstore.WithProject("nobody"))
	if err != nil || last != 0 {
		t.Errorf("empty scan = %d, %v", last, err)
	}
}

func TestLoadSeesAppendsFromAnotherStore(t *testing.T) {
	t.Parallel()
	srv, js := natstest.JetStream(t)
	ctx := t.Context()
	a := natstest.EventStore(t, js)
	b, err := eventstore.Open(ctx, natstest.JetStreamOn(t, srv), eventstore.Config{CachedAggregates: 2})
	if err != nil {
		t.Fatal(err)
	}
	agg := keyAgg("shared")
	var version uint64
	for i := range 5 {
		// b loads (and caches) before and after a appends behind its back.
		if _, v, err := b.Load(ctx, agg); err != nil || v != version {
			t.Fatalf("b.Load version %d, %v; want %d", v, err, version)
		}
		r, err := a.Append(ctx, agg, version, []*eventv1.Event{updated(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		version = r.Sequence
		// Evict and refill the small cache with other aggregates now and then.
		if i%2 == 0 {
			for _, other := range []string{"x1", "x2", "x3"} {
				if _, _, err := b.Load(ctx, keyAgg(other)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	recs, v, err := b.Load(ctx, agg)
	if err != nil || v != version || fmt.Sprint(descriptions(recs)) != "[0 1 2 3 4]" {
		t.Fatalf("b.Load = %v, %d, %v", descriptions(recs), v, err)
	}
	// A conflict is still detected with a cached view.
	if _, err := b.Append(ctx, agg, recs[3].Sequence, []*eventv1.Event{updated("stale")}); !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("stale append: %v", err)
	}
}

// TestLoadsAppendInPlace: a cached aggregate's records grow in place as it
// is loaded again and again (with concurrent loads, under -race), and a
// slice handed out earlier never changes.
func TestLoadsAppendInPlace(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	agg := keyAgg("growing")
	var (
		version uint64
		held    [][]eventstore.Record
	)
	for i := range 40 {
		r, err := s.Append(ctx, agg, version, []*eventv1.Event{updated(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		version = r.Sequence
		var wg sync.WaitGroup
		loads := make([][]eventstore.Record, 3)
		for j := range loads {
			wg.Go(func() {
				recs, v, err := s.Load(ctx, agg)
				if err != nil || v != version {
					t.Errorf("Load: version %d, %v; want %d", v, err, version)
				}
				loads[j] = recs
			})
		}
		wg.Wait()
		for _, recs := range loads {
			if len(recs) != i+1 || recs[i].Sequence != version {
				t.Fatalf("load %d: %d records, last %d", i, len(recs), recs[len(recs)-1].Sequence)
			}
		}
		held = append(held, loads[0])
	}
	for i, recs := range held {
		if got := descriptions(recs); len(got) != i+1 || got[i] != fmt.Sprint(i) {
			t.Fatalf("a slice handed out at %d changed: %v", i, got)
		}
		if cap(recs) != len(recs) {
			t.Fatalf("a slice handed out at %d has room to grow into: len %d cap %d", i, len(recs), cap(recs))
		}
	}
}
