package e2e_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// TestAuditAgreesWithTheGateway runs a scripted history through the real
// one-process stack — create keys, link, unlink, toggle auth, expire,
// delete, re-create a key under the same name — asking the real gateway
// after every step, and then asks the audit service about each of those
// moments: its answer must be the gateway's.
func TestAuditAgreesWithTheGateway(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	stackCtx, stop := context.WithCancel(context.Background())
	ready := make(chan *devstack.Stack, 1)
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(stackCtx, devstack.Config{
			DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0",
			StatusInterval: 20 * time.Millisecond, Out: io.Discard,
		}, func(s *devstack.Stack) { ready <- s })
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("stack: %v", err)
		}
	})
	var st *devstack.Stack
	select {
	case st = <-ready:
	case err := <-done:
		t.Fatalf("stack did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("stack did not start")
	}
	opts := connect.WithInterceptors(adminauth.NewClientInterceptor(st.Token))
	keys := keyv1connect.NewKeyServiceClient(http.DefaultClient, st.APIURL, opts)
	deps := deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, st.APIURL, opts)
	audit := auditv1connect.NewAuditServiceClient(http.DefaultClient, st.APIURL, opts)
	up := httptest.NewServer((&demomodel.Server{}).Handler(""))
	t.Cleanup(up.Close)
	_, gwPort, _ := net.SplitHostPort(strings.TrimPrefix(st.GatewayURL, "http://"))
	gatewayURL := "http://127.0.0.1:" + gwPort

	secrets := map[string]string{}
	createKey := func(name string, expires time.Duration) {
		t.Helper()
		req := &keyv1.CreateKeyRequest{Project: "team-a", Name: name}
		if expires > 0 {
			req.ExpiresAt = timestamppb.New(time.Now().Add(expires))
		}
		res, err := keys.CreateKey(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		secrets[name] = res.Msg.GetSecret()
	}
	// applied waits until the gateway has applied a change's sequence.
	applied := func(p interface{ GetSequence() uint64 }) {
		t.Helper()
		if err := st.Gateway.WaitApplied(ctx, p.GetSequence()); err != nil {
			t.Fatal(err)
		}
	}
	// An observation: at a moment, what the gateway answered for a key.
	type observation struct {
		step    string
		key     string
		secret  string
		at      time.Time
		allowed bool
	}
	var seen []observation
	observe := func(step string) {
		t.Helper()
		for _, name := range []string{"k-one", "k-two"} {
			secret := secrets[name]
			req, _ := http.NewRequest("POST", gatewayURL+"/d/team-a/llama/v1/chat/completions",
				strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("X-API-Key", secret)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 && res.StatusCode != 401 {
				t.Fatalf("%s: gateway answered %d", step, res.StatusCode)
			}
			seen = append(seen, observation{step, name, secret, time.Now(), res.StatusCode == 200})
		}
		time.Sleep(2 * time.Millisecond) // so moments of consecutive steps differ
	}

	createKey("k-one", 0)
	createKey("k-two", 1500*time.Millisecond)
	dep, err := deps.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: "team-a", Name: "llama", Model: "m", UpstreamUrl: up.URL, AuthEnabled: true, ApiKeys: []string{"k-one"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	applied(dep.Msg.GetPropagation())
	for {
		d, err := deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: "llama"}))
		if err != nil {
			t.Fatal(err)
		}
		if d.Msg.GetDeployment().GetStatus() == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// DEPLOYED is the status checker's own event: wait for the gateway.
	last, err := audit.ListEvents(ctx, connect.NewRequest(&auditv1.ListEventsRequest{Project: "team-a", Types: []string{"DeploymentStatusChanged"}}))
	if err != nil || len(last.Msg.GetEvents()) == 0 {
		t.Fatalf("status event: %v %v", last, err)
	}
	applied(last.Msg.GetEvents()[0])
	observe("deployed, k-one linked")

	link, err := deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "k-two"}))
	if err != nil {
		t.Fatal(err)
	}
	applied(link.Msg.GetPropagation())
	observe("k-two linked")

	un, err := deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "k-one"}))
	if err != nil {
		t.Fatal(err)
	}
	applied(un.Msg.GetPropagation())
	observe("k-one unlinked")

	off, err := deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", ApiKeys: []string{"k-two"}}))
	if err != nil {
		t.Fatal(err)
	}
	applied(off.Msg.GetPropagation())
	observe("auth off")

	on, err := deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", AuthEnabled: true, ApiKeys: []string{"k-two"}}))
	if err != nil {
		t.Fatal(err)
	}
	applied(on.Msg.GetPropagation())
	observe("auth on")

	// k-two expires by the clock alone: no event.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		k, err := keys.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "k-two"}))
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(k.Msg.GetKey().GetExpiresAt().AsTime().Add(10 * time.Millisecond)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	observe("k-two expired")

	relink, err := deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "k-one"}))
	if err != nil {
		t.Fatal(err)
	}
	applied(relink.Msg.GetPropagation())
	observe("k-one linked again")

	del, err := keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "k-one"}))
	if err != nil {
		t.Fatal(err)
	}
	applied(del.Msg.GetPropagation())
	observe("k-one deleted")

	oldOne := secrets["k-one"]
	createKey("k-one", 0) // same name, a different key, not linked
	again, err := audit.ListEvents(ctx, connect.NewRequest(&auditv1.ListEventsRequest{Project: "team-a", Key: "k-one", Types: []string{"KeyCreated"}}))
	if err != nil {
		t.Fatal(err)
	}
	applied(again.Msg.GetEvents()[len(again.Msg.GetEvents())-1])
	observe("k-one re-created")

	wantSomeAllowed, wantSomeRefused := false, false
	for _, o := range seen {
		res, err := audit.CheckAccess(ctx, connect.NewRequest(&auditv1.CheckAccessRequest{
			Project: "team-a", Deployment: "llama", Key: o.key, At: timestamppb.New(o.at),
		}))
		if err != nil {
			t.Fatal(err)
		}
		// After the re-creation, "k-one" names the new key; the gateway
		// was asked with the new secret too.
		if res.Msg.GetAllowed() != o.allowed {
			t.Errorf("%s: %s at %s — gateway allowed=%v, audit allowed=%v (%s)",
				o.step, o.key, o.at.Format(time.StampMicro), o.allowed, res.Msg.GetAllowed(), res.Msg.GetReason())
		}
		wantSomeAllowed = wantSomeAllowed || o.allowed
		wantSomeRefused = wantSomeRefused || !o.allowed
	}
	if !wantSomeAllowed || !wantSomeRefused {
		t.Error("the script never had both answers: it proves nothing")
	}
	if oldOne == secrets["k-one"] {
		t.Error("re-created key has the old secret")
	}
}
