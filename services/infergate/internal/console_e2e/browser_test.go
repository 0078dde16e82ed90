// Package console_e2e_test drives the web console in a real headless
// Chromium (chromedp) against a real one-process stack (devstack.Run) and
// its gateway, through the whole story of the platform's document on
// deployments with API-key authentication (issue 14).
//
// Without Chromium the test skips, unless INFERGATE_TEST_REQUIRE_BROWSER=1
// (set by .ci/run), which makes it fail. With
// INFERGATE_CONSOLE_SCREENSHOTS=<dir> it writes a 1280×800 screenshot of
// every page there (docs/console/ is made that way: `make console-screenshots`).
package console_e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// storyTimeout bounds the whole story; every wait inside is on a
// condition, never a sleep.
const storyTimeout = 90 * time.Second

// chromium finds the browser, or skips (fails in CI) without one.
func chromium(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("INFERGATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	msg := "no Chromium found (install Debian's chromium package, or set INFERGATE_CHROMIUM); the console's browser test needs one"
	if os.Getenv("INFERGATE_TEST_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + " and INFERGATE_TEST_REQUIRE_BROWSER=1")
	}
	t.Skip(msg)
	return ""
}

// logBuffer keeps the stack's log, to check that no secret reached it.
type logBuffer struct {
	mu sync.Mutex // mu protects b
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type stack struct {
	*devstack.Stack
	ops, teamA string // admin tokens: every project; project team-a only
	gwAddr     string
	upstream   string
	logs       *logBuffer
}

// startStack runs the one-process stack with two admin tokens and a demo
// model upstream of its own.
func startStack(t *testing.T) *stack {
	t.Helper()
	ops, opsEntry, err := adminauth.New("ops", []string{adminauth.AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	teamA, teamEntry, err := adminauth.New("team-a-admin", []string{"team-a"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data, _ := json.Marshal([]adminauth.Entry{opsEntry, teamEntry})
	tokensFile := filepath.Join(dir, "admin-tokens.json")
	if err := os.WriteFile(tokensFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer((&demomodel.Server{}).Handler(""))
	t.Cleanup(up.Close)

	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *devstack.Stack, 1)
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(ctx, devstack.Config{
			DataDir: filepath.Join(dir, "data"), APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0",
			AdminTokensFile: tokensFile, StatusInterval: 50 * time.Millisecond, Out: io.Discard,
			Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		}, func(st *devstack.Stack) { ready <- st })
	}()
	var st *devstack.Stack
	select {
	case st = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("devstack.Run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatal("stack not ready after 30s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devstack.Run: %v", err)
		}
	})
	u, err := url.Parse(st.GatewayURL)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{Stack: st, ops: ops, teamA: teamA, gwAddr: net.JoinHostPort("127.0.0.1", u.Port()), upstream: up.URL, logs: logs}
}

// chat sends a chat completion through the gateway (path routing), with
// the key in X-API-Key when key is not empty, and returns the status.
func (s *stack) chat(t *testing.T, project, deployment, key string) int {
	t.Helper()
	body := `{"model":"` + demomodel.ModelID + `","messages":[{"role":"user","content":"Hello"}]}`
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.gwAddr+"/d/"+project+"/"+deployment+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// browser drives one tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // screenshot directory, or ""
}

func newBrowser(t *testing.T, exe, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, storyTimeout)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, base: strings.TrimSuffix(base, "/")}
	if dir := os.Getenv("INFERGATE_CONSOLE_SCREENSHOTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b.shot = dir
	}
	// The first action starts the browser, which lives as long as the
	// context it runs on: run it on b.ctx, not a step's.
	if err := chromedp.Do(b.ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return b
}

// stepTimeout bounds one step, so that a step that waits in vain fails
// with the page it was waiting on.
const stepTimeout = 15 * time.Second

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fatal(err)
	}
}

func (b *browser) fatal(err error) {
	b.t.Helper()
	page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.location.href + "\n" + document.body.innerText`))
	b.t.Fatalf("browser: %v\npage: %s", err, page)
}

func run[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fatal(err)
	}
	return v
}

// navigateAndWait runs steps that load a new page (a form's submit, a
// link) and returns once the new document has loaded.
func (b *browser) navigateAndWait(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	trigger := chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		for _, step := range steps {
			if _, err := step(ctx, tg); err != nil {
				return chromedp.Void{}, err
			}
		}
		return chromedp.Void{}, nil
	})
	run(b, chromedp.WaitEvent(page.LoadEventFired, nil, trigger))
}

// waitJS waits until a JavaScript condition holds in the page.
func (b *browser) waitJS(cond string) {
	b.t.Helper()
	run(b, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(20*time.Millisecond)))
}

// text is the visible text of an element: "#id" by id, else a search
// (XPath here).
func (b *browser) text(sel string) string {
	b.t.Helper()
	if id, ok := strings.CutPrefix(sel, "#"); ok {
		return run(b, chromedp.Text(chromedp.ID(id), chromedp.NodeVisible))
	}
	return run(b, chromedp.Text(sel, chromedp.NodeVisible))
}

func (b *browser) bodyText() string {
	b.t.Helper()
	return run(b, chromedp.Evaluate[string](`document.body.innerText`))
}

func (b *browser) html() string {
	b.t.Helper()
	return run(b, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
}

// screenshot checks what every page must have — a label for every
// input — and, with INFERGATE_CONSOLE_SCREENSHOTS, saves the viewport.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	unlabelled := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll(
		'input:not([type=hidden]), select, textarea')).filter(e => e.labels.length === 0).map(e => e.id || e.name)`))
	if len(unlabelled) > 0 {
		b.t.Errorf("page %s: inputs without a label: %q", name, unlabelled)
	}
	if b.shot == "" {
		return
	}
	png := run(b, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(b.shot, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// Selectors by what a user reads: a field by its label's text, a button
// or link by its own.
func field(label string) string {
	return fmt.Sprintf(`//*[@id=(//label[normalize-space()=%q]/@for)]`, label)
}

// dialogField is a field by its label in the open dialog.
func dialogField(label string) string {
	return fmt.Sprintf(`//dialog[@open]//*[@id=(//dialog[@open]//label[normalize-space()=%q]/@for)]`, label)
}

func button(text string) string { return fmt.Sprintf(`//button[normalize-space()=%q]`, text) }
func link(text string) string   { return fmt.Sprintf(`//a[normalize-space()=%q]`, text) }

// checkbox is a checkbox inside its label, in an optional container.
func checkbox(label string) string {
	return fmt.Sprintf(`//label[contains(normalize-space(), %q)]/input[@type="checkbox"]`, label)
}

func fieldError(id string) string { return "#" + id + "-error" }

func TestConsoleStory(t *testing.T) {
	exe := chromium(t)
	s := startStack(t)
	b := newBrowser(t, exe, s.ConsoleURL)
	start := time.Now()
	const project = "default"

	// Sign in: a wrong token is refused at its field; the right one,
	// typed and submitted with the keyboard, lands on API Keys.
	b.do(chromedp.Navigate(s.ConsoleURL))
	b.do(chromedp.WaitVisible(field("Admin token")))
	b.screenshot("signin")
	b.navigateAndWait(chromedp.SendKeys(field("Admin token"), "igadm_wrong"+kb.Enter))
	if got := b.text(fieldError("token")); !strings.Contains(got, "not accepted") {
		t.Errorf("wrong token: error %q", got)
	}
	b.navigateAndWait(chromedp.SendKeys(field("Admin token"), s.ops+kb.Enter))
	b.do(chromedp.WaitVisible(`//h1[normalize-space()="API Keys"]`))
	cookies := run(b, chromedp.Action[network.GetCookiesResult](func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
	}))
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Value == s.ops {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict", session)
	}

	// "Create API Key" opens "Add API Key"; each broken rule is shown at
	// its field.
	b.do(chromedp.Click(link("Create API Key")), chromedp.WaitVisible(`//dialog//h2[normalize-space()="Add API Key"]`))
	b.do(chromedp.SendKeys(field("Name"), "ab"),
		chromedp.SetValue(field("Description"), strings.Repeat("d", 301)),
		chromedp.Click(checkbox("Never expire")),
		chromedp.SetValue(field("Expires at"), "2020-01-01T00:00"))
	b.navigateAndWait(chromedp.Click(button("Add")))
	for id, want := range map[string]string{"name": "not a valid key name", "description": "at most 300", "expires_at": "not in the future"} {
		if got := b.text(fieldError(id)); !strings.Contains(got, want) {
			t.Errorf("field %s: error %q, want it to say %q", id, got, want)
		}
	}
	b.screenshot("add-api-key-errors")

	// A valid key: its secret is shown once, with Copy. The form is
	// filled and sent with the keyboard: Space ticks "Never expire", Enter
	// in the name submits.
	b.do(chromedp.Clear(field("Name")), chromedp.SetValue(field("Description"), "the chat front end"),
		chromedp.Focus(checkbox("Never expire")), chromedp.KeyEvent(" "),
		chromedp.SendKeys(field("Name"), "chat-app"))
	b.screenshot("add-api-key")
	b.navigateAndWait(chromedp.SendKeys(field("Name"), kb.Enter))
	b.do(chromedp.WaitVisible(`//dialog//*[contains(., "cannot be retrieved later")]`))
	secret := run(b, chromedp.Value(field("API key")))
	if !strings.HasPrefix(secret, "ig_") {
		t.Fatalf("secret %q", secret)
	}
	b.do(chromedp.Click(button("Copy")))
	b.waitJS(`document.getElementById("copy-status").textContent !== ""`)
	b.screenshot("api-key-created")
	b.do(chromedp.Reload(), chromedp.WaitVisible(`//tr[@data-key="chat-app"]`))
	if strings.Contains(b.html(), secret) {
		t.Fatal("the secret is still on the page after a reload")
	}
	row := b.text(`//tr[@data-key="chat-app"]`)
	if !strings.Contains(row, "the chat front end") || !strings.Contains(row, "Never") || !strings.Contains(row, "ig_…"+secret[len(secret)-4:]) {
		t.Errorf("key row %q", row)
	}
	b.screenshot("api-keys")

	// A taken name is shown at the name field.
	b.do(chromedp.Click(link("Create API Key")), chromedp.WaitVisible(field("Name")), chromedp.SendKeys(field("Name"), "chat-app"))
	b.navigateAndWait(chromedp.Click(button("Add")))
	if got := b.text(fieldError("name")); !strings.Contains(got, "taken") {
		t.Errorf("taken name: error %q", got)
	}

	// Escape closes the dialog (keyboard), back to the plain page.
	b.navigateAndWait(chromedp.KeyEvent(kb.Escape))

	// Deployments: "Create deployment", errors at their fields, then
	// "Additional options" → "Enable API Key authentication" → "API keys".
	b.navigateAndWait(chromedp.Click(link("Deployments")))
	b.navigateAndWait(chromedp.Click(link("Create deployment")))
	b.do(chromedp.SendKeys(field("Name"), "Chat_Bad"), chromedp.SendKeys(field("Model"), demomodel.ModelID),
		chromedp.SendKeys(field("Upstream URL"), "ftp://nowhere"), chromedp.SendKeys(field("Regions"), "local, EU"))
	b.navigateAndWait(chromedp.Click(button("Deploy model")))
	for id, want := range map[string]string{"name": "not a DNS label", "upstream_url": "not an absolute http(s) URL", "regions": `"EU" is not a DNS label`} {
		if got := b.text(fieldError(id)); !strings.Contains(got, want) {
			t.Errorf("field %s: error %q, want it to say %q", id, got, want)
		}
	}
	b.screenshot("create-deployment-errors")
	b.do(chromedp.Clear(field("Name")), chromedp.SendKeys(field("Name"), "chat"),
		chromedp.Clear(field("Upstream URL")), chromedp.SendKeys(field("Upstream URL"), s.upstream),
		chromedp.Clear(field("Regions")))
	b.do(chromedp.Click(`//summary[normalize-space()="Additional options"]`),
		chromedp.WaitNotVisible(`//fieldset[legend="API keys"]`),
		chromedp.Click(checkbox("Enable API Key authentication")),
		chromedp.WaitVisible(`//fieldset[legend="API keys"]`),
		chromedp.Click(checkbox("chat-app")))
	if visible := run(b, chromedp.Evaluate[bool](`!document.getElementById("name-error").hidden`)); visible {
		t.Error("the name's error is still shown after the name was corrected")
	}
	b.screenshot("create-deployment")
	b.navigateAndWait(chromedp.Click(button("Deploy model")))

	// Deploying → Deployed without a reload.
	b.do(chromedp.Evaluate[chromedp.Void](`window.__igSamePage = true`))
	b.do(chromedp.WaitVisible(`//tr[@data-deployment="chat"]//*[normalize-space()="Deployed"]`))
	if !run(b, chromedp.Evaluate[bool](`window.__igSamePage === true`)) {
		t.Error("the page reloaded to show Deployed")
	}
	row = b.text(`//tr[@data-deployment="chat"]`)
	for _, want := range []string{demomodel.ModelID, "On", "chat-app", "model-chat.default.localhost"} {
		if !strings.Contains(row, want) {
			t.Errorf("deployment row %q lacks %q", row, want)
		}
	}
	b.screenshot("deployments")

	// The copied secret opens the endpoint.
	waitStatus(t, func() int { return s.chat(t, project, "chat", secret) }, http.StatusOK, "request with the linked key")
	if got := s.chat(t, project, "chat", ""); got != http.StatusUnauthorized {
		t.Errorf("request without a key: %d, want 401", got)
	}

	// "Rotate": the new secret is shown once, with when the old one
	// stops; both get in during the grace period.
	b.navigateAndWait(chromedp.Click(link("API Keys")))
	b.navigateAndWait(chromedp.Click(`//tr[@data-key="chat-app"]//a[normalize-space()="Rotate"]`))
	b.do(chromedp.WaitVisible(`//dialog//h2[contains(., "Rotate API key")]`), chromedp.SetValue("#grace", "1h"))
	b.screenshot("rotate-api-key")
	b.navigateAndWait(chromedp.Click(button("Rotate key")))
	b.do(chromedp.WaitVisible(`//dialog//*[contains(., "cannot be retrieved later")]`))
	oldSecret := secret
	secret = run(b, chromedp.Value(field("New API key")))
	if !strings.HasPrefix(secret, "ig_") || secret == oldSecret {
		t.Fatalf("rotated secret %q", secret)
	}
	if got := b.text("#old-key-stops"); !strings.Contains(got, "ig_…"+oldSecret[len(oldSecret)-4:]) || !strings.Contains(got, "keeps working until") {
		t.Errorf("rotation dialog says %q about the old key", got)
	}
	b.screenshot("api-key-rotated")
	waitStatus(t, func() int { return s.chat(t, project, "chat", secret) }, http.StatusOK, "request with the new secret")
	if got := s.chat(t, project, "chat", oldSecret); got != http.StatusOK {
		t.Errorf("request with the old secret during its grace: %d, want 200", got)
	}
	b.do(chromedp.Reload(), chromedp.WaitVisible(`//tr[@data-key="chat-app"]`))
	if html := b.html(); strings.Contains(html, secret) || strings.Contains(html, oldSecret) {
		t.Fatal("a secret is still on the page after a reload")
	}
	if row := b.text(`//tr[@data-key="chat-app"]`); !strings.Contains(row, "ig_…"+secret[len(secret)-4:]) || !strings.Contains(row, "works until") {
		t.Errorf("rotated key row %q", row)
	}
	b.navigateAndWait(chromedp.Click(link("Deployments")))

	// "API Keys authentication": deselect the key, "Save changes", see
	// the receipt; the next request is refused.
	b.navigateAndWait(chromedp.Click(link("chat")))
	b.do(chromedp.WaitVisible(`//nav//a[normalize-space()="API Keys authentication"][@aria-current="page"]`))
	b.screenshot("deployment-auth")
	b.do(chromedp.Click(checkbox("chat-app")))
	b.navigateAndWait(chromedp.Click(button("Save changes")))
	if got := b.text("#receipt"); !strings.Contains(got, "Applied at 1/1 gateways in") {
		t.Errorf("receipt %q", got)
	}
	b.screenshot("deployment-auth-saved")
	if got := s.chat(t, project, "chat", secret); got != http.StatusUnauthorized {
		t.Errorf("request with the unlinked key: %d, want 401", got)
	}
	if got := s.chat(t, project, "chat", oldSecret); got != http.StatusUnauthorized {
		t.Errorf("request with the unlinked key's old secret: %d, want 401", got)
	}

	// Authentication off: anyone gets in.
	b.do(chromedp.Click(checkbox("Enable API Key authentication")))
	b.navigateAndWait(chromedp.Click(button("Save changes")))
	if got := b.text("#receipt"); !strings.Contains(got, "Applied at 1/1 gateways") {
		t.Errorf("receipt %q", got)
	}
	if got := s.chat(t, project, "chat", ""); got != http.StatusOK {
		t.Errorf("request without a key, auth off: %d, want 200", got)
	}

	// Code examples, History, Check access.
	b.navigateAndWait(chromedp.Click(link("Code examples")))
	code := b.text("#snippet-curl")
	if !strings.Contains(code, "model-chat.default.localhost") || !strings.Contains(b.text("#snippet-python"), "extra_headers") {
		t.Errorf("curl snippet %q", code)
	}
	b.screenshot("deployment-code")
	b.navigateAndWait(chromedp.Click(link("History")))
	history := b.text("//table")
	for _, want := range []string{"DeploymentCreated", "KeyUnlinked", "DeploymentAuthDisabled"} {
		if !strings.Contains(history, want) {
			t.Errorf("history lacks %s:\n%s", want, history)
		}
	}
	b.screenshot("deployment-history")
	b.navigateAndWait(chromedp.Click(link("Check access")))
	b.do(chromedp.SendKeys(field("API key"), "chat-app"), chromedp.SendKeys(field("Secret hint"), "ig_…"+oldSecret[len(oldSecret)-4:]))
	b.navigateAndWait(chromedp.Click(button("Check")))
	if got := b.text("#check-result"); !strings.Contains(got, "Allowed") {
		// Authentication is off: every request is let in.
		t.Errorf("check access: %q", got)
	}
	b.screenshot("deployment-check-access")

	// Audit, filtered.
	b.navigateAndWait(chromedp.Click(link("Audit")))
	b.do(chromedp.SendKeys(field("Key"), "chat-app"))
	b.navigateAndWait(chromedp.Click(button("Apply filters")))
	audit := b.text("//table")
	if !strings.Contains(audit, "KeyCreated") || !strings.Contains(audit, "KeyRotated") || !strings.Contains(audit, "KeyLinked") || strings.Contains(audit, "DeploymentAuthDisabled") {
		t.Errorf("audit filtered by key:\n%s", audit)
	}
	b.screenshot("audit")

	// Edit a key's description, then delete the key after confirming.
	b.navigateAndWait(chromedp.Click(link("API Keys")))
	b.navigateAndWait(chromedp.Click(`//tr[@data-key="chat-app"]//a[normalize-space()="Edit"]`))
	b.do(chromedp.Clear(dialogField("Description")), chromedp.SendKeys(dialogField("Description"), "retired front end"))
	b.navigateAndWait(chromedp.Click(button("Save")))
	if row := b.text(`//tr[@data-key="chat-app"]`); !strings.Contains(row, "retired front end") {
		t.Errorf("edited key row %q", row)
	}
	b.navigateAndWait(chromedp.Click(`//tr[@data-key="chat-app"]//a[normalize-space()="Delete"]`))
	b.do(chromedp.WaitVisible(`//dialog//h2[contains(., "Delete API key")]`))
	b.screenshot("delete-api-key")
	b.navigateAndWait(chromedp.Click(button("Delete key")))
	if got := b.text(`//*[@role="status"][contains(., "deleted")]`); !strings.Contains(got, "Applied at 1/1 gateways") {
		t.Errorf("delete notice %q", got)
	}
	if strings.Contains(b.text("//table"), "chat-app") {
		t.Error("the deleted key is still listed")
	}

	// A token of every project types another project in the switcher.
	b.do(chromedp.SetValue(field("Project"), "team-a"))
	b.navigateAndWait(chromedp.Click(button("Switch")))
	b.do(chromedp.WaitVisible(`//h1[normalize-space()="API Keys"]`))
	if u := run(b, chromedp.Location()); !strings.HasSuffix(u, "/console/p/team-a/keys") {
		t.Errorf("switched to %s", u)
	}

	// No secret or token in any URL this browser visited. (A hint —
	// "ig_…" and four characters, shown on every key row — may be: the
	// Check access form names a secret by it.)
	hist := run(b, chromedp.NavigationEntries())
	secretShaped := regexp.MustCompile(`ig_[0-9A-Za-z]{8,}`)
	for _, e := range hist.Entries {
		if strings.Contains(e.URL, secret) || strings.Contains(e.URL, oldSecret) || strings.Contains(e.URL, s.ops) || secretShaped.MatchString(e.URL) {
			t.Errorf("URL %q carries a secret", e.URL)
		}
	}

	// A state-changing request without a valid CSRF token gets 403, with
	// the session cookie or without it.
	checkCSRF(t, s, session.Value)

	// A token scoped to team-a sees team-a only.
	b.navigateAndWait(chromedp.Click(button("Sign out")))
	b.do(chromedp.WaitVisible(field("Admin token")))
	b.navigateAndWait(chromedp.SendKeys(field("Admin token"), s.teamA+kb.Enter))
	b.do(chromedp.WaitVisible(`//h1[normalize-space()="API Keys"]`))
	options := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#project-switch option")).map(o => o.value)`))
	if len(options) != 1 || options[0] != "team-a" {
		t.Errorf("project switcher offers %q, want only team-a", options)
	}
	if strings.Contains(b.bodyText(), "chat-app") {
		t.Error("team-a's API Keys page shows default's key")
	}
	b.do(chromedp.Navigate(s.ConsoleURL + "p/default/keys"))
	body := b.bodyText()
	if !strings.Contains(body, "may not use project") || strings.Contains(body, "chat-app") {
		t.Errorf("team-a token on project default:\n%s", body)
	}
	b.do(chromedp.Navigate(s.ConsoleURL + "p/default/deployments/chat"))
	if body := b.bodyText(); strings.Contains(body, "model-chat") || !strings.Contains(body, "may not use project") {
		t.Errorf("team-a token on default's deployment:\n%s", body)
	}

	// Nothing secret in the stack's log.
	if logs := s.logs.String(); strings.Contains(logs, secret) || strings.Contains(logs, oldSecret) || strings.Contains(logs, s.ops) || strings.Contains(logs, s.teamA) {
		t.Error("a secret or admin token reached the log")
	}
	t.Logf("the story took %s", time.Since(start).Round(time.Millisecond))
}

// waitStatus repeats a request until it answers want: the gateway
// applies a deployment's Deployed status a moment after the API has it.
func waitStatus(t *testing.T, f func() int, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	got := f()
	for got != want && time.Now().Before(deadline) {
		<-tick.C
		got = f()
	}
	if got != want {
		t.Fatalf("%s: %d, want %d", what, got, want)
	}
}

// checkCSRF posts forms the way a forger would: with the session cookie
// but no CSRF token, with a wrong token, and from another origin.
func checkCSRF(t *testing.T, s *stack, token string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(s.ConsoleURL)
	jar.SetCookies(u, []*http.Cookie{{Name: "infergate_console", Value: token, Path: "/console/"}})
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values, header http.Header) int {
		req, _ := http.NewRequest(http.MethodPost, s.ConsoleURL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header[k] = v
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		name   string
		path   string
		form   url.Values
		header http.Header
	}{
		{"no token", "p/default/keys", url.Values{"name": {"forged-key"}, "never": {"1"}}, nil},
		{"wrong token", "p/default/keys", url.Values{"name": {"forged-key"}, "never": {"1"}, "csrf": {"forged"}}, nil},
		{"cross-site", "p/default/deployments/chat/auth", url.Values{"auth_enabled": {"1"}}, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		{"rotate without token", "p/default/keys/chat-app/rotate", url.Values{"grace": {"0s"}}, nil},
		{"sign-in without token", "signin", url.Values{"token": {s.ops}}, nil},
		{"sign-out without token", "signout", nil, nil},
	} {
		if got := post(tc.path, tc.form, tc.header); got != http.StatusForbidden {
			t.Errorf("CSRF %s: POST %s got %d, want 403", tc.name, tc.path, got)
		}
	}
	// Pages are never cached: one of them showed a secret.
	res, err := client.Get(s.ConsoleURL + "p/default/keys")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET keys with the session cookie: %d", res.StatusCode)
	}
}
