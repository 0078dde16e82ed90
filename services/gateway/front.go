package gateway

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/h1"
	"github.com/infergate/infergate/services/internal/httpserver"
)

// Front is a gateway's HTTP front end. With the HTTP/1.1 fast path on
// (the default of the gateway process and of the one-process stack), it
// owns the listener and serves the common request — HTTP/1.1, to a
// deployment with a plain-http upstream, well-formed and unambiguous, a
// body of at most 16 KiB — itself: strict parsing on a per-connection
// buffer, the auth decision, and a synchronous keep-alive upstream
// client, without net/http's server or httputil.ReverseProxy. Any other
// connection (HTTP/2, TLS-less h2c included, HTTP/1.0, a request it does
// not take) goes, with the bytes already read, to srv, which serves it and
// the rest of that connection. docs/gateway.md says which requests take
// which path.
type Front struct {
	srv  *http.Server
	fast *h1.Server // nil: fast path off, srv serves everything
}

// NewFront returns a front end for srv (whose Handler is normally a
// gateway's Handler, or a stand-in until the gateway exists); fastPath
// turns the HTTP/1.1 fast path on, used once Use names a gateway. b are
// the time bounds (zero fields: defaults), the gateway's own
// (Config.Bounds): NewFront sets srv's ReadHeaderTimeout and IdleTimeout
// from them and its ReadTimeout and WriteTimeout to none, since the
// gateway's handler bounds the body and each write itself — a whole-
// request bound would cut every long stream.
func NewFront(srv *http.Server, fastPath bool, b Bounds) *Front {
	b.SetDefaults()
	srv.ReadHeaderTimeout, srv.IdleTimeout = b.Head, b.Idle
	srv.ReadTimeout, srv.WriteTimeout = 0, 0
	f := &Front{srv: srv}
	if fastPath {
		f.fast = &h1.Server{Fallback: srv, Bounds: b}
	}
	return f
}

// Use makes new connections take g's fast path (when it is on).
// Requests the fast path does not take go to srv's handler, which should
// then be g.Handler().
func (f *Front) Use(g *Gateway) {
	if f.fast != nil {
		f.fast.SetHandler(g.proxy.FastPath(g.cfg.BaseDomain), g.cfg.Log)
		g.metrics.StreamLoopStats(f.fast.ParkedStreams)
	}
}

// Serve serves on ln until ctx ends, then shuts down: it stops accepting,
// closes idle connections and lets open requests and streams finish for
// up to grace.
func (f *Front) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	if f.fast == nil {
		return httpserver.Serve(ctx, f.srv, ln, grace)
	}
	return f.fast.Serve(ctx, ln, grace)
}
