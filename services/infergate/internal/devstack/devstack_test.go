package devstack_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/gen/infergate/usage/v1/usagev1connect"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/adminauth"
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

// TestRunRegions: `infergate dev --regions eu,us` runs the hub, and per
// region a leaf server with a mirror and a gateway reading it; each
// region's link is cut and healed at the regions' control address.
func TestRunRegions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out strings.Builder
	started := make(chan *devstack.Stack, 1)
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(ctx, devstack.Config{
			DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", Out: &out,
			Regions: []string{"eu", "us"}, Demo: true, UsageFlushInterval: 100 * time.Millisecond,
		}, func(st *devstack.Stack) { started <- st })
	}()
	var st *devstack.Stack
	select {
	case st = <-started:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	if len(st.Regions) != 2 || !strings.Contains(out.String(), st.Regions[1].GatewayURL) || !strings.Contains(out.String(), st.RegionsURL+"/regions/eu/cut") {
		t.Fatalf("banner without the regions:\n%s", out.String())
	}
	last := st.Gateway.Applied()
	for _, r := range st.Regions {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.Gateway().WaitApplied(wctx, last)
		cancel()
		if !r.Gateway().Ready() || err != nil {
			t.Errorf("region %s: ready %v, %v; the hub's gateway applied %d", r.Name, r.Gateway().Ready(), err, last)
		}
	}
	// A request through the us region's gateway is counted at the hub:
	// its usage flush crosses the leaf link as the region's leaf user.
	us := st.Regions[1]
	req, err := http.NewRequest(http.MethodPost, us.GatewayURL+"/d/"+devstack.DemoProject+"/"+devstack.DemoDeployment+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", st.Demo.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat through us: %s", resp.Status)
	}
	usage := usagev1connect.NewUsageServiceClient(http.DefaultClient, st.APIURL, connect.WithInterceptors(adminauth.NewClientInterceptor(st.Token)))
	waitFor(t, "the us request counted at the hub", func() bool {
		res, err := usage.GetDeploymentUsage(ctx, connect.NewRequest(&usagev1.GetDeploymentUsageRequest{
			Project: devstack.DemoProject, Name: devstack.DemoDeployment}))
		return err == nil && res.Msg.GetUsage().GetTotal().GetOk() == 1
	})
	post := func(path string) {
		t.Helper()
		resp, err := http.Post(st.RegionsURL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	eu := st.Regions[0]
	// The hub's snapshotter saves the demo's map and JetStream copies it
	// into each region.
	waitFor(t, "eu holds the hub's snapshot of the demo", func() bool {
		info, err := eu.Snapshot(ctx)
		return err == nil && info.Sequence == last
	})
	post("/regions/eu/cut")
	waitFor(t, "eu cut off", func() bool { return !eu.Linked() })
	// Restarted during the cut, eu's gateway starts from eu's snapshot
	// and mirror, and serves on the same address.
	post("/regions/eu/restart")
	waitFor(t, "eu's new gateway ready", func() bool { return eu.Gateway().Ready() })
	if got := eu.Gateway().Status().SnapshotSequence; got != last {
		t.Errorf("eu's restarted gateway started from snapshot %d; want eu's copy, at %d", got, last)
	}
	resp, err = http.Get(strings.Replace(eu.GatewayURL, "localhost", "127.0.0.1", 1) + "/readyz")
	if err != nil {
		t.Fatalf("eu's restarted gateway: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("eu's restarted gateway /readyz: %s", resp.Status)
	}
	post("/regions/eu/heal")
	waitFor(t, "eu linked again", eu.Linked)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
