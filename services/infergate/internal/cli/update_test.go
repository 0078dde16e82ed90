package cli_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/infergate/internal/cli"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/keys"
)

// TestKeysUpdateExpiry: keys update sets, refuses and removes an expiry and
// leaves the description alone unless --description is given.
func TestKeysUpdateExpiry(t *testing.T) {
	t.Parallel()
	b := servicetest.New(t, servicetest.Memory)
	url := b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		kpath, kh, err := keys.NewHandler(keys.Config{Events: b.Events, Reads: b.Reads, Projector: b.Projector, Log: b.Logger()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{kpath: kh}
	})
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		var out, errs bytes.Buffer
		args = append(args, "--api-url", url, "--token", b.OpsToken, "-p", "team-a", "--data-dir", t.TempDir())
		code = cli.Main(args, &out, &errs)
		return out.String(), errs.String(), code
	}
	client := keyv1connect.NewKeyServiceClient(http.DefaultClient, url)
	get := func() *keyv1.Key {
		t.Helper()
		req := connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "cli-key"})
		req.Header().Set("Authorization", "Bearer "+b.OpsToken)
		res, err := client.GetKey(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetKey()
	}

	if _, stderr, code := run("keys", "create", "cli-key", "--description", "kept"); code != 0 {
		t.Fatalf("keys create: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := run("keys", "update", "cli-key", "--expires-at", "2020-01-01T00:00:00Z"); code == 0 || !strings.Contains(stderr, "expires_at") {
		t.Errorf("update to a past expiry: exit %d, stderr %q; want a failure naming expires_at", code, stderr)
	}
	if _, stderr, code := run("keys", "update", "cli-key", "--expires-at", "2099-01-01T00:00:00Z", "--never-expires"); code == 0 {
		t.Errorf("--expires-at with --never-expires: exit 0, stderr %q", stderr)
	}
	if k := get(); k.GetExpiresAt() != nil || k.GetDescription() != "kept" {
		t.Fatalf("after refused updates: %v", k)
	}
	if _, stderr, code := run("keys", "update", "cli-key", "--expires-at", "2099-01-01T00:00:00Z"); code != 0 {
		t.Fatalf("keys update --expires-at: exit %d\n%s", code, stderr)
	}
	if k := get(); !k.GetExpiresAt().AsTime().Equal(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)) || k.GetDescription() != "kept" {
		t.Errorf("after --expires-at: %v", k)
	}
	if _, stderr, code := run("keys", "update", "cli-key", "--never-expires"); code != 0 {
		t.Fatalf("keys update --never-expires: exit %d\n%s", code, stderr)
	}
	if k := get(); k.GetExpiresAt() != nil || k.GetDescription() != "kept" {
		t.Errorf("after --never-expires: %v", k)
	}
	if _, stderr, code := run("keys", "update", "cli-key", "--description", ""); code != 0 {
		t.Fatalf("keys update --description '': exit %d\n%s", code, stderr)
	}
	if k := get(); k.GetDescription() != "" {
		t.Errorf("after --description '': %v", k)
	}
}
