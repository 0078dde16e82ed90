// Package e2e_test runs the whole of infergate the way a user meets it —
// the one-process stack (devstack.Run) with its embedded NATS, services and
// gateway, clients talking to it over real sockets — and checks the story
// of issue 4: keys, deployments, the gateway's decisions, the OpenAI SDK,
// the upstream never seeing a key, the CLI, and a restart.
//
// Helpers here carry an e2e prefix; other files of the package share them.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
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
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// e2eTimeout bounds every wait of these tests: generous, because -race on
// a busy 2-core machine is slow, but never what a test relies on.
const e2eTimeout = 30 * time.Second

// e2eStack is one running one-process stack, with clients for its control
// plane and its gateway.
type e2eStack struct {
	*devstack.Stack
	dataDir string
	// gwAddr is the gateway's listen address (127.0.0.1:port); requests go
	// there, naming their deployment by Host or by path.
	gwAddr string
	client *http.Client
	keys   keyv1connect.KeyServiceClient
	deps   deploymentv1connect.DeploymentServiceClient
	audit  auditv1connect.AuditServiceClient
	// stop cancels Run and waits for it to return; later calls do nothing.
	stop func()
}

// e2eStart runs devstack.Run on dataDir until stop or the test's end, and
// returns once the stack is ready. configure may change the config.
func e2eStart(t *testing.T, dataDir string, configure ...func(*devstack.Config)) *e2eStack {
	t.Helper()
	logs := &e2eLogWriter{t: t}
	cfg := devstack.Config{
		DataDir:        dataDir,
		APIAddr:        "127.0.0.1:0",
		GatewayAddr:    "127.0.0.1:0",
		NATSAddr:       "127.0.0.1:0",
		StatusInterval: 50 * time.Millisecond,
		Out:            io.Discard,
		Log:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, f := range configure {
		f(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *devstack.Stack, 1)
	done := make(chan error, 1)
	go func() { done <- devstack.Run(ctx, cfg, func(st *devstack.Stack) { ready <- st }) }()

	var st *devstack.Stack
	select {
	case st = <-ready:
	case err := <-done:
		cancel()
		logs.close()
		t.Fatalf("devstack.Run returned before the stack was ready: %v", err)
	case <-time.After(e2eTimeout):
		cancel()
		<-done
		logs.close()
		t.Fatalf("stack not ready after %s", e2eTimeout)
	}

	u, err := url.Parse(st.GatewayURL)
	if err != nil {
		t.Fatalf("gateway URL %q: %v", st.GatewayURL, err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	client := &http.Client{Transport: transport, Timeout: e2eTimeout}
	auth := connect.WithInterceptors(adminauth.NewClientInterceptor(st.Token))
	s := &e2eStack{
		Stack:   st,
		dataDir: dataDir,
		gwAddr:  net.JoinHostPort("127.0.0.1", u.Port()),
		client:  client,
		keys:    keyv1connect.NewKeyServiceClient(client, st.APIURL, auth),
		deps:    deploymentv1connect.NewDeploymentServiceClient(client, st.APIURL, auth),
		audit:   auditv1connect.NewAuditServiceClient(client, st.APIURL, auth),
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			err := <-done
			transport.CloseIdleConnections()
			logs.close()
			if err != nil {
				t.Errorf("devstack.Run: %v", err)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// e2eLogWriter sends the stack's warnings to the test log, and drops them
// once the stack has stopped (a test must not log after it ends).
type e2eLogWriter struct {
	t      *testing.T
	mu     sync.Mutex // mu protects closed
	closed bool
}

func (w *e2eLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Logf("stack: %s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func (w *e2eLogWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// e2eDemoUpstream serves the demo model on a port of its own, as a real
// upstream would be: not the stack's built-in one.
func e2eDemoUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer((&demomodel.Server{}).Handler(""))
	t.Cleanup(srv.Close)
	return srv.URL
}

func e2eCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	t.Cleanup(cancel)
	return ctx
}

// createKey creates a key (never expiring when expires is zero) and
// returns it with its secret.
func (s *e2eStack) createKey(t *testing.T, project, name string, expires time.Time) (*keyv1.Key, string) {
	t.Helper()
	req := &keyv1.CreateKeyRequest{Project: project, Name: name, Description: "e2e key " + name}
	if !expires.IsZero() {
		req.ExpiresAt = timestamppb.New(expires)
	}
	res, err := s.keys.CreateKey(e2eCtx(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("CreateKey %s/%s: %v", project, name, err)
	}
	if res.Msg.GetSecret() == "" {
		t.Fatalf("CreateKey %s/%s: no secret", project, name)
	}
	return res.Msg.GetKey(), res.Msg.GetSecret()
}

// createDeployment creates a deployment of the demo model and waits until
// the gateway has applied it.
func (s *e2eStack) createDeployment(t *testing.T, project, name, upstream string, auth bool, keys ...string) *deploymentv1.Deployment {
	t.Helper()
	res, err := s.deps.CreateDeployment(e2eCtx(t), connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: project, Name: name, Model: demomodel.ModelID, UpstreamUrl: upstream, AuthEnabled: auth, ApiKeys: keys,
	}))
	if err != nil {
		t.Fatalf("CreateDeployment %s/%s: %v", project, name, err)
	}
	s.waitApplied(t, res.Msg.GetPropagation(), false)
	return res.Msg.GetDeployment()
}

// waitApplied waits until the gateway has applied the change p reports,
// so the next request sees it; with confirmed it also checks that the call
// itself promised so (SPEC §5: the one live gateway had applied it).
func (s *e2eStack) waitApplied(t *testing.T, p *propagationv1.Propagation, confirmed bool) {
	t.Helper()
	if p.GetSequence() == 0 {
		t.Fatalf("propagation without a sequence: %v", p)
	}
	if confirmed && (!p.GetConfirmed() || p.GetGateways() != 1 || p.GetGatewaysApplied() != 1) {
		t.Errorf("propagation = %v, want confirmed by the stack's one gateway", p)
	}
	if err := s.Gateway.WaitApplied(e2eCtx(t), p.GetSequence()); err != nil {
		t.Fatalf("gateway never applied sequence %d (at %d): %v", p.GetSequence(), s.Gateway.Applied(), err)
	}
}

// waitDeployed waits until the deployment is DEPLOYED (the status checker
// probes its upstream), then until the gateway has applied that status.
func (s *e2eStack) waitDeployed(t *testing.T, project, name string) *deploymentv1.Deployment {
	t.Helper()
	ctx := e2eCtx(t)
	var d *deploymentv1.Deployment
	for {
		res, err := s.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: name}))
		if err != nil {
			t.Fatalf("GetDeployment %s/%s: %v", project, name, err)
		}
		d = res.Msg.GetDeployment()
		if d.GetStatus() == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
			break
		}
		if d.GetStatus() == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED {
			t.Fatalf("deployment %s/%s FAILED: %s", project, name, d.GetStatusReason())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment %s/%s still %s: %v", project, name, d.GetStatus(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The status change is an event like any other: the audit service
	// gives its sequence, and the gateway says when it has applied it.
	res, err := s.audit.ListEvents(ctx, connect.NewRequest(&auditv1.ListEventsRequest{
		Project: project, Deployment: name, Types: []string{"DeploymentStatusChanged"},
	}))
	if err != nil {
		t.Fatalf("ListEvents: %v", err)
	}
	events := res.Msg.GetEvents()
	if len(events) == 0 {
		t.Fatalf("deployment %s/%s is DEPLOYED but the audit shows no DeploymentStatusChanged", project, name)
	}
	s.waitApplied(t, &propagationv1.Propagation{Sequence: events[len(events)-1].GetSequence()}, false)
	return d
}

// e2eRoute is how a request names its deployment at the gateway.
type e2eRoute int

const (
	e2eByHost e2eRoute = iota // Host: model-<deployment>.<project>.localhost:<port>
	e2eByPath                 // /d/<project>/<deployment>/…
)

func (r e2eRoute) String() string {
	if r == e2eByHost {
		return "host"
	}
	return "path"
}

// e2eRoutes are both routes, for tests that check each.
var e2eRoutes = []e2eRoute{e2eByHost, e2eByPath}

// hostName is the deployment's host name at this stack's gateway.
func (s *e2eStack) hostName(project, deployment string) string {
	_, port, _ := net.SplitHostPort(s.gwAddr)
	return "model-" + deployment + "." + project + ".localhost:" + port
}

// pathURL is the deployment's path-routing base URL.
func (s *e2eStack) pathURL(project, deployment string) string {
	return "http://" + s.gwAddr + "/d/" + project + "/" + deployment
}

// gatewayRequest builds a request for path under the deployment (such as
// /v1/chat/completions), sent to the gateway's address; no DNS is needed
// for Host routing.
func (s *e2eStack) gatewayRequest(t *testing.T, route e2eRoute, project, deployment, method, path, body string, header map[string]string) *http.Request {
	t.Helper()
	target := "http://" + s.gwAddr + path
	if route == e2eByPath {
		target = s.pathURL(project, deployment) + path
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e2eCtx(t), method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if route == e2eByHost {
		req.Host = s.hostName(project, deployment)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return req
}

// e2ePrompt is what every raw chat request asks.
const e2ePrompt = "Is the door open?"

var e2eChatBody = `{"model":"` + demomodel.ModelID + `","messages":[{"role":"user","content":"` + e2ePrompt + `"}]}`

// chat posts a chat completion to the deployment through the gateway.
func (s *e2eStack) chat(t *testing.T, route e2eRoute, project, deployment string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req := s.gatewayRequest(t, route, project, deployment, http.MethodPost, "/v1/chat/completions", e2eChatBody, header)
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s (Host %s): %v", req.URL, req.Host, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return res, body
}

// expectAnswer checks that the request got through to the demo model.
func (s *e2eStack) expectAnswer(t *testing.T, route e2eRoute, project, deployment string, header map[string]string) {
	t.Helper()
	res, body := s.chat(t, route, project, deployment, header)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("via %s with %s: status %d, want 200; body %s", route, e2eDescribe(header), res.StatusCode, body)
	}
	var c struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("via %s with %s: answer is not JSON: %v: %s", route, e2eDescribe(header), err, body)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != demomodel.Answer(e2ePrompt) || c.Model != demomodel.ModelID {
		t.Fatalf("via %s with %s: answer %s, not the demo model's", route, e2eDescribe(header), body)
	}
}

// expectRefused checks a 401 with code and the OpenAI-style body that
// tells nothing more.
func (s *e2eStack) expectRefused(t *testing.T, route e2eRoute, project, deployment string, header map[string]string, code string) {
	t.Helper()
	res, body := s.chat(t, route, project, deployment, header)
	e2eCheckError(t, fmt.Sprintf("via %s with %s", route, e2eDescribe(header)), res, body, http.StatusUnauthorized, code)
	for _, v := range header {
		if v != "" && bytes.Contains(body, []byte(v)) {
			t.Errorf("via %s with %s: the refusal echoes a header value: %s", route, e2eDescribe(header), body)
		}
	}
}

// e2eCheckError checks an OpenAI-style error answer:
// {"error": {"message", "type": "invalid_request_error", "code"}}.
func e2eCheckError(t *testing.T, what string, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("%s: body is not a JSON object: %v: %s", what, err, body)
	}
	if len(top) != 1 || top["error"] == nil {
		t.Errorf("%s: body %s, want exactly {\"error\": …}", what, body)
	}
	var e struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Code    *string `json:"code"`
	}
	if err := json.Unmarshal(top["error"], &e); err != nil {
		t.Fatalf("%s: error is not an object: %v: %s", what, err, body)
	}
	if e.Message == nil || *e.Message == "" || e.Type == nil || *e.Type != "invalid_request_error" || e.Code == nil || *e.Code != code {
		t.Errorf("%s: body %s, want a message, type invalid_request_error and code %s", what, body, code)
	}
}

// e2eDescribe names a request's credentials in test failures without
// printing a secret.
func e2eDescribe(header map[string]string) string {
	if len(header) == 0 {
		return "no key"
	}
	var parts []string
	for k, v := range header {
		parts = append(parts, k+": "+e2eRedact(v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// e2eRedact shortens a header value that may hold a secret.
func e2eRedact(v string) string {
	if len(v) > 12 {
		return v[:10] + "…"
	}
	return v
}

func e2eKey(secret string) map[string]string { return map[string]string{"X-API-Key": secret} }
func e2eBearer(secret string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + secret}
}
