package e2e_test

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// TestDemoOnlyThroughGateway: `infergate dev --demo`'s demo model answers
// the gateway, with the demo key, and nobody else: not the control-plane
// port (where it used to live), not its own port. A restart makes a new
// demo model and key; the demo deployment follows it and keeps the keys
// the user linked.
func TestDemoOnlyThroughGateway(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	withDemo := func(c *devstack.Config) { c.Demo = true }
	const project, dep = devstack.DemoProject, devstack.DemoDeployment

	first := e2eStart(t, dataDir, withDemo)
	if first.Demo == nil || first.DemoModelAddr == "" {
		t.Fatalf("no demo: %+v, demo model at %q", first.Demo, first.DemoModelAddr)
	}
	for _, route := range e2eRoutes {
		first.expectAnswer(t, route, project, dep, e2eKey(first.Demo.Secret))
		first.expectRefused(t, route, project, dep, nil, "missing_api_key")
	}
	e2eNoDemoOnControlPlane(t, first)
	e2eDemoRefusesDirect(t, first)

	_, mine := first.createKey(t, project, "my-own-key", time.Time{})
	link, err := first.deps.LinkKey(e2eCtx(t), connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: project, Deployment: dep, Key: "my-own-key"}))
	if err != nil {
		t.Fatalf("LinkKey: %v", err)
	}
	first.waitApplied(t, link.Msg.GetPropagation(), true)
	first.stop()

	second := e2eStart(t, dataDir, withDemo)
	for _, route := range e2eRoutes {
		second.expectAnswer(t, route, project, dep, e2eKey(second.Demo.Secret))
		second.expectAnswer(t, route, project, dep, e2eKey(mine))
		second.expectRefused(t, route, project, dep, e2eKey(first.Demo.Secret), "invalid_api_key")
	}
	e2eDemoRefusesDirect(t, second)
}

// e2eNoDemoOnControlPlane: the control-plane port's old demo path is not
// found, even for an admin, and needs a token before that.
func e2eNoDemoOnControlPlane(t *testing.T, s *e2eStack) {
	t.Helper()
	for _, token := range []string{"", s.Token} {
		for _, path := range []string{"/demo-model/v1/models", "/demo-model/health"} {
			req, err := http.NewRequestWithContext(e2eCtx(t), http.MethodGet, s.APIURL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := http.StatusUnauthorized
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
				want = http.StatusNotFound
			}
			res, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want || res.Header.Get(demomodel.Header) != "" {
				t.Errorf("GET %s on the control plane (admin token %t): HTTP %d, demo header %q; want %d",
					path, token != "", res.StatusCode, res.Header.Get(demomodel.Header), want)
			}
		}
	}
}

// e2eDemoRefusesDirect: the demo model's own port refuses whatever does
// not come through the gateway, a valid demo key included.
func e2eDemoRefusesDirect(t *testing.T, s *e2eStack) {
	t.Helper()
	guess := make([]byte, 32)
	_, _ = rand.Read(guess)
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/models"},
		{http.MethodPost, "/v1/chat/completions"},
		{http.MethodGet, "/health"},
		{http.MethodGet, "/demo-model/v1/models"},
		{http.MethodGet, "/" + base64.RawURLEncoding.EncodeToString(guess) + "/v1/models"},
	} {
		req, err := http.NewRequestWithContext(e2eCtx(t), c.method, "http://"+s.DemoModelAddr+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", s.Demo.Secret)
		res, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || res.Header.Get(demomodel.Header) != "" {
			t.Errorf("%s %s on the demo model's own port: HTTP %d, demo header %q, body %q; want 403",
				c.method, c.path, res.StatusCode, res.Header.Get(demomodel.Header), body)
		}
	}
}
