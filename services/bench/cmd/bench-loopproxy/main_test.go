package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/infergate/infergate/services/bench/internal/fastupstream"
)

// TestModes: each of the instrument's proxies answers as the upstream
// does for a known key, 401 for any other, over kept-alive connections —
// or its figures would measure something else.
func TestModes(t *testing.T) {
	up := httptest.NewServer(fastupstream.Handler())
	defer up.Close()
	want := post(t, http.DefaultClient, up.URL, "")
	for _, m := range []struct {
		name         string
		loop, splice bool
	}{{"goroutine", false, false}, {"goroutine-splice", false, true}, {"loop", true, false}} {
		t.Run(m.name, func(t *testing.T) {
			if (m.loop || m.splice) && runtime.GOOS != "linux" {
				t.Skip("epoll and splice are Linux's")
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			p := &proxy{keys: map[string]struct{}{"ig_good": {}}, upstream: up.Listener.Addr().String(), splice: m.splice}
			if m.loop {
				go func() { _ = p.serveLoop(ln.(*net.TCPListener)) }() // runs until the test binary exits
			} else {
				go func() { _ = p.serveGoroutines(ln) }()
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
			defer client.CloseIdleConnections()
			url := "http://" + ln.Addr().String()
			for i := range 20 {
				if got := post(t, client, url, "ig_good"); got != want {
					t.Fatalf("request %d with the key: %q, want %q", i, got, want)
				}
				if got := post(t, client, url, "ig_bad"); !strings.HasPrefix(got, "401 ") {
					t.Fatalf("request %d with another key: %q", i, got)
				}
			}
		})
	}
}

// post posts a chat completion with key (none: "") and returns the status
// and the body.
func post(t *testing.T, c *http.Client, url, key string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status[:3] + " " + string(b)
}
