package keepalive_test

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/keepalive"
)

// gone is a Watcher whose client leaves when told.
type gone struct{ left atomic.Bool }

func (g *gone) Gone() bool { return g.left.Load() }

// TestWait: a connection waits for its upstream holding no read buffer
// and loses nothing across Release and the next Reader; a wait ends with
// the upstream's data, its close, the head bound, or the client leaving.
func TestWait(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Wait returns at once where the platform cannot peek")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c
		}
	}()
	open := func(t *testing.T) (*keepalive.Conn, net.Conn) {
		t.Helper()
		c, err := keepalive.Dial(context.Background(), (&net.Dialer{}).DialContext, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		peer := <-peers
		t.Cleanup(func() { c.Close(); peer.Close() })
		return c, peer
	}

	t.Run("data, across a release", func(t *testing.T) {
		c, peer := open(t)
		c.Bound(new(gone), time.Time{})
		_, _ = peer.Write([]byte("data: one\n\ndata: two\n\n"))
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
		line, err := c.Reader().ReadString('\n')
		if err != nil || line != "data: one\n" {
			t.Fatalf("%q, %v", line, err)
		}
		c.Release() // bytes are buffered: it must keep them
		rest := make([]byte, 12)
		if _, err := io.ReadFull(c.Reader(), rest); err != nil || string(rest) != "\ndata: two\n\n" {
			t.Fatalf("%q, %v", rest, err)
		}
		c.Release()
		if c.Buffered() != 0 {
			t.Fatal("buffered after a release")
		}
	})
	t.Run("bytes given back come first", func(t *testing.T) {
		c, peer := open(t)
		_, _ = peer.Write([]byte("lo\r\n"))
		c.Unread([]byte("5\r\nhel"))
		if c.Buffered() != 6 || c.Usable() {
			t.Fatalf("buffered %d, usable %v: given-back bytes are pending", c.Buffered(), c.Usable())
		}
		if err := c.Wait(); err != nil { // at once: bytes are pending
			t.Fatal(err)
		}
		got := make([]byte, 10)
		if _, err := io.ReadFull(c.Reader(), got); err != nil || string(got) != "5\r\nhello\r\n" {
			t.Fatalf("%q, %v", got, err)
		}
	})
	t.Run("upstream closes", func(t *testing.T) {
		c, peer := open(t)
		c.Bound(new(gone), time.Time{})
		peer.Close()
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Reader().ReadByte(); err != io.EOF {
			t.Fatalf("%v, want EOF", err)
		}
	})
	t.Run("head bound", func(t *testing.T) {
		c, _ := open(t)
		c.Bound(new(gone), time.Now().Add(200*time.Millisecond))
		if err := c.Wait(); !errors.Is(err, keepalive.ErrHeadTimeout) {
			t.Fatalf("%v, want ErrHeadTimeout", err)
		}
	})
	t.Run("client leaves a silent head wait", func(t *testing.T) {
		c, _ := open(t)
		g := new(gone)
		g.left.Store(true)
		c.Bound(g, time.Now().Add(time.Minute))
		// Noticed at the first poll (keepalive.PollEvery), long before
		// the bound.
		if err := c.Wait(); !errors.Is(err, keepalive.ErrClientGone) {
			t.Fatalf("%v, want ErrClientGone", err)
		}
	})
}
