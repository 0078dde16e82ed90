package snapshots_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/snapshots"
)

func keyCreated(name, secret string) []*eventv1.Event {
	h := apikey.Sum(secret)
	return []*eventv1.Event{{
		Id: "e", Time: timestamppb.Now(), Actor: "test", Project: "p",
		Aggregate: &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_KEY, Name: name},
		Payload: &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
			KeyId: "id-" + name, Name: name, SecretSha256: h[:],
		}},
	}}
}

func TestSaveRestore(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	store, err := snapshots.Open(t.Context(), js, snapshots.Config{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	stream := eventstore.StreamState{Stream: "EVENTS", Created: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC), FirstSeq: 1, LastSeq: 10}

	if _, err := store.Latest(t.Context()); !errors.Is(err, snapshots.ErrNone) {
		t.Errorf("Latest on an empty bucket: %v, want ErrNone", err)
	}
	if _, err := store.Restore(t.Context(), authmap.New(), stream); !errors.Is(err, snapshots.ErrNone) {
		t.Errorf("Restore from an empty bucket: %v, want ErrNone", err)
	}

	secret, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	m := authmap.New()
	m.Apply(7, keyCreated("alpha", secret))
	saved, err := store.Save(t.Context(), m, stream)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Sequence != 7 || saved.Size == 0 {
		t.Errorf("Save = %+v", saved)
	}
	latest, err := store.Latest(t.Context())
	if err != nil || latest.Sequence != 7 || latest.Stream != "EVENTS" || !latest.StreamCreated.Equal(stream.Created) || latest.Size != saved.Size {
		t.Errorf("Latest = %+v, %v", latest, err)
	}

	got := authmap.New()
	if _, err := store.Restore(t.Context(), got, stream); err != nil {
		t.Fatal(err)
	}
	if got.Applied() != 7 || len(got.Snapshot().Keys) != 1 || got.Snapshot().Keys[0].Name != "alpha" {
		t.Errorf("restored %+v", got.Snapshot())
	}

	// Not usable: another stream, another life of the stream, a stream
	// behind the snapshot, a stream that no longer holds the records after
	// it. The map is left alone.
	for name, s := range map[string]eventstore.StreamState{
		"other stream":    {Stream: "OTHER", Created: stream.Created, FirstSeq: 1, LastSeq: 10},
		"recreated":       {Stream: "EVENTS", Created: stream.Created.Add(time.Hour), FirstSeq: 1, LastSeq: 10},
		"behind":          {Stream: "EVENTS", Created: stream.Created, FirstSeq: 1, LastSeq: 6},
		"records dropped": {Stream: "EVENTS", Created: stream.Created, FirstSeq: 9, LastSeq: 10},
	} {
		m := authmap.New()
		if _, err := store.Restore(t.Context(), m, s); !errors.Is(err, snapshots.ErrNotUsable) {
			t.Errorf("%s: %v, want ErrNotUsable", name, err)
		}
		if m.Applied() != 0 {
			t.Errorf("%s: the map was changed", name)
		}
	}
	// Exactly at the stream's end, or with the stream trimmed up to it: usable.
	for _, s := range []eventstore.StreamState{
		{Stream: "EVENTS", Created: stream.Created, FirstSeq: 1, LastSeq: 7},
		{Stream: "EVENTS", Created: stream.Created, FirstSeq: 8, LastSeq: 10},
	} {
		if _, err := store.Restore(t.Context(), authmap.New(), s); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}

	// A newer save replaces it.
	m.Apply(9, keyCreated("bravo", secret))
	if _, err := store.Save(t.Context(), m, stream); err != nil {
		t.Fatal(err)
	}
	if latest, err := store.Latest(t.Context()); err != nil || latest.Sequence != 9 {
		t.Errorf("Latest after a second save = %+v, %v", latest, err)
	}
}

// TestRestoreOnTheLifeAMirrorReports: a region's mirror reports the hub
// stream's life to the microsecond (eventstore.OpenMirror); a snapshot the
// hub's snapshotter saved with the life to the nanosecond is of that same
// life, and restores there. Another life (a microsecond apart) does not.
func TestRestoreOnTheLifeAMirrorReports(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	store, err := snapshots.Open(t.Context(), js, snapshots.Config{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 12, 1, 0, 30, 13, 788161729, time.UTC)
	hub := eventstore.StreamState{Stream: "EVENTS", Created: created, FirstSeq: 1, LastSeq: 10}
	m := authmap.New()
	m.Apply(7, keyCreated("alpha", "ig_x"))
	if _, err := store.Save(t.Context(), m, hub); err != nil {
		t.Fatal(err)
	}
	region := hub
	region.Created = created.Truncate(time.Microsecond)
	if info, err := store.Restore(t.Context(), authmap.New(), region); err != nil || info.Sequence != 7 {
		t.Errorf("restore on the life a region's mirror reports: %+v, %v", info, err)
	}
	other := hub
	other.Created = created.Add(time.Microsecond)
	if _, err := store.Restore(t.Context(), authmap.New(), other); !errors.Is(err, snapshots.ErrNotUsable) {
		t.Errorf("restore on another life: %v, want ErrNotUsable", err)
	}
}
