// Package proxy is the gateway's data plane: it takes a request routed to
// a deployment, asks the auth map whether to let it in, and either answers
// with an OpenAI-style error or streams it to the deployment's upstream
// without the key.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
	"github.com/infergate/infergate/services/gateway/internal/keepalive"
	"github.com/infergate/infergate/services/gateway/internal/metrics"
	"github.com/infergate/infergate/services/gateway/internal/route"
	"github.com/infergate/infergate/services/gateway/internal/tally"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
	"github.com/infergate/infergate/services/internal/usage"
)

// Config is what the handler needs.
type Config struct {
	// Map returns the auth map to decide on now: the gateway swaps in a
	// new one when the stream it was built from is gone.
	Map    func() *authmap.Map
	Region string
	Ready  func() bool
	// Stale reports whether the gateway is past its staleness bound at
	// now (nil: never); requests to auth-enabled deployments then get 503
	// gateway_stale.
	Stale   func(now time.Time) bool
	Now     func() time.Time
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Upstreams is the policy every upstream connection's address must
	// pass, on both front ends (nil: the default policy, which refuses
	// loopback, link-local and unspecified addresses).
	Upstreams *upstreampolicy.Policy
	// Bounds are the time bounds (zero fields: defaults); Serve applies
	// the body, upstream and write bounds, the front end the others.
	Bounds bounds.Bounds
	// Usage counts requests per deployment, key and status class (nil:
	// none are counted).
	Usage *tally.Counter
}

// Handler serves requests routed to deployments.
type Handler struct {
	cfg  Config
	dial DialFunc
	rp   *httputil.ReverseProxy
}

// DialFunc connects to an upstream address.
type DialFunc = keepalive.DialFunc

// Dialer is how every upstream connection is made, by all three upstream
// clients (the fast path's, the synchronous one in upstream.go and
// http.Transport): the connect bound, TCP keep-alive, and p checked on
// the address actually dialled — after DNS, so a name that resolves
// elsewhere than when its URL was checked (DNS rebinding) is still
// refused.
func Dialer(p *upstreampolicy.Policy, connect time.Duration) DialFunc {
	return p.DialContext(&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second})
}

// NewTransport is the upstream transport for what the synchronous client
// does not carry (https, streamed bodies, upgrades): keep-alive
// connections kept in numbers (the standard library keeps 2 idle per
// host, which starves a busy gateway into dialing), bigger buffers, no
// proxy from the environment (upstreams are the platform's own), and
// connections made with dial, a response head awaited for at most
// responseHead.
func NewTransport(dial DialFunc, responseHead time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: responseHead,
		ReadBufferSize:        32 << 10,
		WriteBufferSize:       32 << 10,
	}
}

// New returns a handler.
func New(cfg Config) *Handler {
	cfg.Bounds.SetDefaults()
	h := &Handler{cfg: cfg, dial: Dialer(cfg.Upstreams, cfg.Bounds.Connect)}
	h.rp = &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: newUpstreamTransport(NewTransport(h.dial, cfg.Bounds.ResponseHead), h.dial, cfg.Bounds.ResponseHead),
		// Zero: ReverseProxy still flushes every write at once for
		// streams — text/event-stream and responses of unknown length
		// (chunked) — and lets a response of known length go out with
		// its headers in one write. Flushing every response (-1) cost a
		// timer, a goroutine and two more write syscalls per request:
		// 28 % of the gateway's CPU under load (docs/benchmarks.md).
		FlushInterval:  0,
		BufferPool:     bufferPool{},
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.upstreamError,
		ErrorLog:       slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	return h
}

// call is what Rewrite and the hooks need to know about one request.
type call struct {
	t        route.Target
	out      outcome
	upstream *url.URL
	start    time.Time
	// body is the request's body, bounded; nil: none.
	body *boundedBody
}

type callKey struct{}

// Serve decides and proxies a request routed to t.
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request, t route.Target) {
	out := h.decide(t, credentials(r.Header))
	h.record(t, out)
	if out.status != 0 {
		Refuse(w, r, out.status, out.code)
		return
	}
	d := out.d
	c := &call{t: t, out: out, upstream: d.Upstream, start: time.Now()}
	if r.Body != nil && r.Body != http.NoBody {
		c.body = &boundedBody{rc: http.NewResponseController(w), body: r.Body, b: &h.cfg.Bounds, start: c.start}
		r.Body = c.body
	}
	h.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// outcome is what a request routed to a deployment gets: proxied to d's
// upstream (status 0) or an error answer.
type outcome struct {
	d      authmap.Decision
	status int
	code   Code
	// m is the map d was decided on and now the moment, Unix ns: what
	// usage is counted against.
	m   *authmap.Map
	now int64
}

// decide is the one decision path both front ends carry out: readiness,
// the auth map's decision, then staleness — checked at every decision, at
// the moment of the decision, so a gateway that was frozen or cut off
// admits nothing on old state once past its bound.
func (h *Handler) decide(t route.Target, key string) outcome {
	if !h.cfg.Ready() {
		// A map still replaying (or of a stream that is gone) could let
		// in a key revoked later: refuse rather than guess.
		return outcome{status: http.StatusServiceUnavailable, code: CodeGatewayNotReady}
	}
	now := h.cfg.Now()
	m := h.cfg.Map()
	d := m.Decide(t.Project, t.Deployment, h.cfg.Region, key, now)
	out := outcome{d: d, m: m, now: now.UnixNano()}
	switch d.Result {
	case authmap.ResultAllowed, authmap.ResultMissingAPIKey, authmap.ResultInvalidAPIKey:
		// Auth is on: a map past its bound may be missing a revocation.
		if h.cfg.Stale != nil && h.cfg.Stale(now) {
			out.status, out.code = http.StatusServiceUnavailable, CodeGatewayStale
			return out
		}
	}
	switch d.Result {
	case authmap.ResultAllowed, authmap.ResultAuthDisabled:
		if d.Upstream == nil {
			out.status, out.code = http.StatusBadGateway, CodeUpstreamUnavailable
		}
	case authmap.ResultMissingAPIKey:
		out.status, out.code = http.StatusUnauthorized, CodeMissingAPIKey
	case authmap.ResultInvalidAPIKey:
		out.status, out.code = http.StatusUnauthorized, CodeInvalidAPIKey
	case authmap.ResultDeploymentNotReady:
		out.status, out.code = http.StatusServiceUnavailable, CodeDeploymentNotReady
	default:
		out.status, out.code = http.StatusNotFound, CodeDeploymentNotFound
	}
	return out
}

// record counts the outcome and logs what an operator needs. A refusal
// is counted in usage here; a request let in is counted by answered, once
// the upstream's status is known.
func (h *Handler) record(t route.Target, out outcome) {
	switch out.code {
	case CodeGatewayNotReady:
		h.cfg.Metrics.RefusedNotReady()
		return
	case CodeGatewayStale:
		h.cfg.Metrics.RefusedStale()
		h.count(out, usage.ClassRefused)
		return
	}
	h.cfg.Metrics.Decided(out.d.Result)
	switch out.code {
	case CodeMissingAPIKey, CodeInvalidAPIKey, CodeDeploymentNotReady:
		if out.status != 0 {
			h.count(out, usage.ClassRefused)
		}
	case CodeUpstreamUnavailable:
		h.count(out, usage.ClassServerError)
	}
	switch {
	case out.status == 0:
	case out.code == CodeInvalidAPIKey:
		h.cfg.Log.Debug("refused", "project", t.Project, "deployment", t.Deployment, "reason", out.d.Reason.String())
	case out.code == CodeUpstreamUnavailable:
		h.cfg.Log.Warn("deployment has an unusable upstream URL", "project", t.Project, "deployment", t.Deployment)
	}
}

// count counts a request in usage: never blocking, never allocating.
func (h *Handler) count(out outcome, class usage.Class) {
	if h.cfg.Usage != nil {
		h.cfg.Usage.Count(out.m, out.d.Deployment, out.d.Key, class, out.now)
	}
}

// answered counts a request that was let in by the status its client got
// (0: none, the client went away first: counted as a client error, as
// nginx's 499).
func (h *Handler) answered(out outcome, status int) {
	if status == 0 {
		h.count(out, usage.ClassClientError)
		return
	}
	h.count(out, usage.ClassOf(status))
}

// tokens counts the tokens the scanner found in a relayed body.
func (h *Handler) tokens(out outcome, s *tally.Scanner) {
	if p, c, ok := s.Usage(); ok && h.cfg.Usage != nil {
		h.cfg.Usage.Tokens(out.m, out.d.Deployment, out.d.Key, p, c)
	}
}

// credentials returns the key a request presents: X-API-Key, else a
// well-formed infergate key in Authorization: Bearer. (Whatever else
// carries a key is only removed before the request goes upstream:
// credentials.go.)
func credentials(h http.Header) string {
	if v := h["X-Api-Key"]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	if v := h["Authorization"]; len(v) > 0 {
		return bearerKey(v[0])
	}
	return ""
}

// bearerKey is the well-formed infergate key in an Authorization value
// "Bearer <key>", or "".
func bearerKey(v string) string {
	if scheme, tok, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
		if tok = strings.TrimSpace(tok); apikey.WellFormed(tok) {
			return tok
		}
	}
	return ""
}

// rewrite sends the request to the upstream URL (keeping the upstream's
// base path) without the key, in its headers or its query.
func rewrite(pr *httputil.ProxyRequest) {
	c := pr.In.Context().Value(callKey{}).(*call)
	pr.Out.URL.Path = c.t.Path
	pr.Out.URL.RawPath = c.t.RawPath
	pr.Out.URL.RawQuery = stripQuery(pr.Out.URL.RawQuery)
	pr.SetURL(c.upstream)
	pr.SetXForwarded()
	stripCredentials(pr.Out.Header)
	stripCredentials(pr.Out.Trailer)
	pr.Out.Body, pr.Out.GetBody = upstreamBody(pr.Out.Body, pr.Out.ContentLength)
}

// smallBody is the largest request body of known length that is read
// before the request goes upstream, so the transport writes its headers
// and body in one syscall instead of two (it flushes the headers first
// for any body it does not know to be in memory). Larger bodies, and
// bodies of unknown length, stream.
const smallBody = 16 << 10

// upstreamBody is the body the upstream request carries.
//
// A body of known length ends with io.EOF after its last byte without
// reading the client's body again. The transport reads once more after
// the declared length (to check for extra bytes); by then net/http's
// server may already have drained and closed the client's body — it does
// that as soon as the response headers are written — and that late Read
// failed with "invalid Read on closed Body", which made the transport
// close the upstream connection under a response still streaming
// (truncated SSE streams; found by the streaming benchmark).
//
// A small body that was read ahead also comes with a GetBody, so a request
// can be sent again on a fresh connection.
func upstreamBody(body io.ReadCloser, n int64) (io.ReadCloser, func() (io.ReadCloser, error)) {
	if body == nil || body == http.NoBody || n <= 0 {
		return body, nil
	}
	if n <= smallBody {
		buf := make([]byte, n)
		k, err := io.ReadFull(body, buf)
		if err == nil {
			// io.NopCloser of a *bytes.Reader is what http.Transport
			// recognises as in memory. The client's body is closed by the
			// server (and by ReverseProxy) when the request ends.
			return io.NopCloser(bytes.NewReader(buf)), func() (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(buf)), nil
			}
		}
		// A short or failed body: the transport gets what came, then the
		// error, and answers 502 as for any body that fails.
		return &lengthBody{r: io.MultiReader(bytes.NewReader(buf[:k]), errReader{err}), body: body, left: n}, nil
	}
	return &lengthBody{r: body, body: body, left: n}, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// lengthBody reads n bytes of the client's body, then reports io.EOF
// itself.
type lengthBody struct {
	r    io.Reader
	body io.Closer
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left <= 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return b.body.Close() }

func (h *Handler) modifyResponse(resp *http.Response) error {
	if c, ok := resp.Request.Context().Value(callKey{}).(*call); ok {
		h.cfg.Metrics.Upstream(time.Since(c.start))
		h.answered(c.out, resp.StatusCode)
		if h.cfg.Usage != nil {
			resp.Body = h.scanBody(resp.Body, c.out)
		}
	}
	return nil
}

// scanBody is the body relayed to the client, fed to a token scanner on
// the way (tally.Scanner: nothing is kept); the tokens are counted when
// the body ends.
func (h *Handler) scanBody(body io.ReadCloser, out outcome) io.ReadCloser {
	if body == nil || body == http.NoBody {
		return body
	}
	s := scanners.Get().(*tally.Scanner)
	s.Reset()
	return &scannedBody{ReadCloser: body, h: h, out: out, s: s}
}

var scanners = sync.Pool{New: func() any { return new(tally.Scanner) }}

type scannedBody struct {
	io.ReadCloser
	h    *Handler
	out  outcome
	s    *tally.Scanner
	done bool
}

func (b *scannedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.s != nil {
		_, _ = b.s.Write(p[:n])
		if err != nil {
			b.finish()
		}
	}
	return n, err
}

func (b *scannedBody) finish() {
	if b.s != nil {
		b.h.tokens(b.out, b.s)
		scanners.Put(b.s)
		b.s = nil
	}
}

func (b *scannedBody) Close() error {
	b.finish()
	return b.ReadCloser.Close()
}

func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	c, _ := r.Context().Value(callKey{}).(*call)
	if c != nil && (errors.Is(err, bounds.ErrBodyTimeout) || (c.body != nil && c.body.timedOut)) {
		// Checked first: net/http cancels the request's context when a
		// read of its connection fails, the body's deadline included.
		h.cfg.Metrics.UpstreamError(true)
		h.cfg.Metrics.Upstream(time.Since(c.start))
		h.answered(c.out, http.StatusRequestTimeout)
		h.cfg.Log.Debug("request body timed out", "project", c.t.Project, "deployment", c.t.Deployment)
		Refuse(w, r, http.StatusRequestTimeout, CodeRequestTimeout)
		return
	}
	canceled := errors.Is(err, context.Canceled) && r.Context().Err() != nil
	h.cfg.Metrics.UpstreamError(canceled)
	if c != nil {
		h.cfg.Metrics.Upstream(time.Since(c.start))
		status := http.StatusBadGateway
		switch {
		case canceled:
			status = 0
		case errors.Is(err, keepalive.ErrHeadTimeout):
			status = http.StatusGatewayTimeout
		}
		h.answered(c.out, status)
	}
	if canceled {
		// The client went away; nobody reads an answer.
		h.cfg.Log.Debug("client canceled a proxied request", "project", c.t.Project, "deployment", c.t.Deployment)
		return
	}
	h.logUpstreamFailure(c.t, c.upstream.Host, err)
	if errors.Is(err, keepalive.ErrHeadTimeout) {
		WriteError(w, http.StatusGatewayTimeout, CodeUpstreamTimeout)
		return
	}
	WriteError(w, http.StatusBadGateway, CodeUpstreamUnavailable)
}

// boundedBody reads a request body within its bound (Bounds.Body and
// BodyMinRate), by read deadlines on the client's connection (or HTTP/2
// stream). The deadline is lifted once the body has ended: net/http's
// background read, which notices a client that goes away, must not time
// out under a response that streams for minutes.
type boundedBody struct {
	rc    *http.ResponseController
	body  io.ReadCloser
	b     *bounds.Bounds
	start time.Time
	got   int64
	done  bool
	// timedOut: the body did not come within its bound.
	timedOut bool
}

func (x *boundedBody) Read(p []byte) (int, error) {
	if x.done {
		return x.body.Read(p)
	}
	_ = x.rc.SetReadDeadline(x.b.BodyDeadline(x.start, x.got))
	n, err := x.body.Read(p)
	x.got += int64(n)
	switch {
	case err == io.EOF:
		x.done = true
		_ = x.rc.SetReadDeadline(time.Time{})
	case err != nil:
		// The deadline stays: net/http must not then wait, without
		// one, to drain the rest of a body that will not come.
		x.done = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			x.timedOut = true
			err = fmt.Errorf("%w: %w", bounds.ErrBodyTimeout, err)
		}
	}
	return n, err
}

func (x *boundedBody) Close() error { return x.body.Close() }

// BoundWrites returns w with every write to the client bounded by d: a
// client that stops reading fails the write that has blocked d, and the
// request (and its upstream request) ends. The deadline is renewed
// before each write, header and flush — at most once a second — since a
// stream may be silent for minutes between writes. (http.Server's
// WriteTimeout bounds the whole response instead, which would cut every
// long stream.)
func BoundWrites(w http.ResponseWriter, d time.Duration) http.ResponseWriter {
	bw := &boundedWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d}
	bw.renew()
	return bw
}

type boundedWriter struct {
	http.ResponseWriter
	rc  *http.ResponseController
	d   time.Duration
	set time.Time
}

func (b *boundedWriter) renew() {
	if now := time.Now(); now.Sub(b.set) >= time.Second {
		b.set = now
		_ = b.rc.SetWriteDeadline(now.Add(b.d + time.Second))
	}
}

func (b *boundedWriter) WriteHeader(status int) {
	b.renew()
	b.ResponseWriter.WriteHeader(status)
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	b.renew()
	return b.ResponseWriter.Write(p)
}

// FlushError flushes within the bound (http.ResponseController finds it).
func (b *boundedWriter) FlushError() error {
	b.renew()
	return b.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection (hijack,
// deadlines).
func (b *boundedWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }

// logUpstreamFailure says why a request to t got 502: the upstream policy
// refused the address the upstream host resolved to (a deployment that
// should not point there, or DNS that changed under it), or the upstream
// failed. The log has the upstream's host and the address, never a
// header.
func (h *Handler) logUpstreamFailure(t route.Target, host string, err error) {
	if errors.Is(err, upstreampolicy.ErrRefused) {
		h.cfg.Log.Warn("upstream address refused by the upstream policy", "project", t.Project, "deployment", t.Deployment, "upstream", host, "err", err)
		return
	}
	h.cfg.Log.Warn("upstream failed", "project", t.Project, "deployment", t.Deployment, "upstream", host, "err", err)
}

// bufferPool lends the reverse proxy its copy buffers, so proxying does not
// allocate 32 KiB per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
