package devstack_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsembed"
)

// TestRunVerifiesAnExistingStream: `infergate dev` creates the stream only
// when it is missing (the e2e tests start it on empty data dirs); a stream
// already in its data dir that is not the declared one stops it with the
// difference named, and stays as it was.
func TestRunVerifiesAnExistingStream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "nats")
	withNATS := func(edit func(jetstream.JetStream) error) {
		t.Helper()
		ns, err := natsembed.Start(natsembed.Config{StoreDir: storeDir})
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Shutdown()
		nc, err := ns.Connect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if err := edit(js); err != nil {
			t.Fatal(err)
		}
	}
	withNATS(func(js jetstream.JetStream) error {
		_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
			Name: eventstore.DefaultStream, Subjects: []string{"infergate.events.>"}, Duplicates: 2 * time.Minute,
			AllowDirect: true, DenyDelete: true, DenyPurge: false,
		})
		return err
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := devstack.Run(ctx, devstack.Config{
		DataDir: dir, APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", Out: io.Discard,
	}, func(*devstack.Stack) { t.Error("the stack started on a stream that is not the declared one") })
	if !errors.Is(err, eventstore.ErrStreamMismatch) || !strings.Contains(err.Error(), "deny purge is false, expected true") {
		t.Fatalf("Run = %v, want ErrStreamMismatch naming deny purge", err)
	}
	withNATS(func(js jetstream.JetStream) error {
		s, err := js.Stream(t.Context(), eventstore.DefaultStream)
		if err == nil && s.CachedInfo().Config.DenyPurge {
			t.Error("infergate dev changed the stream")
		}
		return err
	})
}
