package gateway_test

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// TestCredentialsNeverLeave sends every spelling of a credential header
// (issue 11) through both front ends to a recording upstream and checks,
// field by field, what the upstream received: no infergate key, in any
// header, whether the deployment's auth is on or off; everything else
// untouched.
func TestCredentialsNeverLeave(t *testing.T) { eachFront(t, testCredentialsNeverLeave) }

func testCredentialsNeverLeave(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	bravo, _ := b.key("bravo", nil) // known, not linked
	b.deployment("open", up.URL, false, nil)
	seq := b.deployment("closed", up.URL, true, []string{"alpha"})
	g, srv := startGatewayOn(t, b, front, gateway.Config{})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	type field struct {
		name, value string
		kept        bool // should reach the upstream
	}
	for _, tc := range []struct {
		name   string
		dep    string
		fields []field
		status int
	}{
		{"X-API-Key", "open", []field{{"X-API-Key", alpha, false}}, 200},
		{"X_API_KEY", "open", []field{{"X_API_KEY", alpha, false}}, 200},
		{"x-api_key", "open", []field{{"x-api_key", alpha, false}}, 200},
		{"x_Api-KEY", "open", []field{{"x_Api-KEY", bravo, false}}, 200},
		{"XAPIKEY", "open", []field{{"XAPIKEY", alpha, false}}, 200},
		{"x-api-key not a key", "open", []field{{"x-api-key", "junk", false}}, 200},
		{"X__API--KEY empty", "open", []field{{"X__API--KEY", "", false}}, 200},
		{"Bearer key", "open", []field{{"Authorization", "Bearer " + alpha, false}}, 200},
		{"bearer lower case", "open", []field{{"Authorization", "bearer " + alpha, false}}, 200},
		{"Bearer<TAB>key", "open", []field{{"Authorization", "Bearer\t" + alpha, false}}, 200},
		{"Bearer, two spaces", "open", []field{{"Authorization", "Bearer  " + alpha, false}}, 200},
		{"Basic key", "open", []field{{"Authorization", "Basic " + alpha, false}}, 200},
		{"no scheme", "open", []field{{"Authorization", alpha, false}}, 200},
		{"Token key=", "open", []field{{"Authorization", `Token key="` + alpha + `"`, false}}, 200},
		{"Basic base64 key as user", "open", []field{{"Authorization", basic(alpha, ""), false}}, 200},
		{"Basic base64 key as password", "open", []field{{"Authorization", basic("user", alpha), false}}, 200},
		{"authorization lower-case name", "open", []field{{"authorization", "Bearer " + bravo, false}}, 200},
		{"key in another header", "open", []field{{"X-Upstream-Token", "prefix " + alpha, false}}, 200},
		{"upstream's own bearer kept", "open", []field{{"Authorization", "Bearer sk-upstream-token", true}}, 200},
		{"upstream's own basic kept", "open", []field{{"Authorization", basic("user", "pass"), true}}, 200},
		{"malformed ig_ token kept", "open", []field{{"Authorization", "Bearer ig_not-a-key", true}}, 200},
		{"a similar name kept", "open", []field{{"X-Api-Keys", "x", true}, {"Api-Key", "y", true}}, 200},
		{"second Authorization with the key", "open", []field{
			{"Authorization", "Bearer sk-upstream-token", true}, {"Authorization", "Bearer " + bravo, false}}, 200},
		{"linked X-API-Key and X_API_KEY", "closed", []field{{"X-API-Key", alpha, false}, {"X_API_KEY", bravo, false}}, 200},
		{"linked bearer", "closed", []field{{"Authorization", "Bearer " + alpha, false}, {"X-Other", "v", true}}, 200},
		{"linked key with the upstream's token", "closed", []field{
			{"X-API-Key", alpha, false}, {"Authorization", "Bearer sk-upstream-token", true}}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"demo"}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host(tc.dep)
			for _, f := range tc.fields {
				// As written: not canonicalised by Header.Add.
				req.Header[f.name] = append(req.Header[f.name], f.value)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			got := up.last(t).header
			for _, f := range tc.fields {
				arrived := false
				for name, values := range got {
					if strings.EqualFold(name, f.name) {
						for _, v := range values {
							arrived = arrived || v == f.value
						}
					}
				}
				if arrived != f.kept {
					t.Errorf("%s: %q reached the upstream: %v, want %v", f.name, f.value, arrived, f.kept)
				}
			}
			for name, values := range got {
				for _, v := range values {
					if strings.Contains(v, alpha) || strings.Contains(v, bravo) {
						t.Errorf("the upstream got a key in %s", name)
					}
				}
			}
		})
	}

	t.Run("keys in the query", func(t *testing.T) {
		for _, tc := range []struct {
			dep, query, want string
			hdr              []string
			status           int
		}{
			{"open", "api_key=" + alpha + "&stream=true", "stream=true", nil, 200},
			{"open", "a=1&key=ig%5F" + bravo[3:], "a=1", nil, 200},
			{"open", "token=" + bravo, "", nil, 200},
			{"open", "a=1&b=%20c", "a=1&b=%20c", nil, 200},
			{"closed", "api_key=" + alpha + "&a=1", "a=1", []string{"X-API-Key", alpha}, 200},
			// The query does not authenticate.
			{"closed", "api_key=" + alpha, "", nil, 401},
		} {
			up.mu.Lock()
			before := len(up.reqs)
			up.mu.Unlock()
			a := get(t, srv, host(tc.dep), "/v1/chat/completions?"+tc.query, tc.hdr...)
			if a.status != tc.status {
				t.Errorf("%s ?%s: status %d, want %d", tc.dep, tc.query, a.status, tc.status)
				continue
			}
			up.mu.Lock()
			reqs := up.reqs[before:]
			up.mu.Unlock()
			if tc.status != 200 {
				if len(reqs) != 0 {
					t.Errorf("%s ?%s: refused, yet the upstream got it", tc.dep, tc.query)
				}
				continue
			}
			if len(reqs) != 1 || reqs[0].query != tc.want {
				t.Errorf("%s ?%s: the upstream got %+v, want the query %q", tc.dep, tc.query, reqs, tc.want)
			}
		}
	})

	t.Run("a key in Basic does not authenticate", func(t *testing.T) {
		a := get(t, srv, host("closed"), "/v1/models", "Authorization", "Basic "+alpha)
		if a.status != 401 || a.code != "missing_api_key" {
			t.Errorf("%d %q, want 401 missing_api_key", a.status, a.code)
		}
	})

	t.Run("';' and '\\' dot segments are invalid_path", func(t *testing.T) {
		up.mu.Lock()
		before := len(up.reqs)
		up.mu.Unlock()
		for _, tc := range []struct{ host, path string }{
			{host("open"), "/v1/..;/admin"},
			{host("open"), "/..;/"},
			{host("open"), "/v1/.;/models"},
			{host("open"), "/v1/..;x=1/admin"},
			{host("closed"), "/v1/..;/admin"},
			{"", "/d/team-a/open/..;/admin"},
			{"", "/d/team-a/open/v1/%2e%2e;/admin"},
			{"", "/d/team-a/open/v1/%2E.%3b/admin"},
			{host("open"), "/v1/%2e;/models"},
			{host("open"), "/v1/..%5cadmin"},
		} {
			a := get(t, srv, tc.host, tc.path, "X-API-Key", alpha)
			if a.status != 400 || a.code != "invalid_path" {
				t.Errorf("%s %s: %d %q, want 400 invalid_path (%s)", tc.host, tc.path, a.status, a.code, a.body)
			}
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if len(up.reqs) != before {
			t.Errorf("the upstream got %d requests with dot segments", len(up.reqs)-before)
		}
	})
}

// TestUpstreamPolicy runs a gateway with the default upstream policy:
// deployments whose upstreams are on loopback — by address, by a name that
// resolves there when dialled (what DNS rebinding does to a name that
// passed the control plane's check), over https through http.Transport —
// get 502 and a log line that says why, and the upstream sees no
// connection.
func TestUpstreamPolicy(t *testing.T) { eachFront(t, testUpstreamPolicy) }

func testUpstreamPolicy(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			t.Errorf("the upstream got a connection from %s", front.name)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	tlsUp := httptest.NewUnstartedServer(up.Config.Handler)
	tlsUp.Config.ConnState = up.Config.ConnState
	tlsUp.StartTLS()
	t.Cleanup(tlsUp.Close)

	alpha, _ := b.key("alpha", nil)
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	b.deployment("by-address", up.URL, false, nil)
	b.deployment("by-name", "http://localhost:"+port, true, []string{"alpha"})
	seq := b.deployment("over-https", tlsUp.URL, false, nil)

	var logs syncBuffer
	g, srv := startGatewayOn(t, b, front, gateway.Config{
		Upstreams: upstreampolicy.MustParse(""), // the default policy
		Log:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	for _, dep := range []string{"by-address", "by-name", "over-https"} {
		a := get(t, srv, host(dep), "/v1/models", "X-API-Key", alpha)
		if a.status != http.StatusBadGateway || a.code != "upstream_unavailable" {
			t.Errorf("%s: %d %q, want 502 upstream_unavailable", dep, a.status, a.code)
		}
		if !strings.Contains(logs.String(), "deployment="+dep) {
			t.Errorf("%s: no log line names the deployment", dep)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "upstream address refused by the upstream policy"); n != 3 {
		t.Errorf("%d refusals logged, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "a loopback address") {
		t.Errorf("the log does not say which rule refused:\n%s", out)
	}
	if strings.Contains(out, alpha) {
		t.Error("a key was logged")
	}
}

// syncBuffer is a log destination that tests read while the gateway
// writes.
type syncBuffer struct {
	mu  sync.Mutex // mu protects buf
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
