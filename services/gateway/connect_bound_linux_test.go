package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway"
)

// TestUpstreamConnectBound: an upstream that never accepts — a listener
// whose accept queue is full, so the kernel drops every SYN and a
// connect would otherwise retry for about two minutes — gets a 502
// within the configured connect bound, through both front ends (issue 12).
func TestUpstreamConnectBound(t *testing.T) { eachFront(t, testUpstreamConnectBound) }

func testUpstreamConnectBound(t *testing.T, front frontEnd) {
	hole := blackhole(t)
	b := newBackend(t)
	seq := b.deployment("blackhole", "http://"+hole, false, nil)
	g, srv := startGatewayOn(t, b, front, gateway.Config{Bounds: gateway.Bounds{Connect: 300 * time.Millisecond}})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)

	for _, req := range []string{
		"GET /v1/models HTTP/1.1\r\nHost: " + host("blackhole") + "\r\n\r\n",
		// A body the net/http path streams (over the fast path's 16 KiB):
		// http.Transport's dial, bounded the same way.
		"POST /v1/embeddings HTTP/1.1\r\nHost: " + host("blackhole") + "\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
	} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		// The guard is far above the bound and far below the two
		// minutes the kernel would retry the connect for.
		_ = c.SetDeadline(time.Now().Add(guard))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer within %v: %v", guard, err)
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502", resp.StatusCode)
		}
	}
}

// blackhole returns the address of a listener that accepts no more
// connections: its accept queue (backlog 0) is filled with connections
// nobody accepts, and Linux then drops the SYNs of new ones. It skips the
// test where connects there still succeed.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full: SYNs are dropped
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("cannot make a blackholed address here: connects to a full accept queue still succeed")
	return ""
}
