package e2e_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
)

// TestCLIUsage sends requests through the one-process stack's gateway and
// reads their usage back with the CLI: LAST USED in `keys list` and
// `deployments get`, and the table of `keys usage`.
func TestCLIUsage(t *testing.T) {
	t.Parallel()
	c := &e2eCLI{bin: e2eBuildCLI(t), cwd: t.TempDir(), emptyDir: t.TempDir()}
	c.s = e2eStart(t, t.TempDir(), func(cfg *devstack.Config) { cfg.UsageFlushInterval = 100 * time.Millisecond })
	s := c.s
	const project = "team-usage"
	_, secret := s.createKey(t, project, "ci-runner", time.Time{})
	s.createKey(t, project, "idle-key", time.Time{})
	s.createDeployment(t, project, "llama", e2eDemoUpstream(t), true, "ci-runner")
	s.waitDeployed(t, project, "llama")

	// Nothing used yet.
	r := c.ok(t, e2eWithFlags, "keys", "list", "-p", project)
	if !regexp.MustCompile(`(?m)^ci-runner\s.*\bnever\b`).MatchString(r.stdout) || !strings.Contains(r.stdout, "LAST USED") {
		t.Errorf("keys list before any request: no LAST USED of never for ci-runner:\n%s", r.stdout)
	}

	var prompt, completion uint64
	for range 3 {
		res, body := s.chat(t, e2eByPath, project, "llama", e2eKey(secret))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("chat: %d %s", res.StatusCode, body)
		}
		var u struct {
			Usage struct {
				Prompt     uint64 `json:"prompt_tokens"`
				Completion uint64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(body, &u); err != nil {
			t.Fatal(err)
		}
		prompt, completion = prompt+u.Usage.Prompt, completion+u.Usage.Completion
	}
	s.expectRefused(t, e2eByPath, project, "llama", nil, "missing_api_key")

	// The counts reach the usage projection within a flush interval.
	var got usagev1.GetKeyUsageResponse
	deadline := time.Now().Add(e2eTimeout)
	for {
		c.json(t, e2eWithFlags, &got, "keys", "usage", "ci-runner", "--since", "-1h", "-p", project)
		if got.GetUsage().GetTotal().GetOk() == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys usage never showed 3 requests: %v", &got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var dep usagev1.GetDeploymentUsageResponse
	for {
		c.json(t, e2eWithFlags, &dep, "deployments", "usage", "llama", "--since", "-1h", "-p", project)
		if tot := dep.GetUsage().GetTotal(); tot.GetOk() == 3 && tot.GetRefused() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployments usage never showed 3 requests and 1 refusal: %v", &dep)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if tot := got.GetUsage().GetTotal(); tot.GetPromptTokens() != prompt || tot.GetCompletionTokens() != completion || got.GetUsage().GetLastUsed() == nil {
		t.Errorf("keys usage -o json: %v; want %d prompt and %d completion tokens", &got, prompt, completion)
	}

	r = c.ok(t, e2eWithFlags, "keys", "usage", "ci-runner", "--since", "-1h", "-p", project)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s*DEPLOYMENT\s+REQUESTS\s+OK\s+4XX\s+5XX\s+REFUSED\s+PROMPT TOKENS\s+COMPLETION TOKENS\s+LAST USED`),
		regexp.MustCompile(`(?m)^\s*llama\s+3\s+3\s+0\s+0\s+0\s+` + itoa(prompt) + `\s+` + itoa(completion) + `\s+\d{4}-\d\d-\d\dT`),
		regexp.MustCompile(`(?m)^\s*TOTAL\s+3\s+3\s+0\s+0\s+0\s+` + itoa(prompt) + `\s+` + itoa(completion)),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("keys usage: no line matching %s:\n%s", want, r.stdout)
		}
	}

	r = c.ok(t, e2eWithFlags, "keys", "list", "-p", project)
	if !regexp.MustCompile(`(?m)^ci-runner\s.*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s.*\d{4}-\d\d-\d\dT`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^idle-key\s.*\bnever\b`).MatchString(r.stdout) {
		t.Errorf("keys list: ci-runner should show when it was last used, idle-key never:\n%s", r.stdout)
	}
	r = c.ok(t, e2eWithFlags, "deployments", "get", "llama", "-p", project)
	if !strings.Contains(r.stdout, "LAST USED") || !regexp.MustCompile(`(?m)^llama\s.*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s*$`).MatchString(r.stdout) {
		t.Errorf("deployments get: no LAST USED time:\n%s", r.stdout)
	}

	// The deployment's side: by key, with the refused request that had
	// none.
	r = c.ok(t, e2eWithFlags, "deployments", "usage", "llama", "--since", "-1h", "-p", project)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s*KEY\s+REQUESTS\s+OK\s+4XX\s+5XX\s+REFUSED`),
		regexp.MustCompile(`(?m)^\s*\(no key\)\s+1\s+0\s+0\s+0\s+1\s`),
		regexp.MustCompile(`(?m)^\s*ci-runner\s+3\s+3\s+0\s+0\s+0\s`),
		regexp.MustCompile(`(?m)^\s*TOTAL\s+4\s+3\s+0\s+0\s+1\s`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("deployments usage: no line matching %s:\n%s", want, r.stdout)
		}
	}

	// Bad input: a clear error, and nothing else.
	if r := c.run(t, e2eWithFlags, "keys", "usage", "ci-runner", "--since", "yesterday", "-p", project); r.code == 0 || !strings.Contains(r.stderr, "--since") {
		t.Errorf("keys usage --since yesterday: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := c.run(t, e2eWithFlags, "keys", "usage", "Bad_Name", "-p", project); r.code == 0 || !strings.Contains(r.stderr, "invalid_argument") {
		t.Errorf("keys usage Bad_Name: exit %d, stderr %q", r.code, r.stderr)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
