package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/services/internal/adminauth"
)

// Cookies. Both are HttpOnly and SameSite=Strict, scoped to the console's
// path, and Secure when the console is served over TLS.
const (
	// sessionCookie holds the signed-in admin token. The console keeps no
	// session state: the token is the session, checked on every request
	// by the API it is passed on to.
	sessionCookie = "infergate_console"
	// signinCookie holds a random value that the sign-in form's CSRF
	// token is bound to, before there is a session.
	signinCookie = "infergate_console_signin"
)

// errCSRF is the 403 of a state-changing request without a valid token.
var errCSRF = errors.New("console: missing or invalid CSRF token; reload the page and try again")

// session is a signed-in admin.
type session struct {
	token     string
	principal adminauth.Principal
	csrf      string
}

// auth puts the session's token on a request to the public API.
func auth[T any](s *session, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+s.token)
	return req
}

// csrfToken binds a form to a secret the attacker cannot read: the
// session's admin token, or before sign-in the signin cookie. It is an
// HMAC keyed by that secret, so no state is kept and every process that
// hosts the console accepts every other one's forms.
func csrfToken(secret, purpose string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("infergate-console-csrf:" + purpose))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func validCSRF(secret, purpose, got string) bool {
	if secret == "" || got == "" {
		return false
	}
	return hmac.Equal([]byte(csrfToken(secret, purpose)), []byte(got))
}

// session reads the session cookie and authenticates it against the
// control plane's admin tokens. The API checks the token again on every
// call; this only decides between a page and the sign-in form.
func (c *Console) session(r *http.Request) (*session, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, false
	}
	p, err := c.tokens.Authenticate(ck.Value)
	if err != nil {
		return nil, false
	}
	return &session{token: ck.Value, principal: p, csrf: csrfToken(ck.Value, "session")}, true
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     Path,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil || c.secure,
		SameSite: http.SameSiteStrictMode,
	})
}

// signinSecret returns the signin cookie's value, setting a fresh one
// when the browser has none.
func (c *Console) signinSecret(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(signinCookie); err == nil && len(ck.Value) >= 32 {
		return ck.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	c.setCookie(w, r, signinCookie, v, 3600)
	return v
}

// checkPost guards every state-changing request: the browser's own
// cross-origin signals first (Sec-Fetch-Site, Origin), then the form's
// CSRF token, which must match the session (or, for sign-in, the signin
// cookie).
func (c *Console) checkPost(r *http.Request, s *session) error {
	if err := c.crossOrigin.Check(r); err != nil {
		return errCSRF
	}
	got := r.PostFormValue("csrf")
	if s != nil {
		if !validCSRF(s.token, "session", got) {
			return errCSRF
		}
		return nil
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || !validCSRF(ck.Value, "signin", got) {
		return errCSRF
	}
	return nil
}
