package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/keys"
)

// fleet is a control plane with the gateways' receipts wired in, and
// several gateways, each on its own NATS connection, as in production.
type fleet struct {
	nats     *natsembed.Server
	keys     keyv1connect.KeyServiceClient
	deps     deploymentv1connect.DeploymentServiceClient
	upstream string
	gateways []*fleetGateway
}

type fleetGateway struct {
	gw  *gateway.Gateway
	url string
	// stop ends the gateway's consumer (Run).
	stop context.CancelFunc
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{nats: natstest.Start(t)}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	token, _, err := adminauth.New("ops", []string{adminauth.AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := adminauth.FromToken("ops", token, []string{adminauth.AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	natstest.EventStore(t, natstest.JetStreamOn(t, f.nats))
	plane, err := controlplane.OpenWith(ctx, natstest.Connect(t, f.nats), tokens, controlplane.Config{StreamReplicas: 1}, log)
	if err != nil {
		t.Fatal(err)
	}
	kpath, kh, err := keys.NewHandler(keys.Config{Events: plane.Events, Reads: plane.Reads, Projector: plane.Projector, Log: log, Propagation: plane.Tracker}, plane.HandlerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	dpath, dh, err := deployments.NewHandler(deployments.Config{
		Events: plane.Events, Reads: plane.Reads, Projector: plane.Projector, Log: log, Propagation: plane.Tracker,
		GatewayURL: "http://localhost:8000", Upstreams: servicetest.Upstreams(),
	}, plane.HandlerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	checker, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{Events: plane.Events, Interval: 20 * time.Millisecond, Log: log, Upstreams: servicetest.Upstreams()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() {
		_ = plane.Serve(ctx, ln, controlplane.Mux(map[string]http.Handler{kpath: kh, dpath: dh}), time.Second)
		done <- struct{}{}
	}()
	go func() { _ = checker.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		plane.Close()
	})
	url := "http://" + ln.Addr().String()
	opts := connect.WithInterceptors(adminauth.NewClientInterceptor(token))
	f.keys = keyv1connect.NewKeyServiceClient(http.DefaultClient, url, opts)
	f.deps = deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, url, opts)
	up := httptest.NewServer((&demomodel.Server{}).Handler(""))
	t.Cleanup(up.Close)
	f.upstream = up.URL
	return f
}

// addGateway starts a gateway on its own NATS connection. A gateway made
// with ownReporter=true reports receipts through a reporter the test
// keeps running after the gateway's consumer stops — a frozen gateway:
// alive and heartbeating, but no longer applying the stream.
func (f *fleet) addGateway(t *testing.T, id string, ownReporter bool) *fleetGateway {
	t.Helper()
	nc := natstest.Connect(t, f.nats)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	events, err := eventstore.Open(t.Context(), js, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{Events: events, NATS: nc, ID: id, Region: "local", Heartbeat: 100 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
		Upstreams: servicetest.Upstreams()}
	if ownReporter {
		cfg.NATS = nil
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = gw.Run(ctx); close(done) }()
	fg := &fleetGateway{gw: gw, stop: stop}
	var repDone chan struct{}
	repCtx, repStop := context.WithCancel(context.Background())
	if ownReporter {
		rep := fleetReporter(t, repCtx, nc, gw)
		repDone = rep
	}
	srv := httptest.NewServer(gw.Handler())
	fg.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		stop()
		<-done
		repStop()
		if repDone != nil {
			<-repDone
		}
	})
	f.gateways = append(f.gateways, fg)
	servicetest.WaitFor(t, "gateway "+id+" ready", func(context.Context) error {
		if !gw.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	return fg
}

func fleetReporter(t *testing.T, ctx context.Context, nc *nats.Conn, gw *gateway.Gateway) chan struct{} {
	t.Helper()
	rep, err := receipts.NewReporter(nc, gw.ID(), gw.Region(), 100*time.Millisecond,
		gw.Receipt, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = rep.Run(ctx); close(done) }()
	// Forward the gateway's applied notifications while it applies.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-gw.Changed():
				rep.Changed()
			}
		}
	}()
	return done
}

// fleetStatus sends one chat completion with the key to a gateway and returns
// the HTTP status.
func fleetStatus(t *testing.T, client *http.Client, gatewayURL, key string) int {
	t.Helper()
	req, err := http.NewRequest("POST", gatewayURL+"/d/team-a/llama/v1/chat/completions",
		strings.NewReader(`{"model":"infergate-demo","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func (f *fleet) setup(t *testing.T) (keyA, keyB string) {
	t.Helper()
	ctx := t.Context()
	var secrets []string
	for _, name := range []string{"key-a", "key-b"} {
		res, err := f.keys.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: name}))
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, res.Msg.GetSecret())
	}
	if _, err := f.deps.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: "team-a", Name: "llama", Model: "m", UpstreamUrl: f.upstream, AuthEnabled: true, ApiKeys: []string{"key-a"},
	})); err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, "deployment DEPLOYED at every gateway", func(context.Context) error {
		for _, g := range f.gateways {
			if s := fleetStatus(t, http.DefaultClient, g.url, secrets[0]); s != 200 {
				return fmt.Errorf("gateway answered %d", s)
			}
		}
		return nil
	})
	return secrets[0], secrets[1]
}

// TestConfirmedChangesAreEnforcedAtOnce is SPEC §5's guarantee: when a
// write returns confirmed, the very next request to any gateway sees it.
func TestConfirmedChangesAreEnforcedAtOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	for i := range 3 {
		f.addGateway(t, fmt.Sprintf("gw-%d", i), false)
	}
	keyA, keyB := f.setup(t)
	ctx := t.Context()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	rounds := 500
	if testing.Short() {
		rounds = 50
	}
	stale := 0
	// expect sends the request to every gateway at once after a confirmed
	// change and counts every answer that does not show the change.
	expect := func(round int, what string, p interface {
		GetConfirmed() bool
		GetGateways() uint32
	}, key string, want int) {
		t.Helper()
		if !p.GetConfirmed() || p.GetGateways() != 3 {
			t.Fatalf("round %d, %s: propagation %v; want confirmed at 3 gateways", round, what, p)
		}
		for _, g := range f.gateways {
			if got := fleetStatus(t, client, g.url, key); got != want {
				stale++
				t.Errorf("round %d, %s: gateway answered %d, want %d (stale decision)", round, what, got, want)
			}
		}
	}
	for round := range rounds {
		un, err := f.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-a"}))
		if err != nil {
			t.Fatal(err)
		}
		expect(round, "unlink", un.Msg.GetPropagation(), keyA, http.StatusUnauthorized)
		ln, err := f.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-a"}))
		if err != nil {
			t.Fatal(err)
		}
		expect(round, "link", ln.Msg.GetPropagation(), keyA, http.StatusOK)
		off, err := f.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", AuthEnabled: false, ApiKeys: []string{"key-a"}}))
		if err != nil {
			t.Fatal(err)
		}
		expect(round, "auth off", off.Msg.GetPropagation(), keyB, http.StatusOK)
		on, err := f.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", AuthEnabled: true, ApiKeys: []string{"key-a"}}))
		if err != nil {
			t.Fatal(err)
		}
		expect(round, "auth on", on.Msg.GetPropagation(), keyB, http.StatusUnauthorized)
		if stale > 0 {
			t.Fatalf("%d stale decisions after %d rounds", stale, round+1)
		}
	}
	// Deleting a key is confirmed too, at every gateway.
	del, err := f.keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "key-a"}))
	if err != nil {
		t.Fatal(err)
	}
	expect(rounds, "delete key", del.Msg.GetPropagation(), keyA, http.StatusUnauthorized)
}

// TestFrozenGatewayIsNamedNotWaitedFor: a gateway that stops applying the
// stream (but still heartbeats) makes a write return unconfirmed within its
// bound, naming how many gateways are behind; the others are unaffected.
func TestFrozenGatewayIsNamedNotWaitedFor(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.addGateway(t, "gw-0", false)
	f.addGateway(t, "gw-1", false)
	frozen := f.addGateway(t, "gw-frozen", true)
	keyA, _ := f.setup(t)
	ctx := t.Context()
	// All three must be live in the tracker before freezing one.
	warm, err := f.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-b"}))
	if err != nil || !warm.Msg.GetPropagation().GetConfirmed() || warm.Msg.GetPropagation().GetGateways() != 3 {
		t.Fatalf("before freezing: %v, %v", warm, err)
	}

	frozen.stop()
	const bound = 300 * time.Millisecond
	start := time.Now()
	un, err := f.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{
		Project: "team-a", Deployment: "llama", Key: "key-a", PropagationTimeout: durationpb.New(bound),
	}))
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	p := un.Msg.GetPropagation()
	if p.GetConfirmed() || p.GetGateways() != 3 || p.GetGatewaysApplied() != 2 {
		t.Errorf("propagation with a frozen gateway = %v; want 2 of 3, not confirmed", p)
	}
	if took > bound+2*time.Second {
		t.Errorf("the call took %s with a %s bound", took, bound)
	}
	if p.GetWaited().AsDuration() < bound {
		t.Errorf("waited %s, less than the bound %s, yet not confirmed", p.GetWaited().AsDuration(), bound)
	}
	for _, g := range f.gateways[:2] {
		if s := fleetStatus(t, http.DefaultClient, g.url, keyA); s != http.StatusUnauthorized {
			t.Errorf("a live gateway answered %d for the unlinked key", s)
		}
	}
	// The frozen one still serves its old map: this is what the receipt
	// warned about.
	if s := fleetStatus(t, http.DefaultClient, frozen.url, keyA); s != http.StatusOK {
		t.Errorf("the frozen gateway answered %d; it should still hold the old link", s)
	}
}
