package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// loopbackTransport is the proxy's upstream client with loopback allowed:
// the test upstreams are on loopback.
func loopbackTransport() *upstreamTransport {
	dial := Dialer(upstreampolicy.MustParse(upstreampolicy.Loopback), time.Second)
	return newUpstreamTransport(NewTransport(dial, time.Minute), dial, time.Minute)
}

// Both upstream clients — the synchronous one and http.Transport — dial
// through the policy: with the default one, a loopback upstream is
// refused before any connection is made.
func TestUpstreamTransportRefusesByPolicy(t *testing.T) {
	t.Parallel()
	up, conns := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {})
	dial := Dialer(nil, time.Second)
	rt := newUpstreamTransport(NewTransport(dial, time.Minute), dial, time.Minute)
	t.Cleanup(rt.CloseIdleConnections)
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"synchronous", func() *http.Request { r, _ := http.NewRequest("GET", up.URL+"/v1/models", nil); return r }},
		{"http.Transport", func() *http.Request {
			r, _ := http.NewRequest("POST", up.URL+"/v1/models", io.NopCloser(strings.NewReader("x")))
			r.ContentLength = -1
			return r
		}},
	} {
		req := tc.req()
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, upstreampolicy.ErrRefused) {
			t.Errorf("%s: err = %v, want refused by the upstream policy", tc.name, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the upstream got %d connections", n)
	}
}

// upstreamServer is an upstream that counts its connections.
func upstreamServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func send(t *testing.T, rt http.RoundTripper, method, url, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Body, req.GetBody = upstreamBody(req.Body, req.ContentLength)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp.StatusCode, string(got), resp.Header
}

func TestUpstreamTransport(t *testing.T) {
	t.Parallel()
	up, conns := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/continue":
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "after")
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}
	})
	rt := loopbackTransport()
	t.Cleanup(rt.CloseIdleConnections)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"GET", "GET", "/echo?q=1", "", 200, "GET /echo?q=1 "},
		{"POST with a body", "POST", "/echo", `{"model":"m"}`, 200, `POST /echo {"model":"m"}`},
		{"chunked answer", "GET", "/chunked", "", 200, "part 0;part 1;part 2;"},
		{"no content", "GET", "/empty", "", 204, ""},
		{"HEAD", "HEAD", "/echo", "", 200, ""},
		{"1xx before the answer", "GET", "/continue", "", 200, "after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := send(t, rt, tc.method, up.URL+tc.path, tc.body)
			if status != tc.status || body != tc.want {
				t.Errorf("got %d %q, want %d %q", status, body, tc.status, tc.want)
			}
		})
	}
	t.Run("connections are reused", func(t *testing.T) {
		send(t, rt, "GET", up.URL+"/echo", "")
		before := conns.Load()
		for i := range 50 {
			if _, body, _ := send(t, rt, "POST", up.URL+"/echo", fmt.Sprint(i)); body != fmt.Sprintf("POST /echo %d", i) {
				t.Fatalf("answer %d: %q", i, body)
			}
		}
		if n := conns.Load() - before; n != 0 {
			t.Errorf("%d new connections for 50 sequential requests", n)
		}
	})
	t.Run("Connection: close is honoured", func(t *testing.T) {
		before := conns.Load()
		send(t, rt, "GET", up.URL+"/close", "")
		send(t, rt, "GET", up.URL+"/echo", "")
		if n := conns.Load() - before; n != 1 {
			t.Errorf("%d new connections, want 1 (after the closed one)", n)
		}
	})
}

// An upstream that closes idle connections (a short IdleTimeout, a
// restart) must not fail the next request.
func TestUpstreamTransportIdleClosed(t *testing.T) {
	t.Parallel()
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	up.Config.IdleTimeout = 20 * time.Millisecond
	up.Start()
	t.Cleanup(up.Close)
	rt := loopbackTransport()
	t.Cleanup(rt.CloseIdleConnections)
	for i := range 5 {
		if _, body, _ := send(t, rt, "POST", up.URL, fmt.Sprint(i)); body != fmt.Sprint(i) {
			t.Fatalf("answer %d: %q", i, body)
		}
		time.Sleep(60 * time.Millisecond) // the upstream closes the idle connection
	}
}

// A client going away ends the upstream request at once, even while the
// upstream streams.
func TestUpstreamTransportCancel(t *testing.T) {
	t.Parallel()
	started, ended := make(chan struct{}), make(chan struct{})
	up, _ := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 0\n\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(ended)
	})
	rt := loopbackTransport()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", up.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	buf := make([]byte, 9)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || !bytes.Equal(buf, []byte("data: 0\n\n")) {
		t.Fatalf("%q %v", buf, err)
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not ended")
	}
	done := make(chan struct{})
	go func() { _ = resp.Body.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the body waited for the stream")
	}
}

// Anything but the simple case goes to the fallback transport.
func TestUpstreamTransportFallback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		fast bool
	}{
		{"GET", func() *http.Request { r, _ := http.NewRequest("GET", "http://u/x", nil); return r }, true},
		{"https", func() *http.Request { r, _ := http.NewRequest("GET", "https://u/x", nil); return r }, false},
		{"streamed body", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://u/x", io.NopCloser(strings.NewReader("x")))
			r.ContentLength = -1
			return r
		}, false},
		{"upgrade", func() *http.Request {
			r, _ := http.NewRequest("GET", "http://u/x", nil)
			r.Header.Set("Upgrade", "websocket")
			return r
		}, false},
		{"expect", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://u/x", nil)
			r.Header.Set("Expect", "100-continue")
			return r
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fast(tc.req()); got != tc.fast {
				t.Errorf("fast = %v, want %v", got, tc.fast)
			}
		})
	}
}
