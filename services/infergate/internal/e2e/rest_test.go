package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// restClient speaks the REST surface with plain net/http and JSON, as a
// script written for the managed platform would.
type restClient struct {
	t      *testing.T
	base   string
	auth   string // the Authorization header; empty sends none
	header map[string]string
	client *http.Client
}

// do sends a JSON body (nil: none) and returns the status and the decoded
// JSON answer.
func (c restClient) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if raw, ok := body.([]byte); ok {
		rd = bytes.NewReader(raw) // sent as is, malformed or not
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(e2eCtx(c.t), method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	res, err := c.client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		c.t.Fatalf("%s %s: status %d, Content-Type %q, want JSON: %s", method, path, res.StatusCode, ct, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		c.t.Fatalf("%s %s: status %d, answer is not a JSON object: %v: %s", method, path, res.StatusCode, err, raw)
	}
	return res.StatusCode, out
}

// ok is do that expects 200.
func (c restClient) ok(method, path string, body any) map[string]any {
	c.t.Helper()
	status, out := c.do(method, path, body)
	if status != http.StatusOK {
		c.t.Fatalf("%s %s: status %d, want 200: %v", method, path, status, out)
	}
	return out
}

// fails checks an error in the REST error shape: {"code": <gRPC code>,
// "message": "…", "details": []}, with the HTTP status of the code and
// nothing of the server's insides.
func (c restClient) fails(method, path string, body any, status, code int, mention string) {
	c.t.Helper()
	got, out := c.do(method, path, body)
	if got != status {
		c.t.Fatalf("%s %s: status %d, want %d: %v", method, path, got, status, out)
	}
	msg, _ := out["message"].(string)
	if n, _ := out["code"].(float64); int(n) != code || msg == "" {
		c.t.Errorf("%s %s: body %v, want code %d and a message", method, path, out, code)
	}
	if _, ok := out["details"].([]any); !ok {
		c.t.Errorf("%s %s: body %v has no details array", method, path, out)
	}
	if !strings.Contains(msg, mention) {
		c.t.Errorf("%s %s: message %q does not mention %q", method, path, msg, mention)
	}
	for _, inside := range []string{"goroutine", ".go:", "panic"} {
		if strings.Contains(msg, inside) {
			c.t.Errorf("%s %s: message %q shows the server's insides", method, path, msg)
		}
	}
}

// waitTask polls a task until it is no longer RUNNING and returns it.
func (c restClient) waitTask(id string) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(e2eTimeout)
	for {
		task := c.ok("GET", "/cloud/v1/tasks/"+id, nil)
		if task["state"] != "TASK_STATE_RUNNING" {
			return task
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s still RUNNING after %s: %v", id, e2eTimeout, task)
		}
		time.Sleep(20 * time.Millisecond) // polling, as a script would
	}
}

// finished waits for the only task of an answer and checks it FINISHED.
func (c restClient) finished(answer map[string]any, typ string) {
	c.t.Helper()
	ids, _ := answer["tasks"].([]any)
	if len(ids) != 1 {
		c.t.Fatalf("answer %v: want one task id", answer)
	}
	task := c.waitTask(ids[0].(string))
	if task["state"] != "TASK_STATE_FINISHED" || task["task_type"] != typ || task["id"] != ids[0] {
		c.t.Fatalf("task %v, want a FINISHED %s", task, typ)
	}
}

func strs(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// TestRESTStory runs the seed's story over the REST surface, with plain
// HTTP and JSON shaped like the platform's Everywhere Inference API: a
// deployment, a key created linked to it (its secret shown once), the
// deployment's api_keys set by PATCH, each change followed to FINISHED as
// a task, requests through the gateway, and [] switching auth off. Then
// what bad input gets.
func TestRESTStory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opsToken, ops, err := adminauth.New("ops", []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	teamToken, team, err := adminauth.New("team-b", []string{"team-b"})
	if err != nil {
		t.Fatal(err)
	}
	tokens, _ := json.Marshal([]adminauth.Entry{ops, team})
	tokensFile := filepath.Join(dir, "tokens.json")
	if err := os.WriteFile(tokensFile, tokens, 0o600); err != nil {
		t.Fatal(err)
	}
	s := e2eStart(t, filepath.Join(dir, "data"), func(c *devstack.Config) { c.AdminTokensFile = tokensFile })
	upstream := e2eDemoUpstream(t)
	api := restClient{t: t, base: s.APIURL, auth: "APIKey " + opsToken, client: s.client}
	const base = "/cloud/v3/inference/acme"

	// The OpenAPI document is public and describes these routes.
	anon := api
	anon.auth = ""
	doc := anon.ok("GET", "/openapi.json", nil)
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/cloud/v3/inference/{project}/api_keys/{name}", "/cloud/v3/inference/{project}/deployments/{name}", "/cloud/v1/tasks/{id}"} {
		if paths[p] == nil {
			t.Errorf("/openapi.json has no path %s", p)
		}
	}

	// A deployment, auth off; its creation is a task.
	created := api.ok("POST", base+"/deployments", map[string]any{
		"name": "chat", "model": demomodel.ModelID, "upstream_url": upstream,
	})
	api.finished(created, "create_deployment")
	deadline := time.Now().Add(e2eTimeout)
	for api.ok("GET", base+"/deployments/chat", nil)["status"] != "DEPLOYMENT_STATUS_DEPLOYED" {
		if time.Now().After(deadline) {
			t.Fatal("deployment never DEPLOYED")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A key linked at creation, in one change: the secret is in this
	// answer only.
	key := api.ok("POST", base+"/api_keys", map[string]any{
		"name": "rest-key", "description": "from a script", "deployment_names": []string{"chat"},
	})
	secret, _ := key["secret"].(string)
	if !apikey.WellFormed(secret) {
		t.Fatalf("create answered %v: no well-formed secret", key)
	}
	k := key["key"].(map[string]any)
	if k["name"] != "rest-key" || !slices.Equal(strs(k["deployment_names"]), []string{"chat"}) || k["expires_at"] != nil {
		t.Errorf("created key %v, want rest-key linked to chat, never expiring", k)
	}
	api.finished(key, "create_api_key")
	got := api.ok("GET", base+"/api_keys/rest-key", nil)
	if got["secret"] != nil || !slices.Equal(strs(got["deployment_names"]), []string{"chat"}) || got["description"] != "from a script" {
		t.Errorf("GET api_keys/rest-key = %v, want the key linked to chat and no secret", got)
	}
	for _, listed := range api.ok("GET", base+"/api_keys", nil)["keys"].([]any) {
		if bytes.Contains(must(json.Marshal(listed)), []byte(secret)) {
			t.Error("the key list shows the secret")
		}
	}
	// A retried create with the same Idempotency-Key is answered again,
	// without the secret, and creates nothing more.
	idem := api
	idem.header = map[string]string{"Idempotency-Key": "script-run-1"}
	first := idem.ok("POST", base+"/api_keys", map[string]any{"name": "idem-key"})
	again := idem.ok("POST", base+"/api_keys", map[string]any{"name": "idem-key"})
	if first["secret"] == "" || again["replayed"] != true || again["secret"] != "" ||
		again["key"].(map[string]any)["id"] != first["key"].(map[string]any)["id"] {
		t.Errorf("retried create: first replayed=%v, again replayed=%v secret set=%v", first["replayed"], again["replayed"], again["secret"] != "")
	}
	patched := api.ok("PATCH", base+"/api_keys/rest-key", map[string]any{"description": "renamed"})
	if patched["description"] != "renamed" {
		t.Errorf("PATCH api_keys/rest-key = %v", patched)
	}

	// Auth off: the gateway lets anything through.
	s.expectAnswer(t, e2eByHost, "acme", "chat", nil)

	// api_keys is the whole linked set; a non-empty set switches auth on.
	on := api.ok("PATCH", base+"/deployments/chat", map[string]any{"api_keys": []string{"rest-key"}})
	api.finished(on, "update_deployment")
	d := on["deployment"].(map[string]any)
	if d["auth_enabled"] != true || !slices.Equal(strs(d["api_keys"]), []string{"rest-key"}) {
		t.Errorf("after PATCH api_keys [rest-key]: %v", d)
	}
	s.expectAnswer(t, e2eByHost, "acme", "chat", e2eKey(secret))
	s.expectAnswer(t, e2eByPath, "acme", "chat", e2eBearer(secret))
	s.expectRefused(t, e2eByHost, "acme", "chat", nil, "missing_api_key")

	// auth_enabled alone is still accepted: off and on, links kept.
	api.finished(api.ok("PATCH", base+"/deployments/chat", map[string]any{"auth_enabled": false}), "update_deployment")
	s.expectAnswer(t, e2eByHost, "acme", "chat", nil)
	back := api.ok("PATCH", base+"/deployments/chat", map[string]any{"auth_enabled": true})
	api.finished(back, "update_deployment")
	if d := back["deployment"].(map[string]any); !slices.Equal(strs(d["api_keys"]), []string{"rest-key"}) {
		t.Errorf("auth_enabled alone changed the links: %v", d)
	}
	s.expectRefused(t, e2eByHost, "acme", "chat", nil, "missing_api_key")

	// [] unlinks every key and disables authentication.
	off := api.ok("PATCH", base+"/deployments/chat", map[string]any{"api_keys": []string{}})
	api.finished(off, "update_deployment")
	s.expectAnswer(t, e2eByHost, "acme", "chat", nil)
	if d := api.ok("GET", base+"/deployments/chat", nil); d["auth_enabled"] != false || len(d["api_keys"].([]any)) != 0 {
		t.Errorf("after PATCH api_keys []: %v", d)
	}
	if got := api.ok("GET", base+"/api_keys/rest-key", nil); len(got["deployment_names"].([]any)) != 0 {
		t.Errorf("after PATCH api_keys []: the key still lists %v", got["deployment_names"])
	}
	// Neither field: nothing changes.
	same := api.ok("PATCH", base+"/deployments/chat", map[string]any{})
	api.finished(same, "update_deployment")
	if d := same["deployment"].(map[string]any); d["auth_enabled"] != false || len(d["api_keys"].([]any)) != 0 {
		t.Errorf("PATCH {} changed the deployment: %v", d)
	}

	t.Run("BadInput", func(t *testing.T) {
		api := api
		api.t = t
		// 401: no token, an unknown one, a bad scheme; before any body is read.
		for _, auth := range []string{"", "APIKey igadm_nope", "Basic " + opsToken} {
			c := api
			c.auth = auth
			c.fails("GET", base+"/api_keys", nil, http.StatusUnauthorized, 16, "admin token")
			c.fails("POST", base+"/api_keys", map[string]any{"name": "sneaky"}, http.StatusUnauthorized, 16, "admin token")
		}
		// 403: a token outside its projects, which learns nothing.
		other := api
		other.auth = "Bearer " + teamToken
		other.fails("GET", base+"/api_keys/rest-key", nil, http.StatusForbidden, 7, "may not use project")
		other.fails("GET", base+"/api_keys/no-such-key", nil, http.StatusForbidden, 7, "may not use project")
		// 400: the Connect API's validation, naming the field.
		api.fails("PATCH", base+"/deployments/chat", map[string]any{"api_keys": []string{"rest-key"}, "auth_enabled": true},
			http.StatusBadRequest, 3, "together with auth_enabled")
		api.fails("PATCH", base+"/deployments/chat", map[string]any{"api_keys": []any{7}}, http.StatusBadRequest, 3, "api_keys[0]")
		api.fails("POST", base+"/api_keys", map[string]any{"name": "x"}, http.StatusBadRequest, 3, "name")
		api.fails("PATCH", base+"/deployments/chat", map[string]any{"api_key": []string{}}, http.StatusBadRequest, 3, "api_key")
		api.fails("POST", base+"/deployments", map[string]any{"name": "img", "image": "nginx:latest"}, http.StatusBadRequest, 3, "image")
		api.fails("PATCH", base+"/deployments/chat", []byte(`{"api_keys": `), http.StatusBadRequest, 3, "request body")
		api.fails("PATCH", base+"/deployments/chat", map[string]any{"api_keys": "rest-key"}, http.StatusBadRequest, 3, "request body")
		api.fails("POST", "/cloud/v3/inference/Not_A_Label/api_keys", map[string]any{"name": "good-name"}, http.StatusBadRequest, 3, "project")
		api.fails("POST", base+"/api_keys", map[string]any{"name": "past", "expires_at": "2001-01-01T00:00:00Z"}, http.StatusBadRequest, 3, "expires_at")
		// 404: an unknown deployment to link creates nothing at all.
		api.fails("POST", base+"/api_keys", map[string]any{"name": "orphan", "deployment_names": []string{"chat", "nope"}},
			http.StatusNotFound, 5, "nope")
		api.fails("GET", base+"/api_keys/orphan", nil, http.StatusNotFound, 5, "orphan")
		api.fails("PATCH", base+"/deployments/nope", map[string]any{"api_keys": []string{}}, http.StatusNotFound, 5, "nope")
		api.fails("PATCH", base+"/deployments/chat", map[string]any{"api_keys": []string{"ghost"}}, http.StatusNotFound, 5, "ghost")
		api.fails("GET", "/cloud/v1/tasks/6f1c2e7a-0000-4000-8000-000000000000", nil, http.StatusNotFound, 5, "not found")
		api.fails("GET", "/cloud/v3/nothing/here", nil, http.StatusNotFound, 5, "no route")
		// 409: a name in use.
		api.fails("POST", base+"/api_keys", map[string]any{"name": "rest-key"}, http.StatusConflict, 6, "rest-key")
		// A task of another project is not found for a token without it.
		again := api.ok("PATCH", base+"/deployments/chat", map[string]any{"auth_enabled": false})
		other.fails("GET", "/cloud/v1/tasks/"+again["tasks"].([]any)[0].(string), nil, http.StatusNotFound, 5, "not found")
		// A body over 1 MiB is refused before it is read.
		big := map[string]any{"name": "big-key", "description": strings.Repeat("x", 2<<20)}
		if status, out := api.do("POST", base+"/api_keys", big); status != http.StatusTooManyRequests || out["code"] != float64(8) {
			t.Errorf("a 2 MiB body: status %d %v, want 429 resource exhausted", status, out)
		}
		api.fails("GET", base+"/api_keys/big-key", nil, http.StatusNotFound, 5, "big-key")
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return b
}
