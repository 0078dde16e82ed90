package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
)

func host(dep string) string { return "model-" + dep + "." + project + ".localhost:8000" }

// TestAuthAndRouting asserts every answer a client can get, over real
// HTTP, through both kinds of routing.
func TestAuthAndRouting(t *testing.T) { eachFront(t, testAuthAndRouting) }

func testAuthAndRouting(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	expiry := time.Now().Add(time.Hour)
	alpha, _ := b.key("alpha", nil)
	bravo, _ := b.key("bravo", nil)
	expiring, _ := b.key("expiring", &expiry)
	deleted, _ := b.key("deleted", nil)
	b.deployment("chat", up.URL+"/base", true, []string{"alpha", "expiring", "deleted"})
	b.deleteKey("deleted")
	b.deployment("open", up.URL, false, nil)
	b.dep("warming", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Create(m, aggregate.NewDeployment{Name: "warming", Model: "demo", UpstreamURL: up.URL}, b.live)
	})
	// Port 1 on loopback: nothing listens there. (A closed httptest
	// server's port can be taken by a parallel test's server.)
	seq := b.deployment("down", "http://127.0.0.1:1", false, nil)

	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	g, srv := startGatewayOn(t, b, front, gateway.Config{Now: func() time.Time { return *now.Load() }})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	other, _ := b.key("other", nil) // well-formed, known, never linked
	garbage := alpha[:len(alpha)-1] + "x"
	if garbage == alpha {
		garbage = alpha[:len(alpha)-1] + "y"
	}
	for _, via := range []struct {
		name string
		req  func(dep, path string, hdr ...string) answer
	}{
		{"host", func(dep, path string, hdr ...string) answer { return get(t, srv, host(dep), path, hdr...) }},
		{"path", func(dep, path string, hdr ...string) answer {
			return get(t, srv, "", "/d/"+project+"/"+dep+path, hdr...)
		}},
	} {
		t.Run(via.name, func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				dep    string
				hdr    []string
				status int
				code   string
			}{
				{"no key", "chat", nil, 401, "missing_api_key"},
				{"an SDK's dummy bearer only", "chat", []string{"Authorization", "Bearer sk-dummy"}, 401, "missing_api_key"},
				{"malformed key", "chat", []string{"X-API-Key", "sk-not-ours"}, 401, "invalid_api_key"},
				{"bad checksum", "chat", []string{"X-API-Key", garbage}, 401, "invalid_api_key"},
				{"unknown key", "chat", []string{"X-API-Key", other}, 401, "invalid_api_key"},
				{"key not linked", "chat", []string{"X-API-Key", bravo}, 401, "invalid_api_key"},
				{"deleted key", "chat", []string{"X-API-Key", deleted}, 401, "invalid_api_key"},
				{"linked key", "chat", []string{"X-API-Key", alpha}, 200, ""},
				{"linked key as bearer", "chat", []string{"Authorization", "Bearer " + alpha}, 200, ""},
				{"X-API-Key wins over bearer", "chat", []string{"X-API-Key", bravo, "Authorization", "Bearer " + alpha}, 401, "invalid_api_key"},
				{"auth disabled", "open", nil, 200, ""},
				{"auth disabled, junk key", "open", []string{"X-API-Key", "junk"}, 200, ""},
				{"unknown deployment", "nope", []string{"X-API-Key", alpha}, 404, "deployment_not_found"},
				{"not deployed yet", "warming", nil, 503, "deployment_not_ready"},
				{"upstream down", "down", nil, 502, "upstream_unavailable"},
			} {
				a := via.req(tc.dep, "/v1/chat/completions", tc.hdr...)
				if a.status != tc.status || a.code != tc.code {
					t.Errorf("%s: %d %q, want %d %q (%s)", tc.name, a.status, a.code, tc.status, tc.code, a.body)
				}
				if tc.status == 401 && (a.typ != "invalid_request_error" || a.header.Get("Content-Type") != "application/json") {
					t.Errorf("%s: type %q content-type %q", tc.name, a.typ, a.header.Get("Content-Type"))
				}
				if strings.Contains(a.body, alpha) || strings.Contains(a.body, bravo) {
					t.Errorf("%s: the body echoes a key", tc.name)
				}
			}
		})
	}

	t.Run("what the upstream sees", func(t *testing.T) {
		a := get(t, srv, host("chat"), "/v1/chat/completions?stream=false", "X-API-Key", alpha, "Authorization", "Bearer sk-dummy")
		if a.status != 200 || a.body != `{"ok":true}` {
			t.Fatalf("%d %s", a.status, a.body)
		}
		r := up.last(t)
		if r.path != "/base/v1/chat/completions" || r.query != "stream=false" {
			t.Errorf("upstream path %s?%s", r.path, r.query)
		}
		if v := r.header.Get("X-Api-Key"); v != "" {
			t.Errorf("upstream got X-API-Key %q", v)
		}
		// An Authorization that is not ours is the client's business.
		if v := r.header.Get("Authorization"); v != "Bearer sk-dummy" {
			t.Errorf("upstream Authorization %q", v)
		}
		if r.header.Get("X-Forwarded-For") == "" || r.header.Get("X-Forwarded-Host") != host("chat") || r.header.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("X-Forwarded-*: %v", r.header)
		}
		if r.host != strings.TrimPrefix(up.URL, "http://") {
			t.Errorf("upstream Host %q", r.host)
		}

		get(t, srv, "", "/d/team-a/chat/v1/models", "Authorization", "Bearer "+alpha)
		if r := up.last(t); r.header.Get("Authorization") != "" || r.path != "/base/v1/models" {
			t.Errorf("bearer key: upstream got Authorization %q at %s", r.header.Get("Authorization"), r.path)
		}
		// A key in a second Authorization field (the decision reads the
		// first) does not go upstream either; the field without one does.
		get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha, "Authorization", "Bearer sk-dummy", "Authorization", "Bearer "+bravo)
		if r := up.last(t); strings.Join(r.header.Values("Authorization"), ",") != "Bearer sk-dummy" {
			t.Errorf("second Authorization: upstream got %q", r.header.Values("Authorization"))
		}
		// Even where auth is off, no key of ours goes upstream.
		get(t, srv, host("open"), "/v1/models", "X-API-Key", alpha, "Authorization", "Bearer "+bravo)
		if r := up.last(t); r.header.Get("X-Api-Key") != "" || r.header.Get("Authorization") != "" {
			t.Errorf("auth off: upstream got %v", r.header)
		}
	})

	t.Run("dot-segments are refused, not sent upstream", func(t *testing.T) {
		up.mu.Lock()
		before := len(up.reqs)
		up.mu.Unlock()
		for _, tc := range []struct{ host, path string }{
			{host("chat"), "/v1/../admin"},
			{host("chat"), "/.."},
			{host("open"), "/./v1/models"},
			{"", "/d/team-a/chat/../admin"},
			{"", "/d/team-a/open/v1/%2e%2e/%2E%2E/admin"},
		} {
			a := get(t, srv, tc.host, tc.path, "X-API-Key", alpha)
			if a.status != 400 || a.code != "invalid_path" || a.typ != "invalid_request_error" {
				t.Errorf("%s %s: %d %q, want 400 invalid_path (%s)", tc.host, tc.path, a.status, a.code, a.body)
			}
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if len(up.reqs) != before {
			t.Errorf("the upstream got %d requests with dot-segments", len(up.reqs)-before)
		}
	})

	t.Run("hosts", func(t *testing.T) {
		for _, tc := range []struct {
			host   string
			status int
		}{
			{"MODEL-CHAT.TEAM-A.LOCALHOST", 200},
			{"model-chat.team-a.localhost:1234", 200},
			{"model-chat.team-a.example.com", 404},
			{"model-chat.team-b.localhost", 404},
		} {
			if a := get(t, srv, tc.host, "/v1/models", "X-API-Key", alpha); a.status != tc.status {
				t.Errorf("%s: %d, want %d (%s)", tc.host, a.status, tc.status, a.body)
			}
		}
		// A deployment's own /healthz is the deployment's.
		before := len(up.reqs)
		get(t, srv, host("chat"), "/healthz", "X-API-Key", alpha)
		if up.mu.Lock(); len(up.reqs) != before+1 {
			t.Error("/healthz on a model host did not reach the upstream")
		}
		up.mu.Unlock()
	})

	t.Run("expiry by the gateway's clock", func(t *testing.T) {
		if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", expiring); a.status != 200 {
			t.Fatalf("before expiry: %d %s", a.status, a.body)
		}
		later := expiry.Add(time.Second)
		now.Store(&later)
		// The clock jumped past the staleness bound too: the next poll of
		// the stream brings the gateway in step at the new time.
		eventually(t, "in step at the new time", func() bool { _, st := readyz(t, srv); return !st.RefusingStale })
		if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", expiring); a.status != 401 || a.code != "invalid_api_key" {
			t.Fatalf("after expiry: %d %s", a.status, a.body)
		}
	})
}

// TestChangesApplyFromTheNextRequest changes links, auth and keys and
// checks the very next request once the gateway has applied the change.
func TestChangesApplyFromTheNextRequest(t *testing.T) {
	eachFront(t, testChangesApplyFromTheNextRequest)
}

func testChangesApplyFromTheNextRequest(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	bravo, _ := b.key("bravo", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"})
	g, srv := startGatewayOn(t, b, front, gateway.Config{})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	status := func(key string) int { return get(t, srv, host("chat"), "/v1/models", "X-API-Key", key).status }
	auth := func(on bool) func(aggregate.Deployment, aggregate.Meta) ([]*eventv1.Event, error) {
		return func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
			return d.UpdateAuth(m, on, keysOf(d, b.live), b.live)
		}
	}
	var charlie string
	for _, step := range []struct {
		name   string
		change func() uint64
		want   map[*string]int
	}{
		{"start", func() uint64 { return seq }, map[*string]int{&alpha: 200, &bravo: 401}},
		{"link bravo", func() uint64 {
			return b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
				return d.Link(m, "bravo", b.live)
			})
		}, map[*string]int{&alpha: 200, &bravo: 200}},
		{"unlink alpha", func() uint64 {
			return b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
				return d.Unlink(m, "alpha", b.live)
			})
		}, map[*string]int{&alpha: 401, &bravo: 200}},
		{"auth off", func() uint64 { return b.dep("chat", auth(false)) }, map[*string]int{&alpha: 200, &bravo: 200}},
		{"auth on", func() uint64 { return b.dep("chat", auth(true)) }, map[*string]int{&alpha: 401, &bravo: 200}},
		{"delete bravo", func() uint64 { return b.deleteKey("bravo") }, map[*string]int{&alpha: 401, &bravo: 401}},
		{"bravo again, new secret: not linked", func() uint64 {
			var s uint64
			charlie, s = b.key("bravo", nil)
			return s
		}, map[*string]int{&bravo: 401, &charlie: 401}},
		{"link the new bravo", func() uint64 {
			return b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
				return d.Link(m, "bravo", b.live)
			})
		}, map[*string]int{&bravo: 401, &charlie: 200}},
	} {
		waitApplied(t, g, step.change())
		for key, want := range step.want {
			if got := status(*key); got != want {
				t.Errorf("%s: %d, want %d", step.name, got, want)
			}
		}
	}
}

func keysOf(d aggregate.Deployment, live aggregate.LiveKeys) []string {
	var out []string
	for name := range d.EffectiveLinks(live) {
		out = append(out, name)
	}
	return out
}

func TestRegions(t *testing.T) { eachFront(t, testRegions) }

func testRegions(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	b.deployment("eu-only", up.URL, false, nil, "eu-west")
	b.deployment("us-only", up.URL, false, nil, "us-east")
	b.deployment("both", up.URL, false, nil, "eu-west", "us-east")
	seq := b.deployment("everywhere", up.URL, false, nil)
	g, srv := startGatewayOn(t, b, front, gateway.Config{Region: "eu-west"})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	for dep, want := range map[string]int{"eu-only": 200, "us-only": 404, "both": 200, "everywhere": 200} {
		if a := get(t, srv, host(dep), "/v1/models"); a.status != want {
			t.Errorf("%s: %d, want %d", dep, a.status, want)
		}
		if a := get(t, srv, "", "/d/"+project+"/"+dep+"/v1/models"); a.status != want {
			t.Errorf("%s by path: %d, want %d", dep, a.status, want)
		}
	}
}

func TestStreaming(t *testing.T) { eachFront(t, testStreaming) }

func testStreaming(t *testing.T, front frontEnd) {
	b := newBackend(t)
	step := make(chan struct{})
	gotFirst := make(chan struct{})
	started, canceled := make(chan struct{}), make(chan struct{})
	var newConns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				if i < 2 {
					select {
					case <-step:
					case <-time.After(10 * time.Second):
						return
					}
				}
			}
		case "/upload":
			buf := make([]byte, 6)
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			close(gotFirst)
			rest, _ := io.ReadAll(r.Body)
			_, _ = w.Write(append(buf, rest...))
		case "/hang":
			close(started)
			<-r.Context().Done()
			close(canceled)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	seq := b.deployment("chat", up.URL, false, nil)
	g, srv := startGatewayOn(t, b, front, gateway.Config{})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("SSE chunks arrive as the upstream sends them", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/d/"+project+"/chat/sse", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for i := range 3 {
			// The upstream sends chunk i+1 only after this read.
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: %d\n", i) {
				t.Fatalf("chunk %d: %q %v", i, line, err)
			}
			_, _ = br.ReadString('\n')
			if i < 2 {
				step <- struct{}{}
			}
		}
	})

	t.Run("request bodies stream", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/d/"+project+"/chat/upload", pr)
		type result struct {
			body string
			err  error
		}
		res := make(chan result, 1)
		go func() {
			resp, err := srv.Client().Do(req)
			if err != nil {
				res <- result{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			res <- result{string(body), err}
		}()
		_, _ = pw.Write([]byte("hello "))
		select {
		case <-gotFirst: // the upstream read the first part before the rest was sent
		case <-ctx.Done():
			t.Fatal("the upstream did not get the first part of the body")
		}
		_, _ = pw.Write([]byte("world"))
		_ = pw.Close()
		if r := <-res; r.err != nil || r.body != "hello world" {
			t.Fatalf("%q %v", r.body, r.err)
		}
	})

	t.Run("a client going away cancels the upstream request", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(cctx, "GET", srv.URL+"/d/"+project+"/chat/hang", nil)
		go func() {
			if resp, err := srv.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		<-started
		ccancel()
		select {
		case <-canceled:
		case <-ctx.Done():
			t.Fatal("the upstream request was not canceled")
		}
	})

	t.Run("connections to the upstream are reused", func(t *testing.T) {
		get(t, srv, host("chat"), "/v1/models") // after the canceled request's connection is gone
		before := newConns.Load()
		for range 50 {
			if a := get(t, srv, host("chat"), "/v1/models"); a.status != 200 {
				t.Fatalf("%d %s", a.status, a.body)
			}
		}
		// One more connection may open while the canceled request's is
		// being torn down; without reuse there would be ~50.
		if n := newConns.Load() - before; n > 2 {
			t.Errorf("%d new upstream connections for 50 sequential requests", n)
		}
	})
}

func readyz(t *testing.T, srv *httptest.Server) (int, gateway.Status) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, st
}

func metricsText(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func TestOwnEndpoints(t *testing.T) { eachFront(t, testOwnEndpoints) }

func testOwnEndpoints(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"})
	g, srv := startGatewayOn(t, b, front, gateway.Config{Region: "eu-west", ID: "gw-test"})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	resp, err := srv.Client().Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	code, st := readyz(t, srv)
	if code != 200 || !st.Ready || st.AppliedSequence < seq || st.ID != "gw-test" || st.Region != "eu-west" {
		t.Errorf("/readyz: %d %+v", code, st)
	}
	eventually(t, "connected and fresh", func() bool { _, st := readyz(t, srv); return st.NATSConnected && !st.Stale })
	if a := get(t, srv, "", "/nothing-here"); a.status != 404 || a.code != "deployment_not_found" {
		t.Errorf("unknown path: %d %s", a.status, a.body)
	}
	get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha)
	get(t, srv, host("chat"), "/v1/models")
	m := metricsText(t, srv)
	for _, want := range []string{
		`infergate_gateway_decisions_total{result="allowed"} 1`,
		`infergate_gateway_decisions_total{result="missing_api_key"} 1`,
		`infergate_gateway_decisions_total{result="deployment_not_found"} 0`,
		"infergate_gateway_upstream_response_seconds_count 1",
		fmt.Sprintf("infergate_gateway_applied_sequence %d", g.Applied()),
		"infergate_gateway_lag_events 0",
		"infergate_gateway_nats_connected 1",
		"infergate_gateway_ready 1",
		"infergate_gateway_stale 0",
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if front.fast && runtime.GOOS == "linux" {
		// The event loops' gauges (nothing streams here).
		for _, want := range []string{"infergate_gateway_streams_parked 0", "infergate_gateway_streams_parked_total 0"} {
			if !strings.Contains(m, want+"\n") {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	}
	if strings.Contains(m, alpha) {
		t.Error("/metrics shows a key")
	}
}

// TestNATSOutage: with NATS gone the gateway serves from its map and says
// it is stale; when NATS is back it catches up.
func TestNATSOutage(t *testing.T) { eachFront(t, testNATSOutage) }

func testNATSOutage(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"})
	g, srv := startGatewayOn(t, b, front, gateway.Config{NATS: b.nc})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	b.srv.Shutdown()
	eventually(t, "NATS reported down", func() bool {
		code, st := readyz(t, srv)
		return code == 200 && !st.NATSConnected && st.Stale
	})
	if m := metricsText(t, srv); !strings.Contains(m, "infergate_gateway_nats_connected 0\n") || !strings.Contains(m, "infergate_gateway_stale 1\n") {
		t.Error("/metrics does not report NATS down")
	}
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 200 {
		t.Fatalf("while NATS is down: %d %s", a.status, a.body)
	}

	b.start()
	eventually(t, "client reconnected", b.nc.IsConnected)
	unlinked := b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "alpha", b.live)
	})
	waitApplied(t, g, unlinked)
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 401 {
		t.Fatalf("after catching up: %d %s", a.status, a.body)
	}
	eventually(t, "fresh again", func() bool { _, st := readyz(t, srv); return st.NATSConnected && !st.Stale && st.Lag == 0 })
}

// TestStartWhileNATSDown: a gateway that cannot read the stream is not
// ready and serves no deployment, rather than serve an empty map.
func TestStartWhileNATSDown(t *testing.T) { eachFront(t, testStartWhileNATSDown) }

func testStartWhileNATSDown(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"})
	b.srv.Shutdown()
	eventually(t, "client disconnected", func() bool { return !b.nc.IsConnected() })

	g, srv := startGatewayOn(t, b, front, gateway.Config{NATS: b.nc})
	eventually(t, "a failed read of the stream", func() bool { _, st := readyz(t, srv); return st.Error != "" })
	if code, st := readyz(t, srv); code != 503 || st.Ready || g.Ready() {
		t.Errorf("/readyz with NATS down: %d %+v", code, st)
	}
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 503 || a.code != "gateway_not_ready" {
		t.Errorf("request with NATS down: %d %s", a.status, a.body)
	}

	b.start()
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	if code, _ := readyz(t, srv); code != 200 {
		t.Errorf("/readyz after NATS came back: %d", code)
	}
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 200 {
		t.Errorf("after NATS came back: %d %s", a.status, a.body)
	}
}

// TestH2C: HTTP/2 with prior knowledge (h2c) reaches deployments and the
// gateway's own endpoints through either front end.
func TestH2C(t *testing.T) { eachFront(t, testH2C) }

func testH2C(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"})
	g, srv := startGatewayOn(t, b, front, gateway.Config{})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: p}}
	t.Cleanup(client.CloseIdleConnections)
	for _, tc := range []struct {
		path, key string
		status    int
	}{
		{"/healthz", "", 200},
		{"/d/" + project + "/chat/v1/models", alpha, 200},
		{"/d/" + project + "/chat/v1/models", "", 401},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		if tc.key != "" {
			req.Header.Set("X-API-Key", tc.key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != tc.status {
			t.Errorf("%s: %s %d, want HTTP/2 %d", tc.path, resp.Proto, resp.StatusCode, tc.status)
		}
	}
	if r := up.last(t); r.header.Get("X-Api-Key") != "" {
		t.Error("the key went upstream")
	}
}
