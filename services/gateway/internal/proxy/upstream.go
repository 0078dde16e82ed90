package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/keepalive"
)

// upstreamTransport carries the common request — plain http://, no body or
// a small body already read (see upstreamBody), no upgrade — over HTTP/1.1
// keep-alive connections of its own, writing the request and reading the
// response on the caller's goroutine. Everything else goes to fallback (an
// *http.Transport).
//
// Why: under load, http.Transport's per-connection reader and writer
// goroutines, the channel hand-offs between them and the handler, and the
// read it keeps pending on every idle connection cost ~40 % of the
// gateway's CPU (docs/benchmarks.md, gateway throughput). Here a request
// is one write and one read; an idle connection's liveness is checked, on
// reuse, with one non-blocking peek (keepalive).
type upstreamTransport struct {
	fallback http.RoundTripper
	dial     DialFunc
	// responseHead bounds the wait for a response head.
	responseHead time.Duration
	idle         keepalive.Pool[*keepalive.Conn]
}

func newUpstreamTransport(fallback http.RoundTripper, dial DialFunc, responseHead time.Duration) *upstreamTransport {
	return &upstreamTransport{fallback: fallback, dial: dial, responseHead: responseHead}
}

// writers buffer a request's head (and in-memory body) for its one
// write: lent per request, not held by every pooled connection.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// fast reports whether req can take the synchronous path.
func fast(req *http.Request) bool {
	if req.URL.Scheme != "http" || req.Method == http.MethodConnect || req.Close {
		return false
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return false
	}
	if _, ok := req.Header["Expect"]; ok {
		return false
	}
	if len(req.Trailer) > 0 {
		return false
	}
	// Only bodies the gateway has in memory (and can send again on a
	// fresh connection): a streamed body needs the response read while it
	// is still being written, which is what http.Transport is for.
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// RoundTrip implements http.RoundTripper.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !fast(req) {
		return t.fallback.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		c, reused, err := t.conn(ctx, addr)
		if err != nil {
			return nil, t.ctxErr(ctx, err)
		}
		resp, wrote, err := t.exchange(ctx, c, req, attempt)
		if err == nil {
			return resp, nil
		}
		_ = c.Close()
		if ctx.Err() != nil {
			return nil, t.ctxErr(ctx, err)
		}
		// A reused connection the upstream closed between its liveness
		// check and this request: try once more on a fresh one (the body
		// is in memory) if the request never got out, or if it may be
		// sent twice.
		if !reused || attempt > 0 || (wrote && !keepalive.Idempotent(req.Method)) {
			return nil, err
		}
	}
}

func (t *upstreamTransport) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// exchange writes req on c and reads the response head; wrote says whether
// the request was written out.
func (t *upstreamTransport) exchange(ctx context.Context, c *keepalive.Conn, req *http.Request, attempt int) (_ *http.Response, wrote bool, _ error) {
	if attempt > 0 && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, false, err
		}
		req.Body = body
	}
	// Closing the connection is how a canceled request stops a blocked
	// write or read.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	if err != nil {
		stop()
		return nil, false, err
	}
	br := c.Reader()
	c.Bound(nil, time.Now().Add(t.responseHead))
	resp, err := http.ReadResponse(br, req)
	// 1xx answers other than 101 are informational: the real one follows.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(br, req)
	}
	c.Bound(nil, time.Time{})
	if err != nil {
		stop()
		return nil, true, err
	}
	b := &upBody{t: t, c: c, stop: stop, keep: !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, true, nil
	}
	b.rc = resp.Body
	resp.Body = b
	return resp, true, nil
}

// upBody hands the connection back when its response has been read to
// the end, and closes it otherwise.
type upBody struct {
	t    *upstreamTransport
	c    *keepalive.Conn
	rc   io.ReadCloser
	stop func() bool
	keep bool

	mu   sync.Mutex // mu protects done
	done bool
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection once: back to the pool when the body was
// read to its end, the response allows it and the request's context did
// not close it meanwhile; closed otherwise.
func (b *upBody) finish(complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	// Not b.rc.Close: net/http drains a response body on Close, which for
	// a stream the client left would wait for the upstream to finish.
	// Closing the connection ends it at once.
	if b.stop() && complete && b.keep {
		b.t.put(b.c)
		return
	}
	_ = b.c.Close()
}

// conn returns an idle connection to addr that is still open, or a new one.
func (t *upstreamTransport) conn(ctx context.Context, addr string) (*keepalive.Conn, bool, error) {
	if c, ok := t.idle.Get(addr, time.Now()); ok {
		return c, true, nil
	}
	c, err := keepalive.Dial(ctx, t.dial, addr)
	return c, false, err
}

// put returns c to the idle pool.
func (t *upstreamTransport) put(c *keepalive.Conn) {
	c.Release()
	t.idle.Put(c.Addr(), c, time.Now())
}

// CloseIdleConnections closes every idle connection (http.Client and tests
// call it).
func (t *upstreamTransport) CloseIdleConnections() {
	t.idle.CloseIdle()
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
