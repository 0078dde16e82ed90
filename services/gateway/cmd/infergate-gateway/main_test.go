package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// TestProcess runs the real binary against NATS, configured by the
// environment: it becomes ready once it has read the stream, answers 404
// for an unknown deployment, and stops cleanly on SIGTERM.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-gateway")
	nats := natstest.Start(t)
	// An operator creates the stream; a gateway only binds to it.
	natstest.EventStore(t, natstest.JetStreamOn(t, nats))
	addr := servicetest.FreeAddr(t)
	p := servicetest.StartProcess(t, bin, []string{"INFERGATE_NATS_URL=" + nats.ClientURL(), "INFERGATE_ADDR=" + addr}, "--region", "eu")
	get := func(ctx context.Context, path string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		if err != nil {
			return 0, err
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	servicetest.WaitFor(t, "gateway ready", func(ctx context.Context) error {
		code, err := get(ctx, "/readyz")
		if err == nil && code != 200 {
			err = fmt.Errorf("/readyz answered %d", code)
		}
		return err
	})
	if code, err := get(t.Context(), "/d/team-a/nope/v1/models"); err != nil || code != http.StatusNotFound {
		t.Errorf("unknown deployment: %d, %v", code, err)
	}
	p.Stop()

	// A bad allow list stops the process before it serves anything.
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "INFERGATE_NATS_URL="+nats.ClientURL(), "INFERGATE_ADDR="+servicetest.FreeAddr(t),
		"INFERGATE_UPSTREAM_ALLOW=127.0.0.0/8,http://metadata")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--upstream-allow") || !strings.Contains(string(out), "http://metadata") {
		t.Errorf("bad INFERGATE_UPSTREAM_ALLOW: %v, %s", err, out)
	}
}

// TestStopWhileWaitingForNATS: a gateway that cannot reach NATS at start
// serves /healthz meanwhile, and SIGTERM stops it with exit status 0.
func TestStopWhileWaitingForNATS(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-gateway")
	nowhere := "nats://" + servicetest.FreeAddr(t) // nothing listens there
	addr := servicetest.FreeAddr(t)
	p := servicetest.StartProcess(t, bin, []string{"INFERGATE_NATS_URL=" + nowhere, "INFERGATE_ADDR=" + addr})
	servicetest.WaitFor(t, "gateway listening", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/healthz", nil)
		if err != nil {
			return err
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz answered %d", res.StatusCode)
		}
		return nil
	})
	p.Stop()
}

// TestProcessWithItsOwnNATSUser runs the binary as its own NATS user
// (natsauth), on a server that knows only that user and the control
// plane's: it reads the stream, and its receipts reach the control plane
// on its own subject.
func TestProcessWithItsOwnNATSUser(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-gateway")
	keys := t.TempDir()
	cpID, gwID := natsauth.Identity{Role: natsauth.ControlPlane}, natsauth.GatewayIdentity("eu", "gw-1")
	users, err := natsauth.Users(keys, cpID, gwID)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	opts, err := cpID.ClientOptions(cpID.SeedFile(keys), "")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := srv.Connect(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	js, err := jetstream.New(cp)
	if err != nil {
		t.Fatal(err)
	}
	// The operator creates the stream, as the control plane's user.
	if _, err := eventstore.CreateStream(t.Context(), js, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	events, err := eventstore.Open(t.Context(), js, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tracker, err := receipts.NewTracker(cp, events.Identity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tracker.Close)

	env := []string{"INFERGATE_NATS_URL=" + srv.ClientURL(), "INFERGATE_ADDR=" + servicetest.FreeAddr(t),
		"INFERGATE_NATS_NKEY=" + gwID.SeedFile(keys), "INFERGATE_REGION=eu", "INFERGATE_GATEWAY_ID=gw-1"}
	p := servicetest.StartProcess(t, bin, env)
	servicetest.WaitFor(t, "the gateway's receipt on its own subject", func(context.Context) error {
		for _, g := range tracker.Gateways() {
			if g.ID == "gw-1" && g.Ready {
				return nil
			}
		}
		return errors.New("not heard yet")
	})
	p.Stop()
}

// TestProcessInARegion: with --hub-domain the binary reads its region's
// mirror on its leaf server, reports the hub stream's life, and its
// receipts reach the hub's tracker over the leaf-node link.
func TestProcessInARegion(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-gateway")
	hub := natstest.Hub(t)
	events := natstest.EventStore(t, natstest.JetStreamOn(t, hub))
	leaf := natstest.Leaf(t, "eu", hub.LeafURL())
	natstest.Mirror(t, leaf)
	tracker, err := receipts.NewTracker(natstest.Connect(t, hub), events.Identity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tracker.Close)
	addr := servicetest.FreeAddr(t)
	servicetest.StartProcess(t, bin, []string{"INFERGATE_NATS_URL=" + leaf.ClientURL(), "INFERGATE_ADDR=" + addr,
		"INFERGATE_HUB_DOMAIN=hub", "INFERGATE_SNAPSHOT_BUCKET="}, "--region", "eu", "--id", "gw-eu-1")
	life, err := events.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, "the region's gateway heard at the hub, ready, on the hub stream's life", func(context.Context) error {
		for _, g := range tracker.Gateways() {
			if g.ID == "gw-eu-1" && g.Region == "eu" && g.Ready && g.Stream.Equal(life) {
				return nil
			}
		}
		return fmt.Errorf("gateways heard: %+v", tracker.Gateways())
	})
}
