package cli_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/infergate/internal/cli"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/keys"
)

// loser applies a request and then drops the connection instead of
// answering — a transport error after the commit — once for each
// procedure it was told to.
type loser struct {
	mu   sync.Mutex // mu protects lose
	lose map[string]int
}

func (l *loser) next(procedure string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lose[procedure]++
}

func (l *loser) take(procedure string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lose[procedure] == 0 {
		return false
	}
	l.lose[procedure]--
	return true
}

func (l *loser) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.take(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err) // the test client speaks HTTP/1.1
		}
		conn.Close()
	})
}

// TestRetryAfterLostAnswer: the CLI sends a request id with every write
// and retries one whose answer was lost with the same id, so the control
// plane appends it once and answers as the first time — for CreateKey,
// without the secret, which the CLI reports.
func TestRetryAfterLostAnswer(t *testing.T) {
	t.Parallel()
	b := servicetest.New(t, servicetest.Memory)
	l := &loser{lose: map[string]int{}}
	url := b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		kpath, kh, err := keys.NewHandler(keys.Config{Events: b.Events, Reads: b.Reads, Projector: b.Projector, Log: b.Logger()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		dpath, dh, err := deployments.NewHandler(deployments.Config{
			Events: b.Events, Reads: b.Reads, Projector: b.Projector, Log: b.Logger(), GatewayURL: "http://localhost:8000",
			Upstreams: servicetest.Upstreams(),
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{kpath: l.wrap(kh), dpath: l.wrap(dh)}
	})
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		var out, errs bytes.Buffer
		args = append(args, "--api-url", url, "--token", b.OpsToken, "-p", "team-a", "--data-dir", t.TempDir())
		code = cli.Main(args, &out, &errs)
		return out.String(), errs.String(), code
	}
	records := func(typ, name string) int {
		t.Helper()
		recs, _, err := b.Events.Load(t.Context(), eventstore.Aggregate{Project: "team-a", Type: typ, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}

	l.next(keyv1connect.KeyServiceCreateKeyProcedure)
	_, stderr, code := run("keys", "create", "lost-answer")
	if code != 1 || !strings.Contains(stderr, "secret cannot be shown again") || !strings.Contains(stderr, "infergate keys delete lost-answer") {
		t.Errorf("create whose answer was lost: exit %d, stderr:\n%s\nwant exit 1 saying the secret is lost and what to do", code, stderr)
	}
	if n := records(eventstore.TypeKey, "lost-answer"); n != 1 {
		t.Errorf("the key's subject holds %d messages after a retried create, want 1", n)
	}

	l.next(keyv1connect.KeyServiceUpdateKeyProcedure)
	stdout, stderr, code := run("keys", "update", "lost-answer", "--description", "after-retry")
	if code != 0 || !strings.Contains(stdout, "after-retry") {
		t.Errorf("update whose answer was lost: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if n := records(eventstore.TypeKey, "lost-answer"); n != 2 {
		t.Errorf("the key's subject holds %d messages after a retried update, want 2", n)
	}

	if _, stderr, code := run("deployments", "create", "llama", "--model", "m", "--upstream", "http://127.0.0.1:9"); code != 0 {
		t.Fatalf("deployments create: exit %d\n%s", code, stderr)
	}
	l.next(deploymentv1connect.DeploymentServiceLinkKeyProcedure)
	stdout, stderr, code = run("deployments", "link", "llama", "lost-answer")
	if code != 0 || !strings.Contains(stdout, "lost-answer") {
		t.Errorf("link whose answer was lost: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if n := records(eventstore.TypeDeployment, "llama"); n != 2 {
		t.Errorf("the deployment's subject holds %d messages after a retried link, want 2", n)
	}
}
