package snapshots_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/snapshots"
)

// TestSnapshotter: the snapshotter follows the stream and saves a usable
// snapshot every Every records; when the stream is recreated it starts
// over and saves snapshots of the new stream, never one mixing the two.
func TestSnapshotter(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	events := natstest.EventStore(t, js)
	store, err := snapshots.Open(t.Context(), js, snapshots.Config{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: events}); err == nil {
		t.Error("NewSnapshotter without a Store: no error")
	}
	readOnly, err := snapshots.Open(t.Context(), js, snapshots.Config{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: events, Store: readOnly}); err == nil {
		t.Error("NewSnapshotter with a read-only Store: no error")
	}
	if _, err := readOnly.Save(t.Context(), authmap.New(), eventstore.StreamState{}); !errors.Is(err, snapshots.ErrReadOnly) {
		t.Errorf("Save on a read-only store: %v", err)
	}

	appendKeys := func(prefix string, n int) uint64 {
		var last uint64
		for i := range n {
			name := fmt.Sprintf("%s-%d", prefix, i)
			res, err := events.Append(t.Context(), eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: name}, 0, keyCreated(name, "ig_"+name), eventstore.WithMsgID(name))
			if err != nil {
				t.Fatal(err)
			}
			last = res.Sequence
		}
		return last
	}
	last := appendKeys("a", 5)

	// Every 1 (no slack): it saves until the snapshot is at the last record.
	snap, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: events, Store: store, Every: 1, Check: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- snap.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	state := waitSnapshot(t, events, store, last)
	m := authmap.New()
	if _, err := store.Restore(t.Context(), m, state); err != nil || len(m.Snapshot().Keys) != 5 {
		t.Fatalf("restore: %d keys, %v", len(m.Snapshot().Keys), err)
	}

	// The stream recreated: the snapshotter starts over on the new one.
	if err := js.DeleteStream(t.Context(), "INFERGATE_EVENTS"); err != nil {
		t.Fatal(err)
	}
	events = natstest.EventStore(t, js)
	last = appendKeys("b", 3)
	state = waitSnapshot(t, events, store, last)
	m = authmap.New()
	if _, err := store.Restore(t.Context(), m, state); err != nil {
		t.Fatal(err)
	}
	for _, k := range m.Snapshot().Keys {
		if k.Name[0] != 'b' {
			t.Errorf("the new stream's snapshot holds key %s of the old one", k.Name)
		}
	}
}

// waitSnapshot waits until the latest snapshot is of events' stream at
// seq, and returns the stream's state.
func waitSnapshot(t *testing.T, events *eventstore.Store, store *snapshots.Store, seq uint64) eventstore.StreamState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		state, err := events.State(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		info, err := store.Latest(t.Context())
		if err == nil && info.Sequence == seq && info.StreamCreated.Equal(state.Created) {
			return state
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot of the stream at %d: latest %+v, %v", seq, info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
