package gateway_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway"
)

// guard bounds every wait of these tests: far above any bound they
// configure, so only a bound that does not work reaches it.
const guard = 15 * time.Second

// TestTimeBounds runs a gateway with small time bounds through both front
// ends and behaves as slow and hostile clients and upstreams do (issue
// 12): each case must end the connection, or answer, within its bound —
// checked against a generous guard, never a precise time.
func TestTimeBounds(t *testing.T) { eachFront(t, testTimeBounds) }

func testTimeBounds(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	t.Cleanup(slow.Close)
	var firehoseDone atomic.Bool
	firehose := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := []byte("data: " + strings.Repeat("x", 64<<10) + "\n\n")
		for range 4096 { // 256 MiB at most: far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				break
			}
		}
		firehoseDone.Store(true)
	}))
	t.Cleanup(firehose.Close)
	b.key("alpha", nil)
	b.deployment("open", up.URL, false, nil)
	b.deployment("closed", up.URL, true, []string{"alpha"})
	b.deployment("slow", slow.URL, false, nil)
	seq := b.deployment("firehose", firehose.URL, false, nil)
	bounds := gateway.Bounds{
		Head: 300 * time.Millisecond, Body: 300 * time.Millisecond, BodyMinRate: 1 << 30,
		ResponseHead: 500 * time.Millisecond, Write: 300 * time.Millisecond, Idle: 400 * time.Millisecond,
	}
	g, srv := startGatewayOn(t, b, front, gateway.Config{Bounds: bounds})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	addr := srv.Listener.Addr().String()

	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(guard))
		return c
	}
	send := func(t *testing.T, c net.Conn, s string) {
		t.Helper()
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	// closed waits for the gateway to close c, reading what it sends.
	closed := func(t *testing.T, c net.Conn) string {
		t.Helper()
		got, err := io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the gateway kept the connection open past %v; got %q", guard, got)
		}
		return string(got)
	}
	// answer reads one response from c.
	answer := func(t *testing.T, br *bufio.Reader) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		return resp
	}
	requested := func(path string) bool {
		up.mu.Lock()
		defer up.mu.Unlock()
		for _, r := range up.reqs {
			if r.path == path {
				return true
			}
		}
		return false
	}

	t.Run("silent new connection", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		if got := closed(t, c); got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("head never finished", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		send(t, c, "POST /v1/chat/completions HTTP/1.1\r\nHost: "+host("open")+"\r\nX-Slow: ")
		if got := closed(t, c); got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("body never sent", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		send(t, c, "POST /v1/never HTTP/1.1\r\nHost: "+host("open")+"\r\nContent-Length: 100\r\n\r\n{\"model\":")
		if got := closed(t, c); got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("got %q, want a 408 or nothing", got)
		}
		if requested("/v1/never") {
			t.Error("the upstream got the request whose body never came")
		}
	})
	for _, tc := range []struct{ name, host, status string }{
		{"401 without waiting for the body", host("closed"), "401"},
		{"404 without waiting for the body", host("nowhere"), "404"},
		{"400 without waiting for the body", host("open"), "400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := "/v1/chat/completions"
			if tc.status == "400" {
				path = "/v1/../admin"
			}
			c := dial(t)
			// A body bound of 300 ms: had the gateway waited for the body,
			// the answer would be a 408 or nothing.
			send(t, c, "POST "+path+" HTTP/1.1\r\nHost: "+tc.host+"\r\nContent-Length: 100000\r\n\r\n")
			got := closed(t, c)
			if !strings.HasPrefix(got, "HTTP/1.1 "+tc.status) {
				t.Errorf("got %q, want %s", got, tc.status)
			}
		})
	}
	t.Run("upstream response head", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		send(t, c, "GET /v1/models HTTP/1.1\r\nHost: "+host("slow")+"\r\n\r\n")
		resp := answer(t, bufio.NewReader(c))
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("status %d, want 504", resp.StatusCode)
		}
	})
	t.Run("client stops reading", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		send(t, c, "GET /v1/stream HTTP/1.1\r\nHost: "+host("firehose")+"\r\n\r\n")
		// Read nothing: the gateway must give up on this client, and end
		// the upstream's request.
		eventually(t, "the upstream request ended", firehoseDone.Load)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		br := bufio.NewReader(c)
		send(t, c, "GET /v1/models HTTP/1.1\r\nHost: "+host("open")+"\r\n\r\n")
		if resp := answer(t, br); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if rest, err := io.ReadAll(br); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("an idle connection stayed open past %v (%q)", guard, rest)
		}
	})
}
