package keepalive_test

import (
	"net"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/keepalive"
	"github.com/infergate/infergate/services/gateway/internal/sockprobe"
)

// conn is a real loopback TCP connection with its liveness check.
type conn struct {
	net.Conn
	peer   net.Conn // the server's end
	probe  *sockprobe.Probe
	closed bool
}

func (c *conn) Usable() bool { return c.probe.State() == sockprobe.Empty }
func (c *conn) Close() error { c.closed = true; return c.Conn.Close() }

func dial(t *testing.T, ln net.Listener) *conn {
	t.Helper()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); peer.Close() })
	c := &conn{Conn: nc, peer: peer, probe: new(sockprobe.Probe)}
	c.probe.Init(nc)
	return c
}

// settled waits until what the peer did (close, send) has reached c's
// socket.
func settled(t *testing.T, c *conn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.Usable(); {
		if time.Now().After(deadline) {
			t.Fatal("the peer's close or data never arrived")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPool(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const addr = "up:80"
	p := keepalive.Pool[*conn]{MaxPerHost: 2, IdleTimeout: time.Hour}

	if _, ok := p.Get(addr, time.Now()); ok {
		t.Fatal("Get from an empty pool")
	}
	a, b, c := dial(t, ln), dial(t, ln), dial(t, ln)
	p.Put(addr, a, time.Now())
	p.Put(addr, b, time.Now())
	p.Put(addr, c, time.Now()) // over MaxPerHost: closed
	if !c.closed {
		t.Error("a connection over MaxPerHost was kept")
	}
	if got, ok := p.Get(addr, time.Now()); !ok || got != b {
		t.Errorf("Get = %v, %v; want the most recent", got, ok)
	}
	if _, ok := p.Get("other:80", time.Now()); ok {
		t.Error("Get for another address")
	}

	// The upstream closes a (idle in the pool): Get closes it and finds none.
	a.peer.Close()
	settled(t, a)
	if got, ok := p.Get(addr, time.Now()); ok {
		t.Errorf("Get returned %v, closed by its peer", got)
	}
	if !a.closed {
		t.Error("a connection closed by its peer was not closed")
	}

	// Data the upstream sent unasked makes a connection unusable too.
	d := dial(t, ln)
	p.Put(addr, d, time.Now())
	if _, err := d.peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	settled(t, d)
	if _, ok := p.Get(addr, time.Now()); ok || !d.closed {
		t.Errorf("a connection with unasked data: ok %v, closed %v", ok, d.closed)
	}

	// Too long idle: not returned.
	q := keepalive.Pool[*conn]{IdleTimeout: time.Minute}
	e := dial(t, ln)
	put := time.Now()
	q.Put(addr, e, put)
	if _, ok := q.Get(addr, put.Add(time.Minute)); ok || !e.closed {
		t.Errorf("a connection idle too long: ok %v, closed %v", ok, e.closed)
	}

	// CloseIdle closes them all.
	f := dial(t, ln)
	p.Put(addr, f, time.Now())
	p.CloseIdle()
	if !f.closed {
		t.Error("CloseIdle left a connection open")
	}
	if _, ok := p.Get(addr, time.Now()); ok {
		t.Error("Get after CloseIdle")
	}
}
