package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
)

// TestAdminStream runs `infergate admin stream` against an embedded NATS
// server as an operator would: info before the stream exists, create,
// info, update, and the changes it refuses.
func TestAdminStream(t *testing.T) {
	t.Parallel()
	srv, js := natstest.JetStream(t)
	stream := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(append([]string{"admin", "stream"}, args...), "--nats-url", srv.ClientURL()), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	config := func() jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(t.Context(), eventstore.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}

	if _, err := stream("info"); !errors.Is(err, jetstream.ErrStreamNotFound) || !strings.Contains(err.Error(), "infergate admin stream create") {
		t.Errorf("info of a missing stream: %v", err)
	}
	if out, err := stream("create"); !errors.Is(err, errUsage) || !strings.Contains(out, "--replicas is required") {
		t.Errorf("create without --replicas: %v\n%s", err, out)
	}
	out, err := stream("create", "--replicas", "1")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	for _, want := range []string{"INFERGATE_EVENTS", "infergate.events.>", "storage           file", "replicas          1", "duplicate window  2m0s", "declaration       matches"} {
		if !strings.Contains(out, want) {
			t.Errorf("create printed no %q:\n%s", want, out)
		}
	}

	if out, err := stream("update", "--duplicate-window", "10m"); err != nil || !strings.Contains(out, "duplicate window  10m0s") {
		t.Errorf("update --duplicate-window 10m: %v\n%s", err, out)
	}
	if out, err := stream("update", "--memory"); !errors.Is(err, eventstore.ErrStreamMismatch) || !strings.Contains(err.Error(), "cannot change storage") {
		t.Errorf("update --memory: %v\n%s", err, out)
	}
	if out, err := stream("create", "--replicas", "1"); !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		t.Errorf("create over a stream with another window: %v\n%s", err, out)
	}
	if c := config(); c.Duplicates != 10*time.Minute || c.Storage != jetstream.FileStorage || c.Replicas != 1 {
		t.Errorf("after the refused commands the stream is %+v", c)
	}

	out, err = stream("info", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v streamView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("info -o json: %v\n%s", err, out)
	}
	if v.Stream != "INFERGATE_EVENTS" || v.Replicas != 1 || v.Storage != "file" || v.DuplicateWindow != "10m0s" || !v.Matches {
		t.Errorf("info -o json = %+v", v)
	}
}

// TestAdminStreamUsage: the same owner and commands manage the usage
// stream (docs/usage.md), beside the event stream and apart from it.
func TestAdminStreamUsage(t *testing.T) {
	t.Parallel()
	srv, js := natstest.JetStream(t)
	stream := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(append([]string{"admin", "stream"}, args...), "--nats-url", srv.ClientURL()), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if _, err := stream("info", "--stream", "usage"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("info of a missing usage stream: %v", err)
	}
	out, err := stream("create", "--stream", "usage", "--replicas", "1")
	if err != nil {
		t.Fatalf("create --stream usage: %v\n%s", err, out)
	}
	for _, want := range []string{"INFERGATE_USAGE", "infergate.usage.>", "declaration       matches"} {
		if !strings.Contains(out, want) {
			t.Errorf("create --stream usage printed no %q:\n%s", want, out)
		}
	}
	if out, err := stream("update", "--stream", "usage", "--duplicate-window", "10m"); err != nil || !strings.Contains(out, "duplicate window  10m0s") {
		t.Errorf("update --stream usage: %v\n%s", err, out)
	}
	// The event stream is another one, still to be created.
	if _, err := js.Stream(t.Context(), eventstore.DefaultStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("the event stream: %v", err)
	}
	if out, err := stream("info", "--stream", "metrics"); err == nil || !strings.Contains(err.Error(), "--stream must be events or usage") {
		t.Errorf("info --stream metrics: %v\n%s", err, out)
	}
}

// TestAdminStreamShowsDrift: info names what differs from the declaration
// on a stream someone edited by hand, and update repairs it.
func TestAdminStreamShowsDrift(t *testing.T) {
	t.Parallel()
	srv, js := natstest.JetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: eventstore.DefaultStream, Subjects: []string{"infergate.events.>"}, Duplicates: 2 * time.Minute, MaxAge: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	stream := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(t.Context(), append(append([]string{"admin", "stream"}, args...), "--nats-url", srv.ClientURL()), &out, &out); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	out := stream("info")
	for _, want := range []string{"differs: limits is max age 1h0m0s", "deny delete is false, expected true", "allow direct is false, expected true"} {
		if !strings.Contains(out, want) {
			t.Errorf("info printed no %q:\n%s", want, out)
		}
	}
	if out := stream("update"); !strings.Contains(out, "declaration       matches") {
		t.Errorf("update did not repair the stream:\n%s", out)
	}
}

// TestAdminStreamAsTheControlPlane: on a server with users, the stream's
// owner creates it as the control plane's NATS user (natsauth), the one
// identity allowed to; the audit user cannot.
func TestAdminStreamAsTheControlPlane(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	cp, au := natsauth.Identity{Role: natsauth.ControlPlane}, natsauth.Identity{Role: natsauth.Audit}
	users, err := natsauth.Users(keys, cp, au)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	stream := func(ctx context.Context, seed string, args ...string) (string, error) {
		var out bytes.Buffer
		args = append(append([]string{"admin", "stream"}, args...), "--nats-url", srv.ClientURL(), "--nats-nkey", seed)
		err := run(ctx, args, &out, &out)
		return out.String(), err
	}
	// Denied, the request gets no answer: bound the wait.
	short, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if out, err := stream(short, au.SeedFile(keys), "create", "--replicas", "1"); err == nil {
		t.Errorf("created the stream with the audit user's seed:\n%s", out)
	}
	if out, err := stream(t.Context(), cp.SeedFile(keys), "create", "--replicas", "1"); err != nil {
		t.Fatalf("create as the control plane: %v\n%s", err, out)
	}
	if out, err := stream(t.Context(), cp.SeedFile(keys), "info"); err != nil {
		t.Errorf("info as the control plane: %v\n%s", err, out)
	}
}

// TestAdminStreamCreateMirror: on servers with users, as in deploy/nats,
// `admin stream create-mirror` makes a region's mirrors of the event
// stream and of the snapshot bucket as the region's admin on its leaf
// server (natsauth.RegionAdmin, who may do nothing else) and their feeds
// on the hub as the control plane; run again, it keeps them.
func TestAdminStreamCreateMirror(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	cp := natsauth.Identity{Role: natsauth.ControlPlane}
	leafID := natsauth.Identity{Role: natsauth.Leaf, Region: "eu"}
	admin := natsauth.Identity{Role: natsauth.RegionAdmin, Region: "eu"}
	hubUsers, err := natsauth.Users(keys, cp, leafID)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Domain: eventstore.DefaultHubDomain, LeafPort: -1, Users: hubUsers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Shutdown)
	leafUsers, err := natsauth.Users(keys, admin)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := os.ReadFile(leafID.SeedFile(keys))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(hub.LeafURL())
	leaf, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Domain: "eu", Users: leafUsers,
		LeafRemotes: []*url.URL{u}, LeafNkeySeed: strings.TrimSpace(string(seed))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leaf.Shutdown)
	for deadline := time.Now().Add(10 * time.Second); leaf.LeafNodes() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the leaf server did not link to the hub")
		}
	}
	admin0 := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append([]string{"admin", "stream"}, args...), &out, &out)
		return out.String(), err
	}
	if out, err := admin0("create", "--replicas", "1", "--memory", "--nats-url", hub.ClientURL(), "--nats-nkey", cp.SeedFile(keys)); err != nil {
		t.Fatalf("create the hub's stream: %v\n%s", err, out)
	}
	for range 2 {
		out, err := admin0("create-mirror", "--domain", "eu", "--memory",
			"--nats-url", leaf.ClientURL(), "--nats-nkey", admin.SeedFile(keys),
			"--hub-nats-url", hub.ClientURL(), "--hub-nats-nkey", cp.SeedFile(keys))
		if err != nil {
			t.Fatalf("create-mirror: %v\n%s", err, out)
		}
		for _, want := range []string{"INFERGATE_EVENTS (domain eu)", "consumer MIRROR_eu on the hub", "OBJ_INFERGATE_SNAPSHOTS (domain eu)"} {
			if !strings.Contains(out, want) {
				t.Errorf("create-mirror printed\n%s\nwithout %q", out, want)
			}
		}
	}
	// The region admin's seed on the hub is no one's.
	short, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(short, []string{"admin", "stream", "info", "--nats-url", hub.ClientURL(), "--nats-nkey", admin.SeedFile(keys)}, &out, &out); err == nil {
		t.Errorf("the region admin read the hub's stream:\n%s", out.String())
	}
}
