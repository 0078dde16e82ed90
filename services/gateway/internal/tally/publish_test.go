package tally

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/usage"
)

// heldJetStream is a real JetStream whose publishes wait until released:
// NATS slow to acknowledge, as when it is busy or far away.
type heldJetStream struct {
	jetstream.JetStream
	entered chan struct{} // closed when the first publish waits
	release chan struct{}
	once    sync.Once
}

func (j *heldJetStream) Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.once.Do(func() { close(j.entered) })
	select {
	case <-j.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return j.JetStream.Publish(ctx, subject, data, opts...)
}

// TestMapChangedDoesNotWaitForPublish: a stream reset swaps the gateway's
// auth map (MapChanged) while a flush waits for NATS to acknowledge; the
// swap must not wait for the publish (it held the flusher's lock for up
// to 5 s a try, and the gateway stayed not ready meanwhile). What was
// counted on both maps is published, once, in order.
func TestMapChangedDoesNotWaitForPublish(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := eventstore.EnsureStream(ctx, js, eventstore.UsageConfig()); err != nil {
		t.Fatal(err)
	}
	held := &heldJetStream{JetStream: js, entered: make(chan struct{}), release: make(chan struct{})}
	m, ids := keysMap(t, "p", "chat", keyNames(3))
	c := NewCounter(0, m)
	f := NewFlusher(FlusherConfig{Counter: c, Map: func() *authmap.Map { return m }, JS: held, Region: "eu", ID: "gw"})
	now := time.Now().UnixNano()
	c.Count(m, uint32(ids[0]>>32), uint32(ids[0]), usage.ClassOK, now)

	flushed := make(chan error, 1)
	go func() { flushed <- f.Flush(ctx) }()
	select {
	case <-held.entered:
	case <-ctx.Done():
		t.Fatal("the flush never published")
	}

	// The map changes while the publish waits: counted on the old map
	// just before, and on the new one after.
	m2, ids2 := keysMap(t, "p", "chat", keyNames(3))
	c.Count(m, uint32(ids[1]>>32), uint32(ids[1]), usage.ClassOK, now)
	changed := make(chan struct{})
	go func() { f.MapChanged(m2); close(changed) }()
	select {
	case <-changed:
	case err := <-flushed:
		t.Fatalf("the flush ended (%v) before the map change did", err)
	case <-ctx.Done():
		t.Fatal("MapChanged waited for the publish")
	}
	c.Count(m2, uint32(ids2[2]>>32), uint32(ids2[2]), usage.ClassOK, now)

	close(held.release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	f.cfg.Map = func() *authmap.Map { return m2 }
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// The stream holds the first message (key-000000) and then the rest:
	// each key counted once, in sequence order.
	stream, err := js.Stream(ctx, eventstore.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	var last uint64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		raw, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var msg usagev1.Flush
		if err := proto.Unmarshal(raw.Data, &msg); err != nil {
			t.Fatal(err)
		}
		if msg.GetSequence() <= last {
			t.Errorf("message %d after %d", msg.GetSequence(), last)
		}
		last = msg.GetSequence()
		for _, r := range msg.GetRows() {
			got[r.GetKey()] += r.GetCounts().GetOk()
		}
	}
	want := map[string]uint64{"key-000000": 1, "key-000001": 1, "key-000002": 1}
	if len(got) != len(want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("key %s: %d requests published, want %d (all: %v)", k, got[k], n, got)
		}
	}
}
