package deployments_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// stalled serves the deployment service with a read model that never
// catches up: its projector never runs.
func (e *env) stalled(t *testing.T) deploymentv1connect.DeploymentServiceClient {
	t.Helper()
	url := e.b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		path, h, err := deployments.NewHandler(deployments.Config{
			Events: e.b.Events, Reads: e.b.Reads, Log: e.b.Logger(), GatewayURL: "http://localhost:8000", Upstreams: e.upstreams,
			Projector:             readmodel.NewProjector(e.b.Events, readmodel.NewMemory(), nil),
			ReadYourWritesTimeout: 20 * time.Millisecond,
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{path: h}
	})
	return deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, url, servicetest.ClientOptions(e.b.OpsToken)...)
}

// waitShown waits until the read model shows the deployment as want.
func (e *env) waitShown(t *testing.T, want *deploymentv1.Deployment) {
	t.Helper()
	servicetest.WaitFor(t, "the read model to show "+want.GetName()+" as answered", func(ctx context.Context) error {
		res, err := e.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: want.GetName()}))
		if err != nil {
			return err
		}
		if !proto.Equal(res.Msg.GetDeployment(), want) {
			return errors.New("read model shows " + res.Msg.GetDeployment().String())
		}
		return nil
	})
}

// TestChangesSucceedWhileReadModelBehind: once appended, a change succeeds
// and is answered from the deployment's own events — the same answer the
// read model gives once it catches up — with read_model_behind set.
func TestChangesSucceedWhileReadModelBehind(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		behind := e.stalled(t)
		for _, k := range []string{"key-a", "key-b"} {
			e.key(t, "team-a", k)
		}
		created, err := behind.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
			Project: "team-a", Name: "llama", Model: "llama-3-8b", UpstreamUrl: e.upstream,
			Regions: []string{"us", "eu"}, AuthEnabled: true, ApiKeys: []string{"key-a"},
		}))
		if err != nil {
			t.Fatalf("CreateDeployment with the read model behind: %v", err)
		}
		d := created.Msg.GetDeployment()
		if !created.Msg.GetReadModelBehind() || d.GetStatus() != deploying || !d.GetAuthEnabled() ||
			!slices.Equal(d.GetApiKeys(), []string{"key-a"}) || !slices.Equal(d.GetRegions(), []string{"eu", "us"}) {
			t.Errorf("CreateDeployment answered %v (read_model_behind %v)", d, created.Msg.GetReadModelBehind())
		}
		e.waitStatus(t, "llama", deployed)

		linked, err := behind.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-b"}))
		if err != nil {
			t.Fatalf("LinkKey with the read model behind: %v", err)
		}
		if !linked.Msg.GetReadModelBehind() || !slices.Equal(linked.Msg.GetDeployment().GetApiKeys(), []string{"key-a", "key-b"}) {
			t.Errorf("LinkKey answered %v (read_model_behind %v)", linked.Msg.GetDeployment(), linked.Msg.GetReadModelBehind())
		}
		e.waitShown(t, linked.Msg.GetDeployment())

		del, err := behind.DeleteDeployment(ctx, connect.NewRequest(&deploymentv1.DeleteDeploymentRequest{Project: "team-a", Name: "llama"}))
		if err != nil || !del.Msg.GetReadModelBehind() {
			t.Errorf("DeleteDeployment with the read model behind = %v, %v; want success and read_model_behind", del, err)
		}
	})
}

// TestAnswersLeaveOutDeletedKeys: a link to a key deleted since is not in
// the answer of a later change that did not itself check that key.
func TestAnswersLeaveOutDeletedKeys(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	ctx := t.Context()
	for _, k := range []string{"key-a", "key-b", "key-c"} {
		e.key(t, "team-a", k)
	}
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama", AuthEnabled: true, ApiKeys: []string{"key-a", "key-b"}})
	// Deployed first: the status check's change otherwise may land after
	// LinkKey's answer, and the read model then never shows that answer.
	e.waitStatus(t, "llama", deployed)
	if _, err := e.keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "key-a"})); err != nil {
		t.Fatal(err)
	}
	res, err := e.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-c"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetDeployment().GetApiKeys(); !slices.Equal(got, []string{"key-b", "key-c"}) || res.Msg.GetReadModelBehind() {
		t.Errorf("LinkKey answered api_keys %v (read_model_behind %v), want [key-b key-c]", got, res.Msg.GetReadModelBehind())
	}
	e.waitShown(t, res.Msg.GetDeployment())
}

// TestRetriedChangeIsAnsweredAsTheFirst: a change retried with its
// Idempotency-Key after other changes appends nothing and gets the first
// answer, not the deployment as it is now.
func TestRetriedChangeIsAnsweredAsTheFirst(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	ctx := t.Context()
	e.key(t, "team-a", "key-a")
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama"})
	link := func() *deploymentv1.LinkKeyResponse {
		t.Helper()
		req := connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-a"})
		req.Header().Set(command.IdempotencyHeader, "link-1")
		res, err := e.deps.LinkKey(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	first := link()
	if _, err := e.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-a"})); err != nil {
		t.Fatal(err)
	}
	before := e.lastSeq(t)
	again := link()
	if e.lastSeq(t) != before {
		t.Errorf("the retry appended %d messages", e.lastSeq(t)-before)
	}
	if !proto.Equal(again.GetDeployment(), first.GetDeployment()) || again.GetPropagation().GetSequence() != first.GetPropagation().GetSequence() {
		t.Errorf("retry answered %v at %d, the first call %v at %d", again.GetDeployment(), again.GetPropagation().GetSequence(),
			first.GetDeployment(), first.GetPropagation().GetSequence())
	}
}
