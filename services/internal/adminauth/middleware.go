package adminauth

import (
	"encoding/json"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// NewMiddleware checks the admin token from the request's headers alone,
// before any handler reads, decompresses or decodes the body: a caller
// without a valid token costs the server a header lookup and a hash, not
// a decompressed message. Requests whose path starts with one of open
// (gRPC health) pass without a token.
//
// A refusal is unauthenticated in the caller's protocol — Connect (JSON,
// HTTP 401), gRPC or gRPC-Web (grpc-status 16), and for anything else
// (the REST surface) HTTP 401 with the REST error body (WriteRESTError) —
// and on HTTP/1.x it also closes the connection, so the server never
// reads the unsent body to keep the connection for another request.
//
// The principal travels in the request's context; the interceptor
// (NewInterceptor) uses it for the per-project scope check, which needs
// the decoded message.
func NewMiddleware(tokens *Tokens, next http.Handler, open ...string) http.Handler {
	return &middleware{tokens: tokens, next: next, open: open, errors: connect.NewErrorWriter()}
}

type middleware struct {
	tokens *Tokens
	next   http.Handler
	open   []string
	errors *connect.ErrorWriter
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, prefix := range m.open {
		if strings.HasPrefix(r.URL.Path, prefix) {
			m.next.ServeHTTP(w, r)
			return
		}
	}
	p, err := m.tokens.authenticateHeader(r.Header)
	if err != nil {
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="infergate"`)
		if !isRPC(r) || !m.errors.IsSupported(r) {
			WriteRESTError(w, connect.CodeUnauthenticated, err.Error())
			return
		}
		_ = m.errors.Write(w, r, connect.NewError(connect.CodeUnauthenticated, err))
		return
	}
	m.next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
}

// isRPC tells a Connect, gRPC or gRPC-Web call, whose path is
// /<package.Service>/<Method>, from a REST request: a Connect unary call
// and a REST POST can both be JSON, but no REST route is two segments
// with a dot in the first.
func isRPC(r *http.Request) bool {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return true
	}
	service, method, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return ok && strings.Contains(service, ".") && method != "" && !strings.Contains(method, "/")
}

// authenticateHeader finds the principal of "Authorization: Bearer
// <token>", or of "Authorization: APIKey <token>", the managed platform's
// form (its scripts send that); the scheme is case-insensitive.
func (t *Tokens) authenticateHeader(header interface{ Get(string) string }) (Principal, error) {
	scheme, token, ok := strings.Cut(header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "APIKey") {
		return Principal{}, ErrUnauthenticated
	}
	return t.Authenticate(strings.TrimSpace(token))
}

// WriteRESTError answers a REST request with the one error shape of the
// REST surface, the one the transcoder writes for a failed call: the JSON
// of google.rpc.Status, {"code": <gRPC code>, "message": "…", "details":
// []}, with the HTTP status of that code (401 for unauthenticated, …).
func WriteRESTError(w http.ResponseWriter, code connect.Code, message string) {
	body, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details []any  `json:"details"`
	}{int(code), message, []any{}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(RESTStatus(code))
	_, _ = w.Write(body)
}

// RESTStatus is the HTTP status of a code on the REST surface, as the
// transcoder maps it (google.rpc.Code's documented mapping).
func RESTStatus(code connect.Code) int {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}
