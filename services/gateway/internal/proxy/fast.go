package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
	"github.com/infergate/infergate/services/gateway/internal/h1"
	"github.com/infergate/infergate/services/gateway/internal/keepalive"
	"github.com/infergate/infergate/services/gateway/internal/route"
	"github.com/infergate/infergate/services/gateway/internal/tally"
	"github.com/infergate/infergate/services/internal/authmap"
)

// FastPath serves the common request to a deployment on the HTTP/1.1
// fast path (package h1) with the same decisions, answers, metrics and
// logs as Serve: a request to a deployment whose upstream is plain http.
// Everything else — the gateway's own endpoints, https upstreams — it
// leaves to net/http and Serve.
type FastPath struct {
	h          *Handler
	baseDomain string
}

var (
	_ h1.Handler = (*FastPath)(nil)
	_ h1.Dialer  = (*FastPath)(nil)
)

// FastPath returns the fast path for requests routed under baseDomain
// (lower case).
func (h *Handler) FastPath(baseDomain string) *FastPath {
	return &FastPath{h: h, baseDomain: baseDomain}
}

const errorHeader = "Content-Type: application/json\r\nCache-Control: no-store\r\n"

// staleHeader is errorHeader with the Retry-After of gateway_stale.
const staleHeader = errorHeader + "Retry-After: " + RetryAfterStale + "\r\n"

func answerError(c *h1.Conn, status int, code Code) {
	header := errorHeader
	if code == CodeGatewayStale {
		header = staleHeader
	}
	_ = c.Answer(status, header, errorBodies[code])
}

// ServeH1 implements h1.Handler.
func (f *FastPath) ServeH1(c *h1.Conn, req *h1.Request) bool {
	h := f.h
	// req.Path has no escapes: decoded and raw are the same.
	t, kind := route.Of(req.Host, req.Path, "", f.baseDomain)
	switch kind {
	case route.Deployment:
	case route.Unroutable:
		h.cfg.Metrics.Decided(authmap.ResultDeploymentNotFound)
		answerError(c, http.StatusNotFound, CodeDeploymentNotFound)
		return true
	case route.BadPath:
		answerError(c, http.StatusBadRequest, CodeInvalidPath)
		return true
	default:
		return false // the gateway's own endpoints
	}
	out := h.decide(t, fieldCredentials(req))
	if out.status == 0 && out.d.Upstream.Scheme != "http" {
		// https (or anything else): http.Transport's job. Nothing is
		// counted yet; Serve decides again and counts it.
		return false
	}
	h.record(t, out)
	if out.status != 0 {
		answerError(c, out.status, out.code)
		return true
	}
	d := out.d
	dropCredentials(req.Header)
	req.Query = stripQuery(req.Query)
	// The path to send upstream: for path routing, the rest after
	// /d/<project>/<deployment>.
	req.Path = t.Path
	var scan *tally.Scanner
	if h.cfg.Usage != nil {
		scan = scanners.Get().(*tally.Scanner)
		scan.Reset()
		req.Tap = scan
		defer scanners.Put(scan)
	}
	res := c.Forward(req, d.Upstream)
	h.cfg.Metrics.Upstream(res.Waited)
	h.forwarded(out, res, scan)
	switch {
	case res.Err == nil:
	case res.Answered:
		// The response was cut short; the connection is closed.
		h.cfg.Log.Debug("proxied response cut short", "project", t.Project, "deployment", t.Deployment, "client_gone", res.ClientGone, "err", res.Err)
	case res.ClientGone:
		h.cfg.Metrics.UpstreamError(true)
		h.cfg.Log.Debug("client canceled a proxied request", "project", t.Project, "deployment", t.Deployment)
	case errors.Is(res.Err, bounds.ErrBodyTimeout):
		h.cfg.Log.Debug("request body timed out", "project", t.Project, "deployment", t.Deployment)
		answerError(c, http.StatusRequestTimeout, CodeRequestTimeout)
	case errors.Is(res.Err, keepalive.ErrHeadTimeout):
		h.cfg.Metrics.UpstreamError(false)
		h.logUpstreamFailure(t, d.Upstream.Host, res.Err)
		answerError(c, http.StatusGatewayTimeout, CodeUpstreamTimeout)
	default:
		h.cfg.Metrics.UpstreamError(false)
		h.logUpstreamFailure(t, d.Upstream.Host, res.Err)
		answerError(c, http.StatusBadGateway, CodeUpstreamUnavailable)
	}
	return true
}

// forwarded counts a request the fast path forwarded, by what its client
// got, and the tokens its upstream reported.
func (h *Handler) forwarded(out outcome, res h1.Result, scan *tally.Scanner) {
	status := res.Status
	switch {
	case res.Answered:
	case res.ClientGone:
		status = 0
	case errors.Is(res.Err, bounds.ErrBodyTimeout):
		status = http.StatusRequestTimeout
	case errors.Is(res.Err, keepalive.ErrHeadTimeout):
		status = http.StatusGatewayTimeout
	default:
		status = http.StatusBadGateway
	}
	h.answered(out, status)
	if scan != nil {
		h.tokens(out, scan)
	}
}

// dropCredentials marks every field that must not go upstream: no key
// of ours goes upstream, wherever auth is off too (credentials.go, as
// Serve's stripCredentials). The rule itself (credentialField) is on
// names and values, not on the parser's types.
func dropCredentials(fields []h1.Field) {
	for i := range fields {
		if fl := &fields[i]; !fl.Drop && credentialField(fl.Name, fl.Value) {
			fl.Drop = true
		}
	}
}

// fieldCredentials is credentials for a fast-path request: X-API-Key (its
// first field, when not empty), else a well-formed infergate key in the
// first Authorization field's Bearer token.
func fieldCredentials(req *h1.Request) string {
	if v, ok := req.Get("X-Api-Key"); ok && v != "" {
		return v
	}
	if v, ok := req.Get("Authorization"); ok {
		return bearerKey(v)
	}
	return ""
}

// DialUpstream implements h1.Dialer: the fast path's upstream connections
// are made as Serve's are, with the upstream policy checked.
func (f *FastPath) DialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	return f.h.dial(ctx, network, addr)
}
