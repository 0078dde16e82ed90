package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
)

// TestMirrorKeepsSequencesAndHeaders appends through the event store on
// the hub — with the headers it writes: Nats-Msg-Id and
// Nats-Expected-Last-Subject-Sequence, which a mirror must neither check
// nor trip over — and reads every record back from a region's mirror
// with the same sequence, subject, message id and events, both the
// records appended before the mirror existed and those after.
func TestMirrorKeepsSequencesAndHeaders(t *testing.T) {
	t.Parallel()
	hub := natstest.Hub(t)
	events := natstest.EventStore(t, natstest.JetStreamOn(t, hub))
	ctx := t.Context()
	appendN := func(from, n int) {
		for i := from; i < from+n; i++ {
			agg := keyAgg(fmt.Sprintf("k%d", i%3))
			_, v, err := events.Load(ctx, agg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := events.Append(ctx, agg, v, []*eventv1.Event{updated(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, 20)
	leaf := natstest.Leaf(t, "eu", hub.LeafURL())
	mirror, _ := natstest.Mirror(t, leaf)
	appendN(20, 20)

	hubID, err := events.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the mirror caught up", func() bool {
		st, err := mirror.State(ctx)
		return err == nil && st.LastSeq == 40
	})
	st, err := mirror.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Identity().Equal(hubID) {
		t.Errorf("the mirror reports identity %s, the hub's stream is %s", st.Identity(), hubID)
	}
	if st.CurrentAt.IsZero() || time.Since(st.CurrentAt) > 3*time.Second || st.Behind != 0 {
		t.Errorf("a mirror linked to the hub: current at %s (%s ago), behind %d", st.CurrentAt, time.Since(st.CurrentAt), st.Behind)
	}
	for i := range 3 {
		agg := keyAgg(fmt.Sprintf("k%d", i))
		want, wv, err := events.Load(ctx, agg)
		if err != nil {
			t.Fatal(err)
		}
		got, gv, err := mirror.Load(ctx, agg)
		if err != nil {
			t.Fatal(err)
		}
		if gv != wv || !slices.EqualFunc(got, want, sameRecord) {
			t.Errorf("%s: the mirror holds version %d %v, the hub %d %v", agg, gv, seqs(got), wv, seqs(want))
		}
	}
	var (
		mu  sync.Mutex
		got []eventstore.Record
	)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- mirror.Follow(fctx, 1, func(r eventstore.Record) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r)
			return nil
		})
	}()
	waitUntil(t, "the mirror's records followed", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 40 })
	cancel()
	<-done
	for i, r := range got {
		if r.Sequence != uint64(i+1) || r.MsgID == "" || r.MsgID != r.Events[0].GetId() {
			t.Errorf("record %d from the mirror: sequence %d, msg id %q (event %q)", i+1, r.Sequence, r.MsgID, r.Events[0].GetId())
		}
	}
	if _, err := mirror.Append(ctx, keyAgg("k0"), 40, []*eventv1.Event{updated("x")}); !errors.Is(err, eventstore.ErrReadOnly) {
		t.Errorf("append to a mirror: %v, want ErrReadOnly", err)
	}
}

// TestMirrorOfARecreatedHubStream: a mirror keeps the records of a deleted
// origin, so a store on it, able to reach the hub, reports the stream gone
// (its readers reset) until CreateMirror makes the mirror of the new life.
func TestMirrorOfARecreatedHubStream(t *testing.T) {
	t.Parallel()
	hub := natstest.Hub(t)
	hubJS := natstest.JetStreamOn(t, hub)
	events := natstest.EventStore(t, hubJS)
	ctx := t.Context()
	if _, err := events.Append(ctx, keyAgg("a"), 0, []*eventv1.Event{updated("old life")}); err != nil {
		t.Fatal(err)
	}
	leaf := natstest.Leaf(t, "us", hub.LeafURL())
	mirror, _ := natstest.Mirror(t, leaf)
	waitUntil(t, "the mirror caught up", func() bool {
		st, err := mirror.State(ctx)
		return err == nil && st.LastSeq == 1
	})
	if err := hubJS.DeleteStream(ctx, eventstore.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := mirror.State(ctx); !errors.Is(err, eventstore.ErrStaleMirror) || !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("state of a mirror whose origin is gone: %v, want ErrStaleMirror (stream not found)", err)
	}
	events = natstest.EventStore(t, hubJS)
	newLife, err := events.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mirror.State(ctx); !errors.Is(err, eventstore.ErrStaleMirror) {
		t.Errorf("state of a mirror of the previous life: %v, want ErrStaleMirror", err)
	}
	// Recreated, the mirror copies the new life.
	again, _ := natstest.Mirror(t, leaf)
	if _, err := events.Append(ctx, keyAgg("b"), 0, []*eventv1.Event{updated("new life")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new mirror caught up", func() bool {
		st, err := again.State(ctx)
		return err == nil && st.LastSeq == 1 && st.Identity().Equal(newLife)
	})
	recs, _, err := again.Load(ctx, keyAgg("a"))
	if err != nil || len(recs) != 0 {
		t.Errorf("the new mirror holds the old life's records: %v, %v", seqs(recs), err)
	}
}

// TestOpenMirrorRefusesTheHubsStream: OpenMirror is only for a mirror, and
// Open only for the hub's stream.
func TestOpenMirrorRefusesTheHubsStream(t *testing.T) {
	t.Parallel()
	hub := natstest.Hub(t)
	js := natstest.JetStreamOn(t, hub)
	natstest.EventStore(t, js)
	if _, err := eventstore.OpenMirror(t.Context(), js, nil, eventstore.MirrorConfig{}); !errors.Is(err, eventstore.ErrStreamMismatch) {
		t.Errorf("OpenMirror on the hub's stream: %v, want ErrStreamMismatch", err)
	}
	leaf := natstest.Leaf(t, "eu", hub.LeafURL())
	natstest.Mirror(t, leaf)
	if _, err := eventstore.Open(t.Context(), natstest.JetStreamOn(t, leaf), eventstore.Config{}); !errors.Is(err, eventstore.ErrStreamMismatch) {
		t.Errorf("Open on a mirror: %v, want ErrStreamMismatch", err)
	}
}

func sameRecord(a, b eventstore.Record) bool {
	return a.Sequence == b.Sequence && a.Subject == b.Subject && a.MsgID == b.MsgID &&
		len(a.Events) == len(b.Events) && a.Events[0].GetId() == b.Events[0].GetId()
}

func seqs(recs []eventstore.Record) []uint64 {
	var out []uint64
	for _, r := range recs {
		out = append(out, r.Sequence)
	}
	return out
}

// TestMirrorFeed: a region's mirror is fed by its durable consumer on the
// hub (eventstore.Feed). Run again, CreateMirror keeps the mirror and
// makes the feed again if it was lost, and the mirror goes on from what
// it holds; a mirror fed otherwise (made before feeds) is replaced by one
// with its feed, holding the same records.
func TestMirrorFeed(t *testing.T) {
	t.Parallel()
	hub := natstest.Hub(t)
	hubJS := natstest.JetStreamOn(t, hub)
	events := natstest.EventStore(t, hubJS)
	ctx := t.Context()
	appendOne := func(i int) {
		t.Helper()
		if _, err := events.Append(ctx, keyAgg(fmt.Sprintf("f%d", i)), 0, []*eventv1.Event{updated(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(1)
	leaf := natstest.Leaf(t, "eu", hub.LeafURL())
	mirror, _ := natstest.Mirror(t, leaf)
	feed := eventstore.Feed(eventstore.DefaultStream, "eu")
	if _, err := hubJS.PushConsumer(ctx, eventstore.DefaultStream, feed.Name); err != nil {
		t.Fatalf("the mirror's feed on the hub: %v", err)
	}
	caughtUp := func(m *eventstore.Store, last uint64) {
		t.Helper()
		waitUntil(t, fmt.Sprintf("the mirror at %d", last), func() bool {
			st, err := m.State(ctx)
			return err == nil && st.LastSeq == last
		})
	}
	caughtUp(mirror, 1)

	// The feed lost (an operator deleted it): made again, from the
	// first record, and the mirror skips what it holds.
	if err := hubJS.DeleteConsumer(ctx, eventstore.DefaultStream, feed.Name); err != nil {
		t.Fatal(err)
	}
	mirror, _ = natstest.Mirror(t, leaf)
	appendOne(2)
	caughtUp(mirror, 2)
	recs, _, err := mirror.Load(ctx, keyAgg("f1"))
	if err != nil || len(recs) != 1 || recs[0].Sequence != 1 {
		t.Errorf("after the feed was made again the mirror holds %v (%v) for f1, want [1]", seqs(recs), err)
	}

	// A mirror fed by its own ephemeral consumer, as create-mirror made
	// them before feeds: replaced.
	leafJS := natstest.JetStreamOn(t, leaf)
	info, err := leafJS.Stream(ctx, eventstore.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	old := info.CachedInfo().Config
	if err := leafJS.DeleteStream(ctx, eventstore.DefaultStream); err != nil {
		t.Fatal(err)
	}
	old.Mirror = &jetstream.StreamSource{Name: eventstore.DefaultStream, Domain: eventstore.DefaultHubDomain}
	if _, err := leafJS.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	mirror, _ = natstest.Mirror(t, leaf)
	got, err := leafJS.Stream(ctx, eventstore.DefaultStream)
	if err != nil || !feed.Feeds(got.CachedInfo().Config) {
		t.Fatalf("create-mirror on a mirror without a feed: %v, %+v; want it fed by %s", err, got.CachedInfo().Config.Mirror, feed.Name)
	}
	appendOne(3)
	caughtUp(mirror, 3)
}
