package deployments_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
	"github.com/infergate/infergate/services/keys"
)

const (
	deploying = deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING
	deployed  = deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED
	failed    = deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED
)

type env struct {
	b        *servicetest.Backend
	url      string
	keys     keyv1connect.KeyServiceClient
	deps     deploymentv1connect.DeploymentServiceClient
	upstream string
	// upstreams is the service's upstream policy: loopback allowed, as
	// the test upstreams are there.
	upstreams *upstreampolicy.Policy
}

// checker settings for the status checker the tests run.
type checker struct {
	timeout time.Duration
}

func start(t *testing.T, kind string) *env {
	t.Helper()
	e := &env{b: servicetest.New(t, kind), upstream: modelServer(t, "/v1/models"), upstreams: servicetest.Upstreams()}
	e.serve(t)
	e.runChecker(t, checker{timeout: time.Minute})
	return e
}

// modelServer is a real HTTP upstream that answers 200 on okPath only.
func modelServer(t *testing.T, okPath string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != okPath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"demo","object":"model"}]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (e *env) serve(t *testing.T) {
	t.Helper()
	e.url = e.b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		kpath, kh, err := keys.NewHandler(keys.Config{Events: e.b.Events, Reads: e.b.Reads, Projector: e.b.Projector, Log: e.b.Logger()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		dpath, dh, err := deployments.NewHandler(deployments.Config{
			Events: e.b.Events, Reads: e.b.Reads, Projector: e.b.Projector, Log: e.b.Logger(),
			GatewayURL: "http://localhost:8000", Upstreams: e.upstreams,
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{kpath: kh, dpath: dh}
	})
	opts := servicetest.ClientOptions(e.b.OpsToken)
	e.keys = keyv1connect.NewKeyServiceClient(http.DefaultClient, e.url, opts...)
	e.deps = deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, e.url, opts...)
}

func (e *env) runChecker(t *testing.T, c checker) {
	t.Helper()
	sc, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{
		Events: e.b.Events, Interval: 20 * time.Millisecond, Timeout: c.timeout, Log: e.b.Logger(), Upstreams: e.upstreams,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("status checker: %v", err)
		}
	})
}

func (e *env) key(t *testing.T, project, name string) {
	t.Helper()
	if _, err := e.keys.CreateKey(t.Context(), connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name})); err != nil {
		t.Fatalf("CreateKey %s: %v", name, err)
	}
}

func (e *env) create(t *testing.T, req *deploymentv1.CreateDeploymentRequest) *deploymentv1.Deployment {
	t.Helper()
	if req.Project == "" {
		req.Project = "team-a"
	}
	if req.Model == "" {
		req.Model = "llama-3-8b"
	}
	if req.UpstreamUrl == "" {
		req.UpstreamUrl = e.upstream
	}
	res, err := e.deps.CreateDeployment(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("CreateDeployment %s: %v", req.Name, err)
	}
	return res.Msg.GetDeployment()
}

func (e *env) get(t *testing.T, name string) *deploymentv1.Deployment {
	t.Helper()
	res, err := e.deps.GetDeployment(t.Context(), connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: name}))
	if err != nil {
		t.Fatalf("GetDeployment %s: %v", name, err)
	}
	return res.Msg.GetDeployment()
}

func (e *env) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := e.b.Events.LastSequence(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func (e *env) waitStatus(t *testing.T, name string, want deploymentv1.DeploymentStatus) *deploymentv1.Deployment {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d := e.get(t, name)
		if d.GetStatus() == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %s is %s, never became %s", name, d.GetStatus(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func forEachKind(t *testing.T, f func(t *testing.T, e *env)) {
	servicetest.EachKind(t, func(t *testing.T, kind string) { f(t, start(t, kind)) })
}

func TestDeploymentLifecycle(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.key(t, "team-a", "key-b")
		e.key(t, "team-a", "key-a")
		d := e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama", Regions: []string{"us", "eu"}, AuthEnabled: true, ApiKeys: []string{"key-b", "key-a"}})
		if d.GetStatus() != deploying && d.GetStatus() != deployed {
			t.Errorf("new deployment status = %s", d.GetStatus())
		}
		if d.GetEndpointUrl() != "http://model-llama.team-a.localhost:8000" || !d.GetAuthEnabled() ||
			fmt.Sprint(d.GetApiKeys()) != "[key-a key-b]" || fmt.Sprint(d.GetRegions()) != "[eu us]" ||
			d.GetUpstreamUrl() != e.upstream || d.GetModel() != "llama-3-8b" || d.GetId() == "" || d.GetCreatedAt() == nil {
			t.Errorf("created deployment = %v", d)
		}
		d = e.waitStatus(t, "llama", deployed)
		if d.GetStatusReason() != "" {
			t.Errorf("status reason = %q", d.GetStatusReason())
		}

		k, err := e.keys.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "key-a"}))
		if err != nil || fmt.Sprint(k.Msg.GetKey().GetDeploymentNames()) != "[llama]" {
			t.Errorf("key-a deployment_names = %v, %v; want [llama]", k.Msg.GetKey().GetDeploymentNames(), err)
		}

		// Deleting a key unlinks it everywhere.
		if _, err := e.keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "key-a"})); err != nil {
			t.Fatal(err)
		}
		if got := e.get(t, "llama").GetApiKeys(); fmt.Sprint(got) != "[key-b]" {
			t.Errorf("api_keys after deleting key-a = %v", got)
		}
		// A new key-a is not linked by the old link.
		e.key(t, "team-a", "key-a")
		if got := e.get(t, "llama").GetApiKeys(); fmt.Sprint(got) != "[key-b]" {
			t.Errorf("api_keys after re-creating key-a = %v", got)
		}

		del, err := e.deps.DeleteDeployment(ctx, connect.NewRequest(&deploymentv1.DeleteDeploymentRequest{Project: "team-a", Name: "llama"}))
		if err != nil {
			t.Fatal(err)
		}
		if del.Msg.GetPropagation().GetSequence() == 0 || del.Msg.GetPropagation().GetConfirmed() {
			t.Errorf("delete propagation = %v", del.Msg.GetPropagation())
		}
		_, err = e.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: "llama"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "get after delete")
		k, _ = e.keys.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "key-b"}))
		if len(k.Msg.GetKey().GetDeploymentNames()) != 0 {
			t.Errorf("key-b still names %v after the deployment was deleted", k.Msg.GetKey().GetDeploymentNames())
		}
		again := e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama"})
		if again.GetId() == d.GetId() || again.GetAuthEnabled() || len(again.GetApiKeys()) != 0 {
			t.Errorf("re-created deployment = %v; want a fresh one", again)
		}
	})
}

// TestUpstreamPolicy runs the service with the default upstream policy: a
// loopback upstream, by address or by name, is invalid_argument naming
// the field and the rule, and nothing is appended.
func TestUpstreamPolicy(t *testing.T) {
	t.Parallel()
	e := &env{b: servicetest.New(t, servicetest.Memory)} // upstreams nil: the default policy
	e.serve(t)
	before := e.lastSeq(t)
	for _, u := range []string{"http://127.0.0.1:8000", "http://[::1]:8000/v1", "http://localhost:8000", "http://[::ffff:127.0.0.1]:8000", "http://169.254.169.254"} {
		_, err := e.deps.CreateDeployment(t.Context(), connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
			Project: "team-a", Name: "ssrf", Model: "m", UpstreamUrl: u,
		}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, u)
		if msg := err.Error(); !strings.Contains(msg, "upstream_url") || !strings.Contains(msg, "refused by the upstream policy") ||
			(!strings.Contains(msg, "loopback") && !strings.Contains(msg, "link-local")) {
			t.Errorf("%s: message %q does not name the field and the rule", u, msg)
		}
	}
	if after := e.lastSeq(t); after != before {
		t.Errorf("stream grew from %d to %d on refused upstreams", before, after)
	}
	// Elsewhere is allowed (a name that does not resolve here is left to
	// the gateways, which check the address they dial).
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "private", UpstreamUrl: "http://10.1.2.3:8000"})
}

func TestStatusFailedAndHealthFallback(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	// A second checker with a short deadline settles the dead upstream.
	e.runChecker(t, checker{timeout: 300 * time.Millisecond})
	// Port 1 on loopback: nothing listens there. (A closed httptest
	// server's port can be taken by a parallel test's server.)
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "dead", UpstreamUrl: "http://127.0.0.1:1"})
	d := e.waitStatus(t, "dead", failed)
	if !strings.Contains(d.GetStatusReason(), "did not answer") {
		t.Errorf("failed reason = %q", d.GetStatusReason())
	}
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "health-only", UpstreamUrl: modelServer(t, "/health")})
	e.waitStatus(t, "health-only", deployed)
}

func TestUpdateDeploymentAuthAppendsOnlyTheDifference(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		for _, k := range []string{"key-a", "key-b", "key-c"} {
			e.key(t, "team-a", k)
		}
		e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama", ApiKeys: []string{"key-a", "key-b"}})
		e.waitStatus(t, "llama", deployed)

		save := func(enabled bool, keys ...string) *deploymentv1.UpdateDeploymentAuthResponse {
			t.Helper()
			res, err := e.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
				Project: "team-a", Name: "llama", AuthEnabled: enabled, ApiKeys: keys,
			}))
			if err != nil {
				t.Fatalf("UpdateDeploymentAuth: %v", err)
			}
			return res.Msg
		}
		before := e.lastSeq(t)
		res := save(true, "key-c", "key-a")
		if !res.GetDeployment().GetAuthEnabled() || fmt.Sprint(res.GetDeployment().GetApiKeys()) != "[key-a key-c]" {
			t.Errorf("after save: %v", res.GetDeployment())
		}
		if after := e.lastSeq(t); after != before+1 || res.GetPropagation().GetSequence() != after {
			t.Errorf("save appended %d messages (propagation sequence %d); want exactly one", after-before, res.GetPropagation().GetSequence())
		}
		recs, _, err := e.b.Events.Load(ctx, eventstore.Aggregate{Project: "team-a", Type: eventstore.TypeDeployment, Name: "llama"})
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, ev := range recs[len(recs)-1].Events {
			kinds = append(kinds, fmt.Sprintf("%T", ev.GetPayload()))
		}
		if got := strings.Join(kinds, ","); got != "*eventv1.Event_KeyLinked,*eventv1.Event_KeyUnlinked,*eventv1.Event_DeploymentAuthEnabled" {
			t.Errorf("the save's batch = %s", got)
		}
		// Saving the same state again appends nothing.
		save(true, "key-a", "key-c")
		if e.lastSeq(t) != before+1 {
			t.Error("saving the same state appended events")
		}
		// Errors change nothing.
		for _, bad := range []struct {
			keys []string
			code connect.Code
		}{{[]string{"nope"}, connect.CodeNotFound}, {[]string{"BAD!"}, connect.CodeInvalidArgument}} {
			_, err := e.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
				Project: "team-a", Name: "llama", ApiKeys: bad.keys,
			}))
			servicetest.WantCode(t, err, bad.code, fmt.Sprint("save with ", bad.keys))
		}
		if e.lastSeq(t) != before+1 {
			t.Error("a refused save appended events")
		}
		d := save(false).GetDeployment()
		if d.GetAuthEnabled() || len(d.GetApiKeys()) != 0 {
			t.Errorf("after clearing: %v", d)
		}
	})
}

func TestLinkAndUnlink(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.key(t, "team-a", "key-a")
		e.key(t, "team-b", "key-b")
		e.key(t, "team-a", "gone")
		if _, err := e.keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "gone"})); err != nil {
			t.Fatal(err)
		}
		e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama", AuthEnabled: true})
		e.waitStatus(t, "llama", deployed) // the status checker's append

		link := func(key string) (*deploymentv1.LinkKeyResponse, error) {
			res, err := e.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: key}))
			if err != nil {
				return nil, err
			}
			return res.Msg, nil
		}
		res, err := link("key-a")
		if err != nil || fmt.Sprint(res.GetDeployment().GetApiKeys()) != "[key-a]" {
			t.Fatalf("LinkKey = %v, %v", res, err)
		}
		if p := res.GetPropagation(); p.GetSequence() != e.lastSeq(t) || p.GetConfirmed() {
			t.Errorf("propagation = %v", p)
		}
		seq := e.lastSeq(t)
		if _, err := link("key-a"); err != nil || e.lastSeq(t) != seq {
			t.Errorf("linking a linked key: %v, appended %d", err, e.lastSeq(t)-seq)
		}
		_, err = link("key-b")
		servicetest.WantCode(t, err, connect.CodeNotFound, "link a key of another project")
		_, err = link("gone")
		servicetest.WantCode(t, err, connect.CodeNotFound, "link a deleted key")
		_, err = e.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "nope", Key: "key-a"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "link to an unknown deployment")
		_, err = e.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "k"}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "link a bad key name")
		if e.lastSeq(t) != seq {
			t.Error("refused links appended events")
		}

		un, err := e.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-a"}))
		if err != nil || len(un.Msg.GetDeployment().GetApiKeys()) != 0 {
			t.Fatalf("UnlinkKey = %v, %v", un, err)
		}
		seq = e.lastSeq(t)
		if _, err := e.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "key-a"})); err != nil || e.lastSeq(t) != seq {
			t.Errorf("unlinking an unlinked key: %v", err)
		}
	})
}

func TestDeploymentValidation(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "taken"})
		e.waitStatus(t, "taken", deployed) // the status checker's append
		before := e.lastSeq(t)
		good := func() *deploymentv1.CreateDeploymentRequest {
			return &deploymentv1.CreateDeploymentRequest{Project: "team-a", Name: "fresh", Model: "m", UpstreamUrl: "http://up:8000"}
		}
		tests := []struct {
			name  string
			edit  func(r *deploymentv1.CreateDeploymentRequest)
			code  connect.Code
			field string
		}{
			{"bad project", func(r *deploymentv1.CreateDeploymentRequest) { r.Project = "-x" }, connect.CodeInvalidArgument, "project"},
			{"bad name", func(r *deploymentv1.CreateDeploymentRequest) { r.Name = "Llama_3" }, connect.CodeInvalidArgument, "name"},
			{"long name", func(r *deploymentv1.CreateDeploymentRequest) { r.Name = strings.Repeat("a", 64) }, connect.CodeInvalidArgument, "name"},
			{"no model", func(r *deploymentv1.CreateDeploymentRequest) { r.Model = "" }, connect.CodeInvalidArgument, "model"},
			{"relative upstream", func(r *deploymentv1.CreateDeploymentRequest) { r.UpstreamUrl = "/v1" }, connect.CodeInvalidArgument, "upstream_url"},
			{"ftp upstream", func(r *deploymentv1.CreateDeploymentRequest) { r.UpstreamUrl = "ftp://x" }, connect.CodeInvalidArgument, "upstream_url"},
			// Refused by the upstream policy even with loopback allowed.
			{"metadata upstream", func(r *deploymentv1.CreateDeploymentRequest) { r.UpstreamUrl = "http://169.254.169.254/latest" }, connect.CodeInvalidArgument, "link-local"},
			{"link-local v6 upstream", func(r *deploymentv1.CreateDeploymentRequest) { r.UpstreamUrl = "http://[fe80::1]:8000" }, connect.CodeInvalidArgument, "upstream_url"},
			{"unspecified upstream", func(r *deploymentv1.CreateDeploymentRequest) { r.UpstreamUrl = "http://0.0.0.0:8000" }, connect.CodeInvalidArgument, "unspecified"},
			{"numeric host upstream", func(r *deploymentv1.CreateDeploymentRequest) { r.UpstreamUrl = "http://2852039166/" }, connect.CodeInvalidArgument, "upstream_url"},
			{"bad region", func(r *deploymentv1.CreateDeploymentRequest) { r.Regions = []string{"EU West"} }, connect.CodeInvalidArgument, "regions[0]"},
			{"bad key name", func(r *deploymentv1.CreateDeploymentRequest) { r.ApiKeys = []string{"x"} }, connect.CodeInvalidArgument, "api_keys[0]"},
			{"unknown key", func(r *deploymentv1.CreateDeploymentRequest) { r.ApiKeys = []string{"no-such-key"} }, connect.CodeNotFound, "no-such-key"},
			{"duplicate", func(r *deploymentv1.CreateDeploymentRequest) { r.Name = "taken" }, connect.CodeAlreadyExists, "taken"},
		}
		for _, tt := range tests {
			req := good()
			tt.edit(req)
			_, err := e.deps.CreateDeployment(ctx, connect.NewRequest(req))
			servicetest.WantCode(t, err, tt.code, tt.name)
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("%s: message %q does not name %q", tt.name, err, tt.field)
			}
		}
		_, err := e.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: "nope"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "get unknown")
		_, err = e.deps.DeleteDeployment(ctx, connect.NewRequest(&deploymentv1.DeleteDeploymentRequest{Project: "team-a", Name: "nope"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "delete unknown")
		if after := e.lastSeq(t); after != before {
			t.Errorf("stream grew from %d to %d on bad input", before, after)
		}
	})
}

func TestConcurrentSavesNeverLoseAnUpdate(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		var names []string
		for i := range 10 {
			name := fmt.Sprintf("key-%d", i)
			e.key(t, "team-a", name)
			names = append(names, name)
		}
		e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama"})
		e.waitStatus(t, "llama", deployed)

		var wg sync.WaitGroup
		errs := make(chan error, 10)
		start := make(chan struct{})
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// Each save wants a different set: keys i and i+1.
				_, err := e.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
					Project: "team-a", Name: "llama", AuthEnabled: i%2 == 0, ApiKeys: []string{names[i], names[(i+1)%10]},
				}))
				if err != nil && connect.CodeOf(err) != connect.CodeAborted {
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("save failed: %v", err)
		}

		// The final state is the state the last appended save asked for...
		agg := eventstore.Aggregate{Project: "team-a", Type: eventstore.TypeDeployment, Name: "llama"}
		recs, _, err := e.b.Events.Load(ctx, agg)
		if err != nil {
			t.Fatal(err)
		}
		var links []string
		auth := false
		for _, r := range recs {
			for _, ev := range r.Events {
				switch {
				case ev.GetKeyLinked() != nil:
					links = append(links, ev.GetKeyLinked().GetKeyName())
				case ev.GetKeyUnlinked() != nil:
					links = slices.DeleteFunc(links, func(n string) bool { return n == ev.GetKeyUnlinked().GetKeyName() })
				case ev.GetDeploymentAuthEnabled() != nil:
					auth = true
				case ev.GetDeploymentAuthDisabled() != nil:
					auth = false
				}
			}
		}
		slices.Sort(links)
		got := e.get(t, "llama")
		if len(links) != 2 || fmt.Sprint(got.GetApiKeys()) != fmt.Sprint(links) || got.GetAuthEnabled() != auth {
			t.Errorf("read model %v (auth %v), replay of the stream %v (auth %v)", got.GetApiKeys(), got.GetAuthEnabled(), links, auth)
		}
		// ... and a fresh replay of the stream agrees with the read model.
		fresh := readmodel.NewMemory()
		last := e.lastSeq(t)
		if err := e.b.Events.Follow(ctx, 0, func(r eventstore.Record) error {
			if err := fresh.Apply(ctx, r); err != nil {
				return err
			}
			if r.Sequence == last {
				return errDone
			}
			return nil
		}); err != errDone {
			t.Fatal(err)
		}
		replayed, err := fresh.GetDeployment(ctx, "team-a", "llama")
		if err != nil || fmt.Sprint(replayed.APIKeys) != fmt.Sprint(got.GetApiKeys()) || replayed.AuthEnabled != got.GetAuthEnabled() {
			t.Errorf("replay = %+v, %v; read model = %v", replayed, err, got)
		}
	})
}

var errDone = fmt.Errorf("done")

func TestIdempotentSave(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	ctx := t.Context()
	e.key(t, "team-a", "key-a")
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama"})
	e.waitStatus(t, "llama", deployed)
	before := e.lastSeq(t)
	for range 3 {
		req := connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", AuthEnabled: true, ApiKeys: []string{"key-a"}})
		req.Header().Set(command.IdempotencyHeader, "save-1")
		res, err := e.deps.UpdateDeploymentAuth(ctx, req)
		if err != nil || !res.Msg.GetDeployment().GetAuthEnabled() {
			t.Fatalf("save: %v, %v", res, err)
		}
		if res.Msg.GetPropagation().GetSequence() != before+1 {
			t.Errorf("retry reports sequence %d, want the first save's %d", res.Msg.GetPropagation().GetSequence(), before+1)
		}
	}
	if e.lastSeq(t) != before+1 {
		t.Errorf("three tries with one idempotency key appended %d messages", e.lastSeq(t)-before)
	}
}

func TestListAndRestart(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.key(t, "team-a", "key-a")
		for _, n := range []string{"delta", "alpha", "charlie", "bravo"} {
			e.create(t, &deploymentv1.CreateDeploymentRequest{Name: n, ApiKeys: []string{"key-a"}, AuthEnabled: n == "alpha"})
		}
		e.create(t, &deploymentv1.CreateDeploymentRequest{Project: "team-b", Name: "elsewhere"})
		list := func() []*deploymentv1.Deployment {
			var all []*deploymentv1.Deployment
			token := ""
			for {
				res, err := e.deps.ListDeployments(ctx, connect.NewRequest(&deploymentv1.ListDeploymentsRequest{Project: "team-a", PageSize: 3, PageToken: token}))
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, res.Msg.GetDeployments()...)
				if token = res.Msg.GetNextPageToken(); token == "" {
					return all
				}
			}
		}
		for _, n := range []string{"alpha", "bravo", "charlie", "delta"} {
			e.waitStatus(t, n, deployed)
		}
		before := list()
		var names []string
		for _, d := range before {
			names = append(names, d.GetName())
		}
		if fmt.Sprint(names) != "[alpha bravo charlie delta]" {
			t.Fatalf("listed %v", names)
		}
		e.b.Restart(t)
		e.serve(t)
		after := list()
		if len(after) != len(before) {
			t.Fatalf("after restart %d deployments, before %d", len(after), len(before))
		}
		for i := range after {
			if !proto.Equal(after[i], before[i]) {
				t.Errorf("after restart %v\nbefore %v", after[i], before[i])
			}
		}
	})
}

func TestScope(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	ctx := t.Context()
	e.create(t, &deploymentv1.CreateDeploymentRequest{Name: "llama"})
	other := deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, e.url, servicetest.ClientOptions(e.b.OtherToken)...)
	_, errExists := other.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: "llama"}))
	_, errMissing := other.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: "nope"}))
	servicetest.WantCode(t, errExists, connect.CodePermissionDenied, "existing")
	if errExists.Error() != errMissing.Error() {
		t.Errorf("errors reveal existence: %q vs %q", errExists, errMissing)
	}
	_, err := other.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama"}))
	servicetest.WantCode(t, err, connect.CodePermissionDenied, "save in another project")
	none := deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, e.url)
	_, err = none.ListDeployments(ctx, connect.NewRequest(&deploymentv1.ListDeploymentsRequest{Project: "team-a"}))
	servicetest.WantCode(t, err, connect.CodeUnauthenticated, "no token")
}
