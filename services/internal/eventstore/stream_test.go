package eventstore_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
)

// streamConfig reads the stream's configuration as the server holds it.
func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// TestOpenMissingStream: Open never creates the stream; it says how to.
func TestOpenMissingStream(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	_, err := eventstore.Open(t.Context(), js, eventstore.Config{Replicas: 1})
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Open of a missing stream: %v, want ErrStreamNotFound", err)
	}
	if !strings.Contains(err.Error(), "infergate admin stream create") {
		t.Errorf("the error does not tell the operator what to run: %v", err)
	}
	if _, err := js.Stream(t.Context(), eventstore.DefaultStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("Open created the stream: %v", err)
	}
}

// TestOpenRefusesAnotherExpectation: a process expecting other replicas,
// storage or duplicate window fails to start, naming the field, and the
// stream is what its owner made.
func TestOpenRefusesAnotherExpectation(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{Replicas: 1, DuplicateWindow: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	before := streamConfig(t, js, eventstore.DefaultStream)
	for _, tc := range []struct {
		cfg  eventstore.Config
		want string
	}{
		{eventstore.Config{Replicas: 3}, "replicas is 1, expected 3"},
		{eventstore.Config{Memory: true}, "storage is file, expected memory"},
		{eventstore.Config{DuplicateWindow: 10 * time.Minute}, "duplicate window is 5m0s, expected 10m0s"},
	} {
		_, err := eventstore.Open(t.Context(), js, tc.cfg)
		if !errors.Is(err, eventstore.ErrStreamMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v) = %v, want ErrStreamMismatch saying %q", tc.cfg, err, tc.want)
		}
	}
	if after := streamConfig(t, js, eventstore.DefaultStream); !sameConfig(before, after) {
		t.Errorf("Open changed the stream:\nbefore %+v\nafter  %+v", before, after)
	}
	// What the caller leaves unstated is accepted, and the store says what
	// it found.
	s, err := eventstore.Open(t.Context(), js, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Config(); got.Replicas != 1 || got.DuplicateWindow != 5*time.Minute || got.Memory {
		t.Errorf("Config() = %+v, want the stream's replicas 1, window 5m, file", got)
	}
	if _, err := eventstore.Open(t.Context(), js, eventstore.Config{Replicas: 1, DuplicateWindow: 5 * time.Minute}); err != nil {
		t.Errorf("Open with the stream's own settings: %v", err)
	}
}

func sameConfig(a, b jetstream.StreamConfig) bool {
	return a.Replicas == b.Replicas && a.Storage == b.Storage && a.Duplicates == b.Duplicates &&
		slices.Equal(a.Subjects, b.Subjects) && a.DenyDelete == b.DenyDelete && a.DenyPurge == b.DenyPurge
}

// TestOpenRefusesAStreamOffTheDeclaration: a stream someone made or edited
// by hand is refused, each difference named.
func TestOpenRefusesAStreamOffTheDeclaration(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	for i, tc := range []struct {
		edit func(*jetstream.StreamConfig)
		want string
	}{
		{func(c *jetstream.StreamConfig) { c.Subjects = []string{c.Subjects[0], "elsewhere.>"} }, "subjects is"},
		{func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }, "retention is Interest, expected Limits"},
		{func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }, "limits is max age 1h0m0s"},
		{func(c *jetstream.StreamConfig) { c.Duplicates = time.Minute }, "duplicate window is 1m0s, expected at least 2m0s"},
		{func(c *jetstream.StreamConfig) { c.DenyDelete = false }, "deny delete is false, expected true"},
		{func(c *jetstream.StreamConfig) { c.DenyPurge = false }, "deny purge is false, expected true"},
		{func(c *jetstream.StreamConfig) { c.AllowDirect = false }, "allow direct is false, expected true"},
		{func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, "storage is memory, expected file"},
	} {
		cfg := eventstore.Config{Stream: fmt.Sprintf("S%d", i), SubjectPrefix: fmt.Sprintf("p%d", i)}
		sc := jetstream.StreamConfig{
			Name: cfg.Stream, Subjects: []string{cfg.SubjectPrefix + ".>"}, Duplicates: 2 * time.Minute,
			AllowDirect: true, DenyDelete: true, DenyPurge: true,
		}
		tc.edit(&sc)
		if _, err := js.CreateStream(t.Context(), sc); err != nil {
			t.Fatal(err)
		}
		_, err := eventstore.Open(t.Context(), js, cfg)
		if !errors.Is(err, eventstore.ErrStreamMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open of a stream with %s: %v", tc.want, err)
		}
	}
}

func TestCreateStream(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{DuplicateWindow: time.Second}); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("a duplicate window under 2 minutes: %v, want ErrInvalid", err)
	}
	info, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Name != "INFERGATE_EVENTS" || !slices.Equal(c.Subjects, []string{"infergate.events.>"}) || c.Storage != jetstream.FileStorage ||
		c.Replicas != 1 || c.Duplicates != 2*time.Minute || c.Retention != jetstream.LimitsPolicy ||
		!c.DenyDelete || !c.DenyPurge || !c.AllowDirect {
		t.Errorf("created %+v, not the declaration", c)
	}
	// The same declaration again changes nothing; another one is refused.
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{}); err != nil {
		t.Errorf("creating the same stream again: %v", err)
	}
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{DuplicateWindow: time.Hour}); !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		t.Errorf("creating it with another window: %v, want ErrStreamNameAlreadyInUse", err)
	}
	if w := streamConfig(t, js, eventstore.DefaultStream).Duplicates; w != 2*time.Minute {
		t.Errorf("a refused create changed the window to %s", w)
	}
	// EnsureStream verifies what exists.
	if err := eventstore.EnsureStream(t.Context(), js, eventstore.Config{Replicas: 3}); !errors.Is(err, eventstore.ErrStreamMismatch) {
		t.Errorf("EnsureStream expecting 3 replicas: %v", err)
	}
}

func TestUpdateStream(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	if _, err := eventstore.UpdateStream(t.Context(), js, eventstore.Config{Replicas: 1}); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("update of a missing stream: %v, want ErrStreamNotFound", err)
	}
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	info, err := eventstore.UpdateStream(t.Context(), js, eventstore.Config{DuplicateWindow: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.Duplicates != 10*time.Minute || c.Replicas != 1 {
		t.Errorf("after update: window %s, replicas %d; want 10m, 1 kept", c.Duplicates, c.Replicas)
	}
	if _, err := eventstore.Open(t.Context(), js, eventstore.Config{DuplicateWindow: 10 * time.Minute}); err != nil {
		t.Errorf("Open after the update: %v", err)
	}
	// Storage and subjects are never changed in place.
	for _, tc := range []struct {
		cfg  eventstore.Config
		want string
	}{
		{eventstore.Config{Memory: true}, "cannot change storage from file to memory"},
		{eventstore.Config{SubjectPrefix: "other"}, "cannot change subjects"},
	} {
		if _, err := eventstore.UpdateStream(t.Context(), js, tc.cfg); !errors.Is(err, eventstore.ErrStreamMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("UpdateStream(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if c := streamConfig(t, js, eventstore.DefaultStream); c.Storage != jetstream.FileStorage || c.Subjects[0] != "infergate.events.>" {
		t.Errorf("a refused update changed the stream: %+v", c)
	}
}

// TestUpdateStreamRepairs: update brings a hand-edited stream back to the
// declaration, keeping its replicas and window.
func TestUpdateStreamRepairs(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: eventstore.DefaultStream, Subjects: []string{"infergate.events.>"}, Duplicates: 3 * time.Minute, MaxAge: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Open(t.Context(), js, eventstore.Config{}); !errors.Is(err, eventstore.ErrStreamMismatch) {
		t.Fatalf("Open of the edited stream: %v", err)
	}
	if _, err := eventstore.UpdateStream(t.Context(), js, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	s, err := eventstore.Open(t.Context(), js, eventstore.Config{})
	if err != nil {
		t.Fatalf("Open after the repair: %v", err)
	}
	if w := s.Config().DuplicateWindow; w != 3*time.Minute {
		t.Errorf("the repair changed the window to %s", w)
	}
}

// TestReplicatedStream: on a 3-node cluster, as in production, the stream
// is created with one replica and raised to three by UpdateStream; Open
// then accepts a process expecting 3 and refuses one expecting 1, leaving
// the stream at 3.
func TestReplicatedStream(t *testing.T) {
	t.Parallel()
	nc, err := nats.Connect(natstest.Cluster(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// A 3-node cluster on a busy 2-core machine (make test runs every
	// package at once, with -race) can take longer than the client's
	// default 5 s to answer the first stream creation: wait as long as the
	// replicas wait below.
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	info, err := eventstore.UpdateStream(t.Context(), js, eventstore.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("replicas after update: %d", info.Config.Replicas)
	}
	// The new replicas catch up and the group elects a leader.
	deadline := time.Now().Add(30 * time.Second)
	for tick := time.NewTicker(50 * time.Millisecond); ; <-tick.C {
		stream, err := js.Stream(t.Context(), eventstore.DefaultStream)
		if err == nil {
			if cl := stream.CachedInfo().Cluster; cl != nil && cl.Leader != "" && len(cl.Replicas) == 2 &&
				!slices.ContainsFunc(cl.Replicas, func(p *jetstream.PeerInfo) bool { return !p.Current }) {
				tick.Stop()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream's 3 replicas are not current after 30s: %v", err)
		}
	}
	s, err := eventstore.Open(t.Context(), js, eventstore.Config{Replicas: 3})
	if err != nil {
		t.Fatalf("Open expecting 3 replicas: %v", err)
	}
	if _, err := s.Append(t.Context(), keyAgg("r3"), 0, []*eventv1.Event{updated("replicated")}); err != nil {
		t.Errorf("append to the R3 stream: %v", err)
	}
	_, err = eventstore.Open(t.Context(), js, eventstore.Config{Replicas: 1})
	if ms := eventstore.Mismatches(err); len(ms) != 1 || ms[0].Field != "replicas" || ms[0].Expected != "1" || ms[0].Actual != "3" {
		t.Errorf("Open expecting 1 replica of 3: %v", err)
	}
	if r := streamConfig(t, js, eventstore.DefaultStream).Replicas; r != 3 {
		t.Errorf("replicas after the refused Open: %d", r)
	}
}

// TestStreamBeforeAtomicBatches: a stream made before atomic batches were
// declared is refused by Open, naming the field; `admin stream update`
// (UpdateStream) turns them on, and so does EnsureStream, for a stream
// that differs in nothing else (an old `infergate dev` data dir).
func TestStreamBeforeAtomicBatches(t *testing.T) {
	t.Parallel()
	for _, fix := range []string{"update", "ensure"} {
		t.Run(fix, func(t *testing.T) {
			t.Parallel()
			_, js := natstest.JetStream(t)
			if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{Replicas: 1}); err != nil {
				t.Fatal(err)
			}
			old := streamConfig(t, js, eventstore.DefaultStream)
			old.AllowAtomicPublish = false
			if _, err := js.UpdateStream(t.Context(), old); err != nil {
				t.Fatalf("turning atomic batches off (to make an old stream): %v", err)
			}
			_, err := eventstore.Open(t.Context(), js, eventstore.Config{})
			if !errors.Is(err, eventstore.ErrStreamMismatch) || !strings.Contains(err.Error(), "allow atomic publish is false, expected true") {
				t.Fatalf("Open of an old stream = %v, want the mismatch named", err)
			}
			if fix == "update" {
				_, err = eventstore.UpdateStream(t.Context(), js, eventstore.Config{})
			} else {
				err = eventstore.EnsureStream(t.Context(), js, eventstore.Config{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := eventstore.Open(t.Context(), js, eventstore.Config{}); err != nil {
				t.Fatalf("Open after %s: %v", fix, err)
			}
		})
	}
}
