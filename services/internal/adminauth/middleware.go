package adminauth

import (
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
// HTTP 401), gRPC or gRPC-Web (grpc-status 16) — and on HTTP/1.x it also
// closes the connection, so the server never reads the unsent body to
// keep the connection for another request.
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
		_ = m.errors.Write(w, r, connect.NewError(connect.CodeUnauthenticated, err))
		return
	}
	m.next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
}

// authenticateHeader finds the principal of "Authorization: Bearer <token>".
func (t *Tokens) authenticateHeader(header interface{ Get(string) string }) (Principal, error) {
	token, ok := strings.CutPrefix(header.Get("Authorization"), "Bearer ")
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	return t.Authenticate(strings.TrimSpace(token))
}
