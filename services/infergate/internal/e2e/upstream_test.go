package e2e_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// e2eRecorder is an upstream that answers like the demo model and keeps
// the request headers it saw, by the test's request id.
type e2eRecorder struct {
	mu   sync.Mutex // mu protects seen
	seen map[string]e2eSeen
}

type e2eSeen struct {
	host   string
	header http.Header
}

// e2eRequestID marks a test request so the recorder can tell it apart
// from the status checker's probes.
const e2eRequestID = "X-E2e-Request-Id"

func e2eRecordingUpstream(t *testing.T) (*e2eRecorder, string) {
	t.Helper()
	rec := &e2eRecorder{seen: map[string]e2eSeen{}}
	demo := (&demomodel.Server{}).Handler("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get(e2eRequestID); id != "" {
			rec.mu.Lock()
			rec.seen[id] = e2eSeen{host: r.Host, header: r.Header.Clone()}
			rec.mu.Unlock()
		}
		demo.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

func (r *e2eRecorder) get(t *testing.T, id string) e2eSeen {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.seen[id]
	if !ok {
		t.Fatalf("the upstream never saw request %s", id)
	}
	return s
}

// TestUpstreamNeverSeesTheKey points a deployment at a recording upstream
// and checks what reached it: never the key, whether it came as X-API-Key
// or as the SDK's Bearer api_key, and the X-Forwarded-* headers a proxy
// owes its upstream.
func TestUpstreamNeverSeesTheKey(t *testing.T) {
	t.Parallel()
	s := e2eStart(t, t.TempDir())
	rec, upstream := e2eRecordingUpstream(t)
	const project, dep = "recorded", "spy"
	_, secret := s.createKey(t, project, "spy-key", time.Time{})
	s.createDeployment(t, project, dep, upstream, true, "spy-key")
	s.waitDeployed(t, project, dep)
	upstreamHost := strings.TrimPrefix(upstream, "http://")

	cases := []struct {
		id     string
		route  e2eRoute
		header map[string]string
		// authorization is the Authorization the upstream must see: only
		// one that is not an infergate key goes through.
		authorization string
	}{
		{id: "x-api-key-host", route: e2eByHost, header: e2eKey(secret)},
		{id: "x-api-key-path", route: e2eByPath, header: e2eKey(secret)},
		{id: "bearer-host", route: e2eByHost, header: e2eBearer(secret)},
		{id: "bearer-path", route: e2eByPath, header: e2eBearer(secret)},
		{
			id: "x-api-key-and-dummy-bearer", route: e2eByPath,
			header:        map[string]string{"X-API-Key": secret, "Authorization": "Bearer sk-dummy"},
			authorization: "Bearer sk-dummy",
		},
	}
	for _, c := range cases {
		c.header[e2eRequestID] = c.id
		s.expectAnswer(t, c.route, project, dep, c.header)
		seen := rec.get(t, c.id)
		e2eCheckUpstreamHeaders(t, c.id, seen, secret)
		if got := seen.header.Get("Authorization"); got != c.authorization {
			t.Errorf("%s: upstream saw Authorization %q, want %q", c.id, e2eRedact(got), c.authorization)
		}
		wantFwdHost := s.gwAddr
		if c.route == e2eByHost {
			wantFwdHost = s.hostName(project, dep)
		}
		if got := seen.header.Get("X-Forwarded-Host"); got != wantFwdHost {
			t.Errorf("%s: X-Forwarded-Host %q, want %q", c.id, got, wantFwdHost)
		}
		if seen.host != upstreamHost {
			t.Errorf("%s: upstream saw Host %q, want its own %q", c.id, seen.host, upstreamHost)
		}
	}

	// With auth off the key is not needed, and still never forwarded.
	off, err := s.deps.UpdateDeploymentAuth(e2eCtx(t), connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
		Project: project, Name: dep, AuthEnabled: false,
	}))
	if err != nil {
		t.Fatalf("UpdateDeploymentAuth: %v", err)
	}
	s.waitApplied(t, off.Msg.GetPropagation(), true)
	for _, c := range []struct {
		id     string
		header map[string]string
	}{
		{"auth-off-x-api-key", e2eKey(secret)},
		{"auth-off-bearer", e2eBearer(secret)},
	} {
		c.header[e2eRequestID] = c.id
		s.expectAnswer(t, e2eByHost, project, dep, c.header)
		seen := rec.get(t, c.id)
		e2eCheckUpstreamHeaders(t, c.id, seen, secret)
		if got := seen.header.Get("Authorization"); got != "" {
			t.Errorf("%s: upstream saw an Authorization header carrying the key", c.id)
		}
	}
}

// e2eCheckUpstreamHeaders checks that no header the upstream saw carries
// the key, and that it was told who asked.
func e2eCheckUpstreamHeaders(t *testing.T, id string, seen e2eSeen, secret string) {
	t.Helper()
	if _, ok := seen.header["X-Api-Key"]; ok {
		t.Errorf("%s: upstream saw an X-API-Key header", id)
	}
	for name, values := range seen.header {
		for _, v := range values {
			if strings.Contains(v, secret) {
				t.Errorf("%s: upstream saw the key in header %s", id, name)
			}
		}
	}
	if ip := net.ParseIP(seen.header.Get("X-Forwarded-For")); ip == nil || !ip.IsLoopback() {
		t.Errorf("%s: X-Forwarded-For %q, want the client's loopback address", id, seen.header.Get("X-Forwarded-For"))
	}
	if got := seen.header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("%s: X-Forwarded-Proto %q, want http", id, got)
	}
}
