// Package h1 is the gateway's HTTP/1.1 fast path: a connection front end
// that owns the listener, parses each request head strictly on a reusable
// per-connection buffer and lets a Handler answer it or proxy it over its
// own keep-alive upstream client — no net/http server, no ReverseProxy,
// no header maps, one write upstream and (for a small response) one write
// back per request.
//
// Everything it does not take — HTTP/2 (h2c), HTTP/1.0, chunked or large
// request bodies, upgrades, Expect, anything malformed or ambiguous, the
// gateway's own endpoints, https upstreams — is handed, with the bytes
// already read, to a net/http server, which then owns that connection for
// the rest of its life.
package h1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
	"github.com/infergate/infergate/services/gateway/internal/keepalive"
)

// Handler answers requests the front end took.
type Handler interface {
	// ServeH1 answers req on c (c.Answer, c.Forward) and returns true, or
	// returns false without having called either: net/http then serves
	// this request and the rest of the connection.
	ServeH1(c *Conn, req *Request) bool
}

// DialFunc connects to an upstream address ("host:port").
type DialFunc = keepalive.DialFunc

// Dialer is a Handler that also says how upstream connections are made
// (the gateway's: with its upstream policy checked on every address it
// dials). A Handler that is not one gets a plain net.Dialer.
type Dialer interface {
	DialUpstream(ctx context.Context, network, addr string) (net.Conn, error)
}

// MaxBody is the largest request body the fast path takes (it reads it
// before the request goes upstream, in one write with the head); larger
// ones go to net/http, which streams them.
const MaxBody = 16 << 10

// Server is the front end.
type Server struct {
	// Fallback serves every connection the fast path hands over.
	Fallback *http.Server
	// Bounds are the fast path's time bounds (zero fields: defaults);
	// set them before Serve. The caller gives Fallback the same.
	Bounds bounds.Bounds

	handler atomic.Pointer[handlerBox]
	up      upstreams
	// loops carry streams between chunks (nil: each waits on its own
	// goroutine).
	loops   *loops
	closing atomic.Bool
	// ctx bounds upstream dials; it ends when shutdown gives up on the
	// open requests.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex // mu protects conns
	// conns are the connections the fast path serves.
	conns map[*Conn]struct{}
	// connsWG counts the goroutines serving them.
	connsWG sync.WaitGroup
}

type handlerBox struct {
	h    Handler
	log  *slog.Logger
	dial DialFunc
}

// SetHandler makes new connections take the fast path through h, and
// report what goes wrong with them (panics) to log (nil: slog.Default());
// a nil h hands every new connection to Fallback. Their upstream
// connections are dialled by h when it is a Dialer.
func (s *Server) SetHandler(h Handler, log *slog.Logger) {
	if h == nil {
		s.handler.Store(nil)
		return
	}
	if log == nil {
		log = slog.Default()
	}
	dial := dialer.DialContext
	if d, ok := h.(Dialer); ok {
		dial = d.DialUpstream
	}
	s.handler.Store(&handlerBox{h, log, dial})
}

// Serve accepts connections on ln until ctx ends, then shuts down: it
// stops accepting, closes idle connections, lets open requests (streams)
// finish for up to grace, then closes what is left.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*Conn]struct{}{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Bounds.SetDefaults()
	s.loops = newLoops(runtime.GOMAXPROCS(0))
	s.mu.Unlock()
	defer s.cancel()
	defer s.loops.close()
	hl := newHandoffListener(ln.Addr())
	fbErr := make(chan error, 1)
	go func() { fbErr <- s.Fallback.Serve(hl) }()
	acceptErr := make(chan error, 1)
	go func() { acceptErr <- s.accept(ln, hl) }()

	var err error
	select {
	case <-ctx.Done():
	case e := <-acceptErr:
		if e == nil {
			e = net.ErrClosed // the listener was closed under us
		}
		err = fmt.Errorf("h1: accept: %w", e)
	case e := <-fbErr:
		err = fmt.Errorf("h1: %w", e)
	}
	_ = ln.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	var fbShutdownErr error
	wg.Go(func() { fbShutdownErr = s.Fallback.Shutdown(shutdownCtx) })
	s.shutdown(shutdownCtx)
	wg.Wait()
	s.up.closeIdle()
	if err != nil {
		return err
	}
	if fbShutdownErr != nil {
		return fmt.Errorf("h1: shutdown: %w", fbShutdownErr)
	}
	if e := <-fbErr; e != nil && !errors.Is(e, http.ErrServerClosed) {
		return fmt.Errorf("h1: %w", e)
	}
	return nil
}

func (s *Server) accept(ln net.Listener, hl *handoffListener) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		hb := s.handler.Load()
		if hb == nil {
			hl.push(nc)
			continue
		}
		c := newConn(s, nc, hb, hl)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			_ = nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.connsWG.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// shutdown closes idle connections at once and the others once their
// request is done, or when ctx ends.
func (s *Server) shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closing.Store(true)
	for c := range s.conns {
		c.closeIfIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.connsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.loops.close() // the parked streams end
		s.mu.Lock()
		for c := range s.conns {
			_ = c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
}

// ParkedStreams reports how many streams the event loops carry now and
// how many times a stream was parked on one, for metrics (zero where
// there are no event loops, or before Serve).
func (s *Server) ParkedStreams() (now, total uint64) {
	s.mu.Lock()
	ls := s.loops
	s.mu.Unlock()
	return ls.parked()
}

func (s *Server) closingNow() bool { return s.closing.Load() }

// forget drops c, ended or handed over, from the connections shutdown
// waits for.
func (s *Server) forget(c *Conn) {
	s.forgetSoon(c)
	s.connsWG.Done()
}

// forgetSoon drops c from the connections shutdown closes (it is
// net/http's now).
func (s *Server) forgetSoon(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// handoffListener yields the connections handed to net/http.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// prefixConn is a connection handed over with bytes already read: Read
// returns them first.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
