package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// e2eBuildCLI builds the infergate command into a temporary directory.
func e2eBuildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "infergate")
	args := []string{"build", "-o", bin}
	if e2eRace {
		args = append(args, "-race")
	}
	// The test runs in its package's directory, inside the module.
	cmd := exec.Command("go", append(args, "github.com/infergate/infergate/services/infergate/cmd/infergate")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build infergate: %v\n%s", err, out)
	}
	return bin
}

// e2eCLI runs the infergate binary against a stack.
type e2eCLI struct {
	bin string
	s   *e2eStack
	// cwd is an empty directory, so no ./.infergate is found by accident.
	cwd string
	// emptyDir is a data dir with nothing in it.
	emptyDir string
}

// e2eCLIMode is how the CLI finds the control plane and the token.
type e2eCLIMode int

const (
	e2eWithFlags   e2eCLIMode = iota // --api-url and --token; the data dir is empty
	e2eWithDataDir                   // INFERGATE_DATA_DIR only: it reads api-url and admin-token there
	e2eBare                          // neither (admin-token new needs no control plane)
)

type e2eCLIResult struct {
	stdout, stderr string
	code           int
}

func (c *e2eCLI) run(t *testing.T, mode e2eCLIMode, args ...string) e2eCLIResult {
	t.Helper()
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "INFERGATE_") || strings.HasPrefix(kv, "GORACE=")
	})
	// A race-enabled binary sleeps a second at exit unless told not to.
	env = append(env, "GORACE=atexit_sleep_ms=0 exitcode=66")
	switch mode {
	case e2eWithFlags:
		args = append(args, "--api-url", c.s.APIURL, "--token", c.s.Token)
		env = append(env, "INFERGATE_DATA_DIR="+c.emptyDir)
	case e2eWithDataDir:
		env = append(env, "INFERGATE_DATA_DIR="+c.s.dataDir)
	case e2eBare:
		env = append(env, "INFERGATE_DATA_DIR="+c.emptyDir)
	}
	cmd := exec.CommandContext(e2eCtx(t), c.bin, args...)
	cmd.Env, cmd.Dir = env, c.cwd
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := e2eCLIResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("infergate %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok runs a command that must succeed.
func (c *e2eCLI) ok(t *testing.T, mode e2eCLIMode, args ...string) e2eCLIResult {
	t.Helper()
	r := c.run(t, mode, args...)
	if r.code != 0 {
		t.Fatalf("infergate %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// json runs a command with -o json and decodes its output into m.
func (c *e2eCLI) json(t *testing.T, mode e2eCLIMode, m proto.Message, args ...string) {
	t.Helper()
	r := c.ok(t, mode, append(args, "-o", "json")...)
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		t.Fatalf("infergate %s -o json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

var (
	e2eSecretRE   = regexp.MustCompile(`\big_[0-9A-Za-z]{40,}\b`)
	e2eSequenceRE = regexp.MustCompile(`stream sequence (\d+)`)
)

// propagated checks that a change's output says the gateway applied it,
// and waits until it has.
func (c *e2eCLI) propagated(t *testing.T, r e2eCLIResult) {
	t.Helper()
	if !strings.Contains(r.stdout, "applied at 1/1 gateways") {
		t.Errorf("output does not say the one gateway applied the change:\n%s", r.stdout)
	}
	m := e2eSequenceRE.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("output names no stream sequence:\n%s", r.stdout)
	}
	seq, _ := strconv.ParseUint(m[1], 10, 64)
	c.s.waitApplied(t, &propagationv1.Propagation{Sequence: seq}, false)
}

// TestCLIRoundTrip drives a running stack with the infergate binary, as an
// operator would: keys, deployments, auth, links, audit, admin tokens,
// errors — and checks at the gateway that what it did holds.
func TestCLIRoundTrip(t *testing.T) {
	t.Parallel()
	c := &e2eCLI{bin: e2eBuildCLI(t), s: e2eStart(t, t.TempDir()), cwd: t.TempDir(), emptyDir: t.TempDir()}
	s := c.s
	upstream := e2eDemoUpstream(t)
	const project = "team-cli"

	// keys create: the secret once, a warning, and it works at the gateway
	// (checked below, once a deployment links it).
	r := c.ok(t, e2eWithDataDir, "keys", "create", "ci-key", "--description", "the CI pipeline", "-p", project)
	if !strings.Contains(r.stderr, "cannot be shown again") {
		t.Errorf("keys create: no warning on stderr that the secret is shown once:\n%s", r.stderr)
	}
	secrets := e2eSecretRE.FindAllString(r.stdout, -1)
	if len(secrets) != 1 || !apikey.WellFormed(secrets[0]) {
		t.Fatalf("keys create: want one well-formed secret in the output, got %d:\n%s", len(secrets), r.stdout)
	}
	ciSecret := secrets[0]
	if !strings.Contains(r.stdout, "ci-key") || !strings.Contains(r.stdout, apikey.Hint(ciSecret)) {
		t.Errorf("keys create: the table does not show the key and its hint:\n%s", r.stdout)
	}
	var spare keyv1.CreateKeyResponse
	c.json(t, e2eWithFlags, &spare, "keys", "create", "spare-key", "--expires-in", "1h", "-p", project)
	spareSecret := spare.GetSecret()
	if !apikey.WellFormed(spareSecret) || spare.GetKey().GetExpiresAt() == nil {
		t.Fatalf("keys create -o json: %v", &spare)
	}

	// deployments create, get (until the status checker has seen the
	// upstream answer), list.
	r = c.ok(t, e2eWithFlags, "deployments", "create", "cli-dep", "--model", demomodel.ModelID, "--upstream", upstream, "-p", project)
	if !strings.Contains(r.stdout, "cli-dep") || !strings.Contains(r.stdout, "http://"+s.hostName(project, "cli-dep")) {
		t.Errorf("deployments create: the table does not show the deployment and its endpoint:\n%s", r.stdout)
	}
	ctx := e2eCtx(t)
	for {
		var got deploymentv1.GetDeploymentResponse
		c.json(t, e2eWithDataDir, &got, "deployments", "get", "cli-dep", "-p", project)
		if got.GetDeployment().GetStatus() == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment still %s", got.GetDeployment().GetStatus())
		case <-time.After(50 * time.Millisecond):
		}
	}
	r = c.ok(t, e2eWithDataDir, "deployments", "get", "cli-dep", "-p", project)
	if !e2eHasRow(r.stdout, "cli-dep", demomodel.ModelID, "DEPLOYED", "off") {
		t.Errorf("deployments get: no row for cli-dep, DEPLOYED, auth off:\n%s", r.stdout)
	}
	// keys create --deployments: created already linked, in one change,
	// with the receipt.
	r = c.ok(t, e2eWithFlags, "keys", "create", "linked-key", "--deployments", "cli-dep", "-p", project)
	if !e2eHasRow(r.stdout, "linked-key", "cli-dep") || !strings.Contains(r.stdout, "applied at 1/1") {
		t.Errorf("keys create --deployments: want the key linked to cli-dep and the receipt:\n%s", r.stdout)
	}
	c.ok(t, e2eWithFlags, "keys", "delete", "linked-key", "-p", project)
	r = c.ok(t, e2eWithFlags, "deployments", "list", "-p", project)
	if !strings.HasPrefix(r.stdout, "NAME") || !e2eHasRow(r.stdout, "cli-dep", "DEPLOYED") {
		t.Errorf("deployments list: not a table with cli-dep:\n%s", r.stdout)
	}
	var deps deploymentv1.ListDeploymentsResponse
	c.json(t, e2eWithFlags, &deps, "deployments", "list", "-p", project)
	if len(deps.GetDeployments()) != 1 || deps.GetDeployments()[0].GetName() != "cli-dep" {
		t.Errorf("deployments list -o json: %v", &deps)
	}

	// deployments auth: the "Save changes" of the API-keys tab.
	r = c.ok(t, e2eWithFlags, "deployments", "auth", "cli-dep", "--enable", "--keys", "ci-key", "-p", project)
	c.propagated(t, r)
	s.expectAnswer(t, e2eByHost, project, "cli-dep", e2eKey(ciSecret))
	s.expectRefused(t, e2eByPath, project, "cli-dep", nil, "missing_api_key")
	s.expectRefused(t, e2eByPath, project, "cli-dep", e2eKey(spareSecret), "invalid_api_key")

	// link and unlink.
	r = c.ok(t, e2eWithDataDir, "deployments", "link", "cli-dep", "spare-key", "-p", project)
	c.propagated(t, r)
	s.expectAnswer(t, e2eByPath, project, "cli-dep", e2eKey(spareSecret))
	r = c.ok(t, e2eWithFlags, "deployments", "unlink", "cli-dep", "spare-key", "-p", project)
	c.propagated(t, r)
	s.expectRefused(t, e2eByPath, project, "cli-dep", e2eKey(spareSecret), "invalid_api_key")
	s.expectAnswer(t, e2eByHost, project, "cli-dep", e2eKey(ciSecret))

	// keys list: a table and JSON, with hints and links, never a secret.
	r = c.ok(t, e2eWithDataDir, "keys", "list", "-p", project)
	if !strings.HasPrefix(r.stdout, "NAME") || !e2eHasRow(r.stdout, "ci-key", apikey.Hint(ciSecret), "never", "cli-dep") ||
		!e2eHasRow(r.stdout, "spare-key", apikey.Hint(spareSecret)) {
		t.Errorf("keys list: not a table with both keys, hints and links:\n%s", r.stdout)
	}
	var keys keyv1.ListKeysResponse
	c.json(t, e2eWithFlags, &keys, "keys", "list", "-p", project)
	var names []string
	for _, k := range keys.GetKeys() {
		names = append(names, k.GetName())
		if k.GetName() == "ci-key" && !slices.Equal(k.GetDeploymentNames(), []string{"cli-dep"}) {
			t.Errorf("keys list -o json: ci-key links %v, want [cli-dep]", k.GetDeploymentNames())
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"ci-key", "spare-key"}) {
		t.Errorf("keys list -o json: keys %v", names)
	}
	e2eNoSecret(t, "keys list", r.stdout, ciSecret, spareSecret)

	// keys delete: refused at once.
	r = c.ok(t, e2eWithFlags, "keys", "delete", "ci-key", "-p", project)
	if !strings.Contains(r.stdout, "Deleted key ci-key") {
		t.Errorf("keys delete: %s", r.stdout)
	}
	c.propagated(t, r)
	s.expectRefused(t, e2eByHost, project, "cli-dep", e2eKey(ciSecret), "invalid_api_key")

	// audit events: everything above, by the stack's admin token, no secret.
	var events auditv1.ListEventsResponse
	c.json(t, e2eWithDataDir, &events, "audit", "events", "-p", project)
	count := map[string]int{}
	for _, e := range events.GetEvents() {
		count[e.GetType()]++
		if e.GetActor() == "" {
			t.Errorf("event %d (%s) has no actor", e.GetSequence(), e.GetType())
		}
	}
	for typ, n := range map[string]int{
		"KeyCreated": 2, "DeploymentCreated": 1, "DeploymentStatusChanged": 1, "DeploymentAuthEnabled": 1,
		"KeyLinked": 2, "KeyUnlinked": 1, "KeyDeleted": 1,
	} {
		if count[typ] < n {
			t.Errorf("audit events -o json: %d %s, want at least %d (all: %v)", count[typ], typ, n, count)
		}
	}
	r = c.ok(t, e2eWithFlags, "audit", "events", "-p", project)
	if !strings.HasPrefix(r.stdout, "SEQ") || !strings.Contains(r.stdout, "KeyDeleted") {
		t.Errorf("audit events: not a table of the events:\n%s", r.stdout)
	}
	e2eNoSecret(t, "audit events", r.stdout, ciSecret, spareSecret)

	// admin-token new: a token and the line for the tokens file.
	r = c.ok(t, e2eBare, "admin-token", "new", "--name", "ci-bot", "--projects", "team-cli,other")
	token := regexp.MustCompile(regexp.QuoteMeta(adminauth.TokenPrefix) + `[0-9A-Za-z]+`).FindString(r.stdout)
	var entry adminauth.Entry
	for _, line := range strings.Split(r.stdout, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("admin-token new: the JSON line does not parse: %v: %s", err, line)
			}
		}
	}
	sum := sha256.Sum256([]byte(token))
	if token == "" || entry.Name != "ci-bot" || entry.SHA256 != hex.EncodeToString(sum[:]) ||
		!slices.Equal(entry.Projects, []string{"team-cli", "other"}) {
		t.Errorf("admin-token new: token %t, entry %+v:\n%s", token != "", entry, r.stdout)
	}

	// Errors: the server's message on stderr, a non-zero exit, no output.
	for _, e := range []struct {
		mode e2eCLIMode
		args []string
		want []string
	}{
		{e2eWithFlags, []string{"deployments", "get", "no-such-dep", "-p", project}, []string{"not_found", "no-such-dep"}},
		{e2eWithDataDir, []string{"deployments", "link", "cli-dep", "ci-key", "-p", project}, []string{"not_found", "ci-key"}},
		{e2eWithDataDir, []string{"keys", "create", "x", "-p", project}, []string{"invalid_argument", "name"}},
		{e2eWithDataDir, []string{"keys", "list", "-p", project, "--token", "igadm_wrong"}, []string{"unauthenticated"}},
	} {
		r := c.run(t, e.mode, e.args...)
		if r.code == 0 || r.stdout != "" {
			t.Errorf("infergate %s: exit %d, stdout %q; want a failure and no output", strings.Join(e.args, " "), r.code, r.stdout)
		}
		for _, w := range e.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("infergate %s: stderr %q does not mention %q", strings.Join(e.args, " "), r.stderr, w)
			}
		}
	}
}

// e2eHasRow reports whether a table has a line with every cell in order.
func e2eHasRow(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		fields := strings.Fields(line)
		i := 0
		for _, f := range fields {
			if i < len(cells) && f == cells[i] {
				i++
			}
		}
		if len(fields) > 0 && i == len(cells) {
			return true
		}
	}
	return false
}

func e2eNoSecret(t *testing.T, what, output string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(output, s) {
			t.Errorf("%s prints a secret", what)
		}
	}
}
