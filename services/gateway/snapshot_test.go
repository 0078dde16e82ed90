package gateway_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/snapshots"
)

func TestStartFromSnapshot(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	js, err := jetstream.New(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshots.Open(t.Context(), js, snapshots.Config{})
	if err != nil {
		t.Fatal(err)
	}
	up := newRecorder(t)

	// History before the snapshot: alpha and bravo linked, a deleted key.
	alpha, _ := b.key("alpha", nil)
	bravo, _ := b.key("bravo", nil)
	gone, _ := b.key("gone", nil)
	echo, _ := b.key("echo", nil)
	b.deployment("chat", up.URL, true, []string{"alpha", "bravo", "gone", "echo"})
	// Rotations: bravo's old secret in its grace, echo's stopped at once.
	bravo2, _ := b.rotate("bravo", time.Hour)
	echo2, _ := b.rotate("echo", 0)
	before := b.deleteKey("gone")

	// The control plane's snapshotter saves one whenever it is Every
	// records past the latest, so it ends at the last record; gateways
	// only read them.
	snapper, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: b.store, Store: snaps, Every: 1, Check: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	snapCtx, stopSnapper := context.WithCancel(t.Context())
	snapDone := make(chan error, 1)
	go func() { snapDone <- snapper.Run(snapCtx) }()
	var info snapshots.Info
	eventually(t, "a snapshot saved", func() bool {
		info, err = snaps.Latest(t.Context())
		return err == nil && info.Sequence == before
	})
	stopSnapper()
	<-snapDone

	// History after it: alpha unlinked, charlie created and linked, auth
	// turned off and on again.
	b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "alpha", b.live)
	})
	charlie, _ := b.key("charlie", nil)
	b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Link(m, "charlie", b.live)
	})
	charlie2, last := b.rotate("charlie", 0)

	want := map[string]int{
		alpha: 401, bravo: 200, bravo2: 200, echo: 401, echo2: 200,
		charlie: 401, charlie2: 200, gone: 401, "": 401,
	}
	check := func(name string, g *gateway.Gateway, srv *httptest.Server) {
		t.Helper()
		waitApplied(t, g, last)
		eventually(t, name+" ready", g.Ready)
		for key, status := range want {
			if got := get(t, srv, host("chat"), "/v1/models", "X-API-Key", key).status; got != status {
				t.Errorf("%s: key %.12s…: %d, want %d", name, key, got, status)
			}
		}
	}

	// A fresh gateway starts from the snapshot and replays only the rest.
	fresh, srv := startGatewayOn(t, b, fronts[0], gateway.Config{Snapshots: snaps})
	check("from the snapshot", fresh, srv)
	if got := fresh.Status().SnapshotSequence; got != before {
		t.Errorf("SnapshotSequence = %d, want %d", got, before)
	}
	if body := metricsText(t, srv); !strings.Contains(body, "infergate_gateway_snapshot_start_sequence "+itoa(before)+"\n") {
		t.Errorf("/metrics does not give the snapshot the gateway started from:\n%s", body)
	}

	// One without snapshots replays everything and answers the same.
	full, srv := startGatewayOn(t, b, fronts[0], gateway.Config{})
	check("full replay", full, srv)
	if got := full.Status().SnapshotSequence; got != 0 {
		t.Errorf("SnapshotSequence = %d without snapshots", got)
	}

	// A corrupt snapshot, one of the format before rotations (version 1,
	// well formed), or one of another stream, is not used: the gateway
	// replays from the start and answers the same.
	obj, err := js.ObjectStore(t.Context(), snapshots.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"sequence": itoa(before), "stream": "INFERGATE_EVENTS", "stream-created": info.StreamCreated.Format(time.RFC3339Nano)}
	v1, err := obj.GetBytes(t.Context(), "authmap")
	if err != nil {
		t.Fatal(err)
	}
	v1[len("infergate-authmap\x00")] = 1 // the version
	binary.BigEndian.PutUint32(v1[len(v1)-4:], crc32.Checksum(v1[:len(v1)-4], crc32.MakeTable(crc32.Castagnoli)))
	if _, err := obj.Put(t.Context(), jetstream.ObjectMeta{Name: "authmap", Metadata: meta}, bytes.NewReader(v1)); err != nil {
		t.Fatal(err)
	}
	old, srv := startGatewayOn(t, b, fronts[0], gateway.Config{Snapshots: snaps})
	check("version 1 snapshot", old, srv)
	if got := old.Status().SnapshotSequence; got != 0 {
		t.Errorf("started from a version 1 snapshot at %d", got)
	}

	body := strings.NewReader("infergate-authmap\x00 this is not a snapshot")
	if _, err := obj.Put(t.Context(), jetstream.ObjectMeta{Name: "authmap", Metadata: meta}, body); err != nil {
		t.Fatal(err)
	}
	corrupt, srv := startGatewayOn(t, b, fronts[0], gateway.Config{Snapshots: snaps})
	check("corrupt snapshot", corrupt, srv)
	if got := corrupt.Status().SnapshotSequence; got != 0 {
		t.Errorf("started from a corrupt snapshot %d", got)
	}

	otherStream := eventstore.StreamState{Stream: "INFERGATE_EVENTS", Created: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := snaps.Save(t.Context(), authmap.New(), otherStream); err != nil {
		t.Fatal(err)
	}
	other, srv := startGatewayOn(t, b, fronts[0], gateway.Config{Snapshots: snaps})
	check("another stream's snapshot", other, srv)
	if got := other.Status().SnapshotSequence; got != 0 {
		t.Errorf("started from another stream's snapshot %d", got)
	}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
