// Package console is infergate's web console: the portal pages users know
// from a managed inference platform (API Keys with its "Add API Key"
// dialog, Deployments with "Create deployment" and its "Additional
// options", a deployment's "API Keys authentication" tab with "Save
// changes", History, Check access, Audit), served at /console/ on the
// control-plane port.
//
// Pages are rendered on the server with html/template from embedded
// files; a small script only enhances them (modal dialogs, the Copy
// button, live deployment status), and every page works without it.
//
// The console has no access of its own: every page calls the public
// Connect API (KeyService, DeploymentService, AuditService) with the
// signed-in admin's token, which lives in an HttpOnly, SameSite=Strict
// cookie. What a token may not see through the API, it cannot see here.
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/adminauth"
)

// Path is where the console is mounted; the control plane lets it through
// without an Authorization header, since the console signs in with its
// own cookie and passes the token on to the API.
const Path = "/console/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what the console needs.
type Config struct {
	// KeysURL, DeploymentsURL and AuditURL are the base URLs of the
	// public Connect APIs (all the same in the one-process stack).
	KeysURL, DeploymentsURL, AuditURL string
	// HTTPClient calls them; default a client of its own.
	HTTPClient *http.Client
	// Tokens are the control plane's admin tokens: sign-in checks a token
	// and lists its projects for the project switcher.
	Tokens *adminauth.Tokens
	// Secure marks the cookies Secure even when the console sees plain
	// HTTP (behind a TLS-terminating proxy). Under TLS they always are.
	Secure bool
	// Log receives errors (never a token or secret); default discards.
	Log *slog.Logger
}

// Validate reports every missing field at once.
func (c Config) Validate() error {
	var errs []error
	if c.KeysURL == "" || c.DeploymentsURL == "" || c.AuditURL == "" {
		errs = append(errs, errors.New("console: KeysURL, DeploymentsURL and AuditURL are required"))
	}
	if c.Tokens == nil {
		errs = append(errs, errors.New("console: Tokens is required"))
	}
	return errors.Join(errs...)
}

// Console serves the pages.
type Console struct {
	keys        keyv1connect.KeyServiceClient
	deployments deploymentv1connect.DeploymentServiceClient
	audit       auditv1connect.AuditServiceClient
	tokens      *adminauth.Tokens
	secure      bool
	log         *slog.Logger
	crossOrigin *http.CrossOriginProtection
	pages       map[string]*template.Template
	mux         *http.ServeMux
}

// New builds the console. Mount it at Path.
func New(cfg Config) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{
		keys:        keyv1connect.NewKeyServiceClient(cfg.HTTPClient, cfg.KeysURL),
		deployments: deploymentv1connect.NewDeploymentServiceClient(cfg.HTTPClient, cfg.DeploymentsURL),
		audit:       auditv1connect.NewAuditServiceClient(cfg.HTTPClient, cfg.AuditURL),
		tokens:      cfg.Tokens,
		secure:      cfg.Secure,
		log:         cfg.Log,
		crossOrigin: http.NewCrossOriginProtection(),
		pages:       pages,
	}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /console/{$}", c.home)
	m.HandleFunc("GET /console/signin", c.signinPage)
	m.HandleFunc("POST /console/signin", c.signin)
	m.HandleFunc("POST /console/signout", c.signedIn(c.signout))
	m.HandleFunc("GET /console/switch", c.signedIn(c.switchProject))
	m.HandleFunc("GET /console/p/{project}/keys", c.signedIn(c.keysPage))
	m.HandleFunc("POST /console/p/{project}/keys", c.signedIn(c.createKey))
	m.HandleFunc("POST /console/p/{project}/keys/{name}/update", c.signedIn(c.updateKey))
	m.HandleFunc("POST /console/p/{project}/keys/{name}/delete", c.signedIn(c.deleteKey))
	m.HandleFunc("POST /console/p/{project}/keys/{name}/rotate", c.signedIn(c.rotateKey))
	m.HandleFunc("GET /console/p/{project}/deployments", c.signedIn(c.deploymentsPage))
	m.HandleFunc("GET /console/p/{project}/deployments/new", c.signedIn(c.newDeploymentPage))
	m.HandleFunc("POST /console/p/{project}/deployments", c.signedIn(c.createDeployment))
	m.HandleFunc("GET /console/p/{project}/deployments/{name}", c.signedIn(c.deploymentPage))
	m.HandleFunc("POST /console/p/{project}/deployments/{name}/auth", c.signedIn(c.saveAuth))
	m.HandleFunc("GET /console/p/{project}/audit", c.signedIn(c.auditPage))
	c.mux = m
}

// ServeHTTP answers every console request with headers that keep its
// pages out of caches, frames and other origins' scripts.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if !strings.HasPrefix(r.URL.Path, "/console/static/") {
		// Pages may show a secret once; no cache may keep one.
		h.Set("Cache-Control", "no-store")
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	c.mux.ServeHTTP(w, r)
}

// signedIn runs h with the session, checking the CSRF token of a POST;
// without a session a GET goes to the sign-in page.
func (c *Console) signedIn(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.session(r)
		if !ok {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, Path+"signin", http.StatusSeeOther)
				return
			}
			http.Error(w, "Forbidden: sign in first.", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			if err := c.checkPost(r, s); err != nil {
				http.Error(w, "Forbidden: "+err.Error(), http.StatusForbidden)
				return
			}
		}
		h(w, r, s)
	}
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	s, ok := c.session(r)
	if !ok {
		http.Redirect(w, r, Path+"signin", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, projectURL(defaultProject(s.principal), "keys"), http.StatusSeeOther)
}

// defaultProject is where sign-in lands: the token's first project, or
// "default" for a token of every project.
func defaultProject(p adminauth.Principal) string {
	for _, proj := range p.Projects() {
		if proj != adminauth.AllProjects {
			return proj
		}
	}
	return "default"
}

func projectURL(project, section string) string {
	return Path + "p/" + project + "/" + section
}

// view is what every page template gets.
type view struct {
	Title   string
	Section string // keys, deployments, audit
	// URL is the page's own address when it answers a POST, so that a
	// reload loads it anew instead of posting again.
	URL     string
	Project string
	// Projects the switcher offers; AnyProject lets the admin type one.
	Projects   []string
	AnyProject bool
	Admin      string
	CSRF       string
	Notice     string
	Errors     *formErrors
	Data       any
}

func (c *Console) view(s *session, r *http.Request, title, section string) *view {
	v := &view{Title: title, Section: section, Project: r.PathValue("project"), Errors: &formErrors{}}
	if s != nil {
		v.Admin = s.principal.Name
		v.CSRF = s.csrf
		for _, p := range s.principal.Projects() {
			if p == adminauth.AllProjects {
				v.AnyProject = true
			} else {
				v.Projects = append(v.Projects, p)
			}
		}
	}
	return v
}

func (c *Console) render(w http.ResponseWriter, status int, page string, v *view) {
	t, ok := c.pages[page]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", v); err != nil {
		c.log.Error("console: render", "page", page, "err", err)
		http.Error(w, "The page could not be rendered.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail renders an API error that stops a whole page: 403 when the token
// may not use the project, else the error's message.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, section string, err error) {
	v := c.view(s, r, "Error", section)
	v.Errors = apiErrors(err, nil, "")
	status := http.StatusBadGateway
	switch {
	case isCode(err, connect.CodePermissionDenied):
		status = http.StatusForbidden
		v.Errors.General = "This admin token may not use project “" + v.Project + "”."
	case isCode(err, connect.CodeNotFound):
		status = http.StatusNotFound
	case isCode(err, connect.CodeUnauthenticated):
		status = http.StatusUnauthorized
	case isCode(err, connect.CodeInvalidArgument):
		status = http.StatusBadRequest
	case isCode(err, connect.CodeFailedPrecondition):
		status = http.StatusConflict
	default:
		c.log.Warn("console: API call failed", "section", section, "err", err)
	}
	c.render(w, status, "error", v)
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.session(r); ok {
		c.home(w, r)
		return
	}
	v := c.view(nil, r, "Sign in", "")
	v.CSRF = csrfToken(c.signinSecret(w, r), "signin")
	c.render(w, http.StatusOK, "signin", v)
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if err := c.checkPost(r, nil); err != nil {
		http.Error(w, "Forbidden: "+err.Error(), http.StatusForbidden)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	p, err := c.tokens.Authenticate(token)
	if err != nil {
		v := c.view(nil, r, "Sign in", "")
		v.CSRF = csrfToken(c.signinSecret(w, r), "signin")
		v.Errors.set("token", "This admin token is not accepted. Check it and try again.")
		c.render(w, http.StatusUnauthorized, "signin", v)
		return
	}
	c.setCookie(w, r, sessionCookie, token, 12*3600)
	c.setCookie(w, r, signinCookie, "", -1)
	c.log.Info("console: signed in", "admin", p.Name)
	http.Redirect(w, r, projectURL(defaultProject(p), "keys"), http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) {
	c.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, Path+"signin", http.StatusSeeOther)
}

// switchProject sends the admin to the same section of another project.
// The project is checked by the API on the page it lands on.
func (c *Console) switchProject(w http.ResponseWriter, r *http.Request, s *session) {
	project := strings.TrimSpace(r.URL.Query().Get("project"))
	section := r.URL.Query().Get("section")
	if section != "deployments" && section != "audit" {
		section = "keys"
	}
	if project == "" || strings.ContainsAny(project, "/?#%") {
		project = defaultProject(s.principal)
	}
	http.Redirect(w, r, projectURL(project, section), http.StatusSeeOther)
}

func isCode(err error, code connect.Code) bool { return connect.CodeOf(err) == code }

// apiTimeout bounds a page's API calls; writes wait up to 2 s for the
// gateways' receipts.
const apiTimeout = 10 * time.Second

// ctx bounds a page's API calls.
func ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), apiTimeout)
}
