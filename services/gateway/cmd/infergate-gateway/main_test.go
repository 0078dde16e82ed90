package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
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
// mirror on its leaf server (and the region's copy of the snapshot
// bucket, its default), reports the hub stream's life, and its receipts
// reach the hub's tracker over the leaf-node link.
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
		"INFERGATE_HUB_DOMAIN=hub"}, "--region", "eu", "--id", "gw-eu-1")
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

// TestFrozenProcessAdmitsNothingQueued freezes the real process (SIGSTOP)
// past its staleness bound; a key is unlinked meanwhile and requests with
// it queue at the frozen process. Resumed (SIGCONT), it admits none of
// them: each is refused as stale (it cannot know it is current) or, once
// it has caught up, as an unlinked key. None reaches the upstream.
func TestFrozenProcessAdmitsNothingQueued(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-gateway")
	srv := natstest.Start(t)
	events := natstest.EventStore(t, natstest.JetStreamOn(t, srv))
	var upstreamHits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		upstreamHits.Add(1)
		fmt.Fprint(w, `{"data":[]}`)
	}))
	t.Cleanup(up.Close)

	const project = "team-a"
	live := aggregate.LiveKeys{}
	decide := func(typ, name string, fn eventstore.DecideFunc) {
		t.Helper()
		if _, err := events.Decide(t.Context(), eventstore.Aggregate{Project: project, Type: typ, Name: name}, "", 0, fn); err != nil {
			t.Fatalf("%s %s: %v", typ, name, err)
		}
	}
	meta := func() aggregate.Meta { return command.Meta(t.Context(), project, time.Now()) }
	secret, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	decide(eventstore.TypeKey, "alpha", func(recs []eventstore.Record) ([]*eventv1.Event, error) {
		evs, err := aggregate.KeyFrom("alpha", eventstore.Events(recs)).Create(meta(), aggregate.NewKey{Name: "alpha", Hash: apikey.Sum(secret), Hint: apikey.Hint(secret)})
		if err == nil {
			live["alpha"] = evs[0].GetKeyCreated().GetKeyId()
		}
		return evs, err
	})
	dep := func(cmd func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error)) {
		t.Helper()
		decide(eventstore.TypeDeployment, "chat", func(recs []eventstore.Record) ([]*eventv1.Event, error) {
			return cmd(aggregate.DeploymentFrom("chat", eventstore.Events(recs)), meta())
		})
	}
	dep(func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Create(m, aggregate.NewDeployment{Name: "chat", Model: "demo", UpstreamURL: up.URL, AuthEnabled: true, Keys: []string{"alpha"}}, live)
	})
	dep(func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.SetStatus(m, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED, "")
	})

	const bound = time.Second
	addr := servicetest.FreeAddr(t)
	p := servicetest.StartProcess(t, bin, []string{"INFERGATE_NATS_URL=" + srv.ClientURL(), "INFERGATE_ADDR=" + addr,
		"INFERGATE_MAX_STALENESS=" + bound.String(), "INFERGATE_UPSTREAM_ALLOW=" + upstreampolicy.Loopback}, "--region", "eu")
	call := func(ctx context.Context) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/d/"+project+"/chat/v1/models", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-API-Key", secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	servicetest.WaitFor(t, "the linked key admitted", func(ctx context.Context) error {
		if code, err := call(ctx); err != nil || code != 200 {
			return fmt.Errorf("%d, %v", code, err)
		}
		return nil
	})
	admitted := upstreamHits.Load()

	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	dep(func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "alpha", live)
	})
	const queued = 8
	codes := make(chan int, queued)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for range queued {
		go func() {
			code, err := call(ctx)
			if err != nil {
				t.Errorf("a queued request: %v", err)
			}
			codes <- code
		}()
	}
	// Frozen for longer than its bound: the scenario, not an assertion.
	time.Sleep(bound + 500*time.Millisecond - time.Since(frozen))
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var answered []int
	for range queued {
		code := <-codes
		answered = append(answered, code)
		if code == 200 {
			t.Errorf("a request queued while frozen past the bound was admitted")
		}
	}
	t.Logf("requests queued while frozen answered %v (503: stale, 401: caught up first)", answered)
	if n := upstreamHits.Load() - admitted; n != 0 {
		t.Errorf("%d requests queued while frozen reached the upstream", n)
	}
}
