package audit_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/audit"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/keys"
)

type env struct {
	b        *servicetest.Backend
	url      string
	keys     keyv1connect.KeyServiceClient
	deps     deploymentv1connect.DeploymentServiceClient
	audit    auditv1connect.AuditServiceClient
	upstream string
	secrets  []string
	// plain serves the audit service without a history.
	plain string
}

func start(t *testing.T) *env {
	t.Helper()
	b := servicetest.New(t, servicetest.Memory)
	e := &env{b: b}
	up := httptest.NewServer((&demomodel.Server{}).Handler(""))
	t.Cleanup(up.Close)
	e.upstream = up.URL
	e.url = b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		kp, kh, err := keys.NewHandler(keys.Config{Events: b.Events, Reads: b.Reads, Projector: b.Projector, Log: b.Logger()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		dp, dh, err := deployments.NewHandler(deployments.Config{Events: b.Events, Reads: b.Reads, Projector: b.Projector, Log: b.Logger(), GatewayURL: "http://localhost:8000", Upstreams: servicetest.Upstreams()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		// A history with tiny checkpoint intervals and memory, so the tests
		// go through checkpoints, kept records and dropped ones.
		hist, err := audit.NewHistory(audit.HistoryConfig{Events: b.Events, Every: 3, MaxRecords: 6, Log: b.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		hctx, hcancel := context.WithCancel(context.Background())
		hdone := make(chan struct{})
		go func() { _ = hist.Run(hctx); close(hdone) }()
		t.Cleanup(func() { hcancel(); <-hdone })
		ap, ah, err := audit.NewHandler(audit.Config{Events: b.Events, History: hist, Log: b.Logger()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{kp: kh, dp: dh, ap: ah}
	})
	// The same service without the history: every answer a full replay.
	e.plain = b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		ap, ah, err := audit.NewHandler(audit.Config{Events: b.Events, Log: b.Logger()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{ap: ah}
	})
	opts := servicetest.ClientOptions(b.OpsToken)
	e.keys = keyv1connect.NewKeyServiceClient(http.DefaultClient, e.url, opts...)
	e.deps = deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, e.url, opts...)
	e.audit = auditv1connect.NewAuditServiceClient(http.DefaultClient, e.url, opts...)
	sc, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{Events: b.Events, Interval: 10 * time.Millisecond, Log: b.Logger(), Upstreams: servicetest.Upstreams()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = sc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *env) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) createKey(t *testing.T, name string, expires time.Duration) {
	t.Helper()
	req := &keyv1.CreateKeyRequest{Project: "team-a", Name: name}
	if expires > 0 {
		req.ExpiresAt = timestamppb.New(time.Now().Add(expires))
	}
	res, err := e.keys.CreateKey(t.Context(), connect.NewRequest(req))
	e.must(t, err)
	e.secrets = append(e.secrets, res.Msg.GetSecret())
}

func (e *env) waitDeployed(t *testing.T, name string) {
	t.Helper()
	servicetest.WaitFor(t, "deployment "+name+" DEPLOYED", func(ctx context.Context) error {
		res, err := e.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: "team-a", Name: name}))
		if err != nil {
			return err
		}
		if s := res.Msg.GetDeployment().GetStatus(); s != deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
			return fmt.Errorf("status %s", s)
		}
		return nil
	})
}

func (e *env) list(t *testing.T, req *auditv1.ListEventsRequest) []*auditv1.Event {
	t.Helper()
	req.Project = "team-a"
	var all []*auditv1.Event
	for {
		res, err := e.audit.ListEvents(t.Context(), connect.NewRequest(req))
		e.must(t, err)
		all = append(all, res.Msg.GetEvents()...)
		if res.Msg.GetNextPageToken() == "" {
			return all
		}
		req.PageToken = res.Msg.GetNextPageToken()
	}
}

func summaries(events []*auditv1.Event) string {
	var s []string
	for _, e := range events {
		s = append(s, e.GetSummary())
	}
	return strings.Join(s, "; ")
}

// history builds: keys k-one and k-two; deployment llama with k-one and
// auth; link k-two; unlink k-one; auth off; delete k-two.
func history(t *testing.T, e *env) {
	t.Helper()
	ctx := t.Context()
	e.createKey(t, "k-one", 0)
	e.createKey(t, "k-two", 0)
	_, err := e.deps.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: "team-a", Name: "llama", Model: "m", UpstreamUrl: e.upstream, AuthEnabled: true, ApiKeys: []string{"k-one"},
	}))
	e.must(t, err)
	e.waitDeployed(t, "llama")
	_, err = e.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "k-two"}))
	e.must(t, err)
	_, err = e.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: "team-a", Deployment: "llama", Key: "k-one"}))
	e.must(t, err)
	_, err = e.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", ApiKeys: []string{"k-two"}}))
	e.must(t, err)
	_, err = e.keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "k-two"}))
	e.must(t, err)
}

func TestListEventsFilters(t *testing.T) {
	t.Parallel()
	e := start(t)
	history(t, e)
	// Another project's events never show.
	_, err := e.keys.CreateKey(t.Context(), connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-b", Name: "k-one"}))
	e.must(t, err)

	all := e.list(t, &auditv1.ListEventsRequest{})
	want := "created key k-one (never expires); created key k-two (never expires); " +
		"created deployment llama (model m, upstream " + e.upstream + "); linked key k-one to deployment llama; enabled API-key auth on deployment llama; " +
		"deployment llama is DEPLOYED; linked key k-two to deployment llama; unlinked key k-one from deployment llama; " +
		"disabled API-key auth on deployment llama; deleted key k-two"
	if got := summaries(all); got != want {
		t.Fatalf("all events:\n got %s\nwant %s", got, want)
	}
	for i, ev := range all {
		if i > 0 && ev.GetSequence() < all[i-1].GetSequence() {
			t.Errorf("events out of stream order at %d", i)
		}
		wantActor := "ops"
		if ev.GetType() == "DeploymentStatusChanged" {
			wantActor = "system"
		}
		if ev.GetActor() != wantActor || ev.GetTime() == nil || ev.GetAggregateName() == "" {
			t.Errorf("event %v", ev)
		}
	}

	byKey := summaries(e.list(t, &auditv1.ListEventsRequest{Key: "k-one", PageSize: 1}))
	if want := "created key k-one (never expires); linked key k-one to deployment llama; unlinked key k-one from deployment llama"; byKey != want {
		t.Errorf("by key:\n got %s\nwant %s", byKey, want)
	}
	byDep := e.list(t, &auditv1.ListEventsRequest{Deployment: "llama"})
	for _, ev := range byDep {
		if ev.GetAggregateType() != "deployment" || ev.GetAggregateName() != "llama" {
			t.Errorf("by deployment: %v", ev)
		}
	}
	if len(byDep) != 7 {
		t.Errorf("by deployment: %d events, want 7", len(byDep))
	}
	byKeyAndDep := summaries(e.list(t, &auditv1.ListEventsRequest{Key: "k-two", Deployment: "llama"}))
	if byKeyAndDep != "linked key k-two to deployment llama" {
		t.Errorf("by key and deployment: %s", byKeyAndDep)
	}
	byType := summaries(e.list(t, &auditv1.ListEventsRequest{Types: []string{"KeyLinked", "KeyUnlinked"}}))
	if byType != "linked key k-one to deployment llama; linked key k-two to deployment llama; unlinked key k-one from deployment llama" {
		t.Errorf("by type: %s", byType)
	}
	// A window [since, until) holds exactly the events stored in it.
	since, until := all[3].GetTime(), all[8].GetTime()
	var inWindow []string
	for _, ev := range all {
		if !ev.GetTime().AsTime().Before(since.AsTime()) && ev.GetTime().AsTime().Before(until.AsTime()) {
			inWindow = append(inWindow, ev.GetSummary())
		}
	}
	window := summaries(e.list(t, &auditv1.ListEventsRequest{Since: since, Until: until, PageSize: 2}))
	if window != strings.Join(inWindow, "; ") || len(inWindow) == 0 {
		t.Errorf("window:\n got %s\nwant %s", window, strings.Join(inWindow, "; "))
	}

	// No secret, nor its hash, in any response.
	var text strings.Builder
	for _, ev := range all {
		b, _ := protojson.Marshal(ev)
		text.Write(b)
	}
	for _, s := range e.secrets {
		sum := apikey.Sum(s)
		for _, needle := range []string{s, s[3:20], hex.EncodeToString(sum[:]), base64.StdEncoding.EncodeToString(sum[:])} {
			if strings.Contains(text.String(), needle) {
				t.Errorf("audit output contains secret material %q", needle)
			}
		}
	}

	for _, bad := range []*auditv1.ListEventsRequest{
		{Project: "team-a", Types: []string{"Nope"}},
		{Project: "team-a", Key: "x"},
		{Project: "team-a", PageToken: "abc"},
		{Project: "team-a", Since: until, Until: since},
	} {
		_, err := e.audit.ListEvents(t.Context(), connect.NewRequest(bad))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("ListEvents(%v) = %v, want invalid_argument", bad, err)
		}
	}
}

func TestPagingWhileAppending(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := t.Context()
	for i := range 30 {
		e.createKey(t, fmt.Sprintf("key-%02d", i), 0)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 30 {
			_, _ = e.keys.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: fmt.Sprintf("key-%02d", i), Description: proto.String("x")}))
		}
	}()
	var seqs []uint64
	for _, ev := range e.list(t, &auditv1.ListEventsRequest{PageSize: 4}) {
		seqs = append(seqs, ev.GetSequence())
	}
	wg.Wait()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequence %d follows %d: an event was skipped or repeated", seqs[i], seqs[i-1])
		}
	}
	if len(seqs) < 30 || seqs[0] != 1 {
		t.Errorf("paged %d events from %d", len(seqs), seqs[0])
	}
}

func TestScope(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.createKey(t, "k-one", 0)
	other := auditv1connect.NewAuditServiceClient(http.DefaultClient, e.url, servicetest.ClientOptions(e.b.OtherToken)...)
	for name, call := range map[string]func() error{
		"list": func() error {
			_, err := other.ListEvents(t.Context(), connect.NewRequest(&auditv1.ListEventsRequest{Project: "team-a"}))
			return err
		},
		"check": func() error {
			_, err := other.CheckAccess(t.Context(), connect.NewRequest(&auditv1.CheckAccessRequest{Project: "team-a", Deployment: "d", Key: "k-one"}))
			return err
		},
		"state": func() error {
			_, err := other.GetStateAt(t.Context(), connect.NewRequest(&auditv1.GetStateAtRequest{Project: "team-a"}))
			return err
		},
	} {
		if err := call(); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("%s in another project: %v", name, err)
		}
	}
}

func TestCheckAccessAndStateThroughHistory(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := t.Context()
	check := func(at time.Time, key string) (bool, string) {
		t.Helper()
		res, err := e.audit.CheckAccess(ctx, connect.NewRequest(&auditv1.CheckAccessRequest{Project: "team-a", Deployment: "llama", Key: key, At: timestamppb.New(at)}))
		e.must(t, err)
		return res.Msg.GetAllowed(), res.Msg.GetReason()
	}
	mark := func() time.Time {
		time.Sleep(5 * time.Millisecond)
		m := time.Now()
		time.Sleep(5 * time.Millisecond)
		return m
	}
	t0 := mark()
	history(t, e)
	t1 := mark()
	e.createKey(t, "k-two", 0) // the same name again: a new key, not linked
	t2 := mark()

	tests := []struct {
		at      time.Time
		key     string
		allowed bool
		reason  string
	}{
		{t0, "k-one", false, "unknown_deployment"},
		{t1, "k-one", true, "auth_disabled"},
		{t1, "k-two", true, "auth_disabled"},
		{t2, "k-two", true, "auth_disabled"},
	}
	for _, tt := range tests {
		if allowed, reason := check(tt.at, tt.key); allowed != tt.allowed || reason != tt.reason {
			t.Errorf("%s at %s: %v %s, want %v %s", tt.key, tt.at.Format(time.StampMilli), allowed, reason, tt.allowed, tt.reason)
		}
	}

	// Turn auth back on: the re-created k-two is not linked; k-one was
	// unlinked.
	_, err := e.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", AuthEnabled: true}))
	e.must(t, err)
	t3 := mark()
	for key, want := range map[string]string{"k-one": "not_linked", "k-two": "not_linked", "nope-nope": "unknown_key"} {
		if allowed, reason := check(t3, key); allowed || reason != want {
			t.Errorf("%s at t3: %v %s, want refused %s", key, allowed, reason, want)
		}
	}

	state, err := e.audit.GetStateAt(ctx, connect.NewRequest(&auditv1.GetStateAtRequest{Project: "team-a", At: timestamppb.New(t1)}))
	e.must(t, err)
	var keyNames []string
	for _, k := range state.Msg.GetKeys() {
		keyNames = append(keyNames, k.GetName())
	}
	if fmt.Sprint(keyNames) != "[k-one]" || len(state.Msg.GetDeployments()) != 1 ||
		state.Msg.GetDeployments()[0].GetAuthEnabled() || len(state.Msg.GetDeployments()[0].GetApiKeys()) != 0 {
		t.Errorf("state at t1 = %v", state.Msg)
	}
	mid, err := e.audit.GetStateAt(ctx, connect.NewRequest(&auditv1.GetStateAtRequest{Project: "team-a", At: timestamppb.New(t2)}))
	e.must(t, err)
	if !slices.ContainsFunc(mid.Msg.GetKeys(), func(k *auditv1.KeyState) bool { return k.GetName() == "k-two" }) {
		t.Errorf("state at t2 lacks the re-created k-two: %v", mid.Msg)
	}
}

// TestHistoryAgreesWithFullReplay asks, at the time of every record and
// between records, the service with checkpoints and the one without.
func TestHistoryAgreesWithFullReplay(t *testing.T) {
	t.Parallel()
	e := start(t)
	history(t, e)
	e.createKey(t, "k-two", 0)
	_, err := e.deps.UpdateDeploymentAuth(t.Context(), connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{Project: "team-a", Name: "llama", AuthEnabled: true, ApiKeys: []string{"k-two"}}))
	e.must(t, err)
	// k-two rotated with a grace, then again with none: its three secrets
	// by their hints.
	hints := []string{apikey.Hint(e.secrets[len(e.secrets)-1])}
	for _, grace := range []time.Duration{time.Hour, 0} {
		res, err := e.keys.RotateKey(t.Context(), connect.NewRequest(&keyv1.RotateKeyRequest{Project: "team-a", Name: "k-two", GracePeriod: durationpb.New(grace)}))
		e.must(t, err)
		hints = append(hints, res.Msg.GetKey().GetHint())
	}
	plain := auditv1connect.NewAuditServiceClient(http.DefaultClient, e.plain, servicetest.ClientOptions(e.b.OpsToken)...)
	for i, want := range []string{"rotated", "rotated", "linked"} {
		res, err := e.audit.CheckAccess(t.Context(), connect.NewRequest(&auditv1.CheckAccessRequest{Project: "team-a", Deployment: "llama", Key: "k-two", SecretHint: hints[i]}))
		e.must(t, err)
		if res.Msg.GetReason() != want {
			t.Errorf("k-two's secret %d of 3 now: %s, want %s", i+1, res.Msg.GetReason(), want)
		}
	}
	var moments []time.Time
	for _, ev := range e.list(t, &auditv1.ListEventsRequest{}) {
		at := ev.GetTime().AsTime()
		moments = append(moments, at.Add(-time.Microsecond), at, at.Add(time.Microsecond))
	}
	for _, at := range moments {
		reqs := []*auditv1.CheckAccessRequest{
			{Key: "k-one"}, {Key: "k-two"},
			{Key: "k-two", SecretHint: hints[0]}, {Key: "k-two", SecretHint: hints[1]}, {Key: "k-two", SecretHint: hints[2]},
		}
		for _, req := range reqs {
			key := req.GetKey() + " " + req.GetSecretHint()
			req.Project, req.Deployment, req.At = "team-a", "llama", timestamppb.New(at)
			a, err := e.audit.CheckAccess(t.Context(), connect.NewRequest(req))
			e.must(t, err)
			b, err := plain.CheckAccess(t.Context(), connect.NewRequest(req))
			e.must(t, err)
			if a.Msg.GetReason() != b.Msg.GetReason() || a.Msg.GetAllowed() != b.Msg.GetAllowed() || a.Msg.GetSequence() != b.Msg.GetSequence() {
				t.Errorf("%s at %s: with history %v, full replay %v", key, at.Format(time.StampMicro), a.Msg, b.Msg)
			}
		}
		sa, err := e.audit.GetStateAt(t.Context(), connect.NewRequest(&auditv1.GetStateAtRequest{Project: "team-a", At: timestamppb.New(at)}))
		e.must(t, err)
		sb, err := plain.GetStateAt(t.Context(), connect.NewRequest(&auditv1.GetStateAtRequest{Project: "team-a", At: timestamppb.New(at)}))
		e.must(t, err)
		if !proto.Equal(sa.Msg, sb.Msg) {
			t.Errorf("state at %s: with history %v, full replay %v", at.Format(time.StampMicro), sa.Msg, sb.Msg)
		}
	}
}
