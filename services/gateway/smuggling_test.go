package gateway_test

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway"
)

// TestSmuggling sends request-smuggling attempts through both front ends
// over raw TCP: each hides a second request (to /smuggled) where one
// reading of the framing would find it. The gateway may refuse them, or
// read the second request as a pipelined one of its own and forward it
// (then with its X-Forwarded-* fields, like any request); the upstream
// must never find a request the gateway did not forward — one without
// the gateway's X-Forwarded-For, hidden in a body the gateway passed on.
func TestSmuggling(t *testing.T) { eachFront(t, testSmuggling) }

func testSmuggling(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	seq := b.deployment("open", up.URL, false, nil)
	g, srv := startGatewayOn(t, b, front, gateway.Config{Bounds: gateway.Bounds{
		Head: 500 * time.Millisecond, Body: 500 * time.Millisecond, Idle: 500 * time.Millisecond,
	}})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	h := host("open")
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: " + "model-open.team-a.localhost:8000" + "\r\n\r\n"
	for _, tc := range []struct{ name, req string }{
		{"CL and TE", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"TE and CL", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n" + smuggled},
		{"two lengths", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 0\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"length list", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 0, " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"obs-fold length", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 0\r\nX: y\r\n " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"bare LF", "POST /v1/a HTTP/1.1\nHost: " + h + "\nContent-Length: 0\n\n" + smuggled},
		{"TE not chunked", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n" + smuggled},
		{"chunk-size overflow", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n" + smuggled},
		{"space before colon", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nContent-Length : " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"signed length", "POST /v1/a HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: +0\r\n\r\n" + smuggled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(guard))
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			_, _ = io.ReadAll(c) // until the gateway closes (the idle bound at the latest)
		})
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, r := range up.reqs {
		if r.header.Get("X-Forwarded-For") == "" || r.header.Get("X-Forwarded-Host") != h {
			t.Errorf("the upstream received a request the gateway did not forward: %+v", r)
		}
	}
}
