package controlplane_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
)

// TestRESTThroughTheSameGate: the REST routes pass the same admin-token
// check (Bearer or the platform's APIKey scheme) before the body is read
// and the same scope check; /openapi.json, exactly, is public; every
// refusal has the REST error shape. The Connect API takes the APIKey
// scheme too.
func TestRESTThroughTheSameGate(t *testing.T) {
	t.Parallel()
	pl := startPlane(t)
	get := func(path, auth string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", pl.url+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := pl.h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("GET %s: %d, not JSON: %s", path, res.StatusCode, raw)
		}
		return res.StatusCode, out
	}
	const key = "/cloud/v3/inference/team-a/api_keys/build-bot"
	for _, auth := range []string{"APIKey " + pl.ops, "apikey " + pl.ops, "Bearer " + pl.ops, "bearer " + pl.teamA} {
		status, k := get(key, auth)
		if status != http.StatusOK || k["name"] != "build-bot" || k["project"] != "team-a" || !strings.HasPrefix(k["description"].(string), "called by ") {
			t.Errorf("GET %s with %.10s…: %d %v", key, auth, status, k)
		}
	}
	for _, c := range []struct {
		path, auth   string
		status, code int
	}{
		{key, "", http.StatusUnauthorized, 16},
		{key, "Token " + pl.ops, http.StatusUnauthorized, 16},
		{key, "APIKey " + pl.ops + "x", http.StatusUnauthorized, 16},
		{"/cloud/v3/inference/team-b/api_keys/build-bot", "APIKey " + pl.teamA, http.StatusForbidden, 7},
		{"/openapi.jsonx", "", http.StatusUnauthorized, 16},
		{"/cloud/v3/unknown", "APIKey " + pl.ops, http.StatusNotFound, 5},
		{"/cloud/v3/inference/team-a/api_keys", "APIKey " + pl.ops, http.StatusNotImplemented, 12}, // the stub lists nothing
	} {
		status, out := get(c.path, c.auth)
		if status != c.status || out["code"] != float64(c.code) || out["message"] == "" {
			t.Errorf("GET %s with %.10s…: %d %v, want %d with code %d", c.path, c.auth, status, out, c.status, c.code)
		}
	}
	if status, doc := get("/openapi.json", ""); status != http.StatusOK || doc["openapi"] == nil {
		t.Errorf("GET /openapi.json without a token: %d", status)
	}

	client := keyv1connect.NewKeyServiceClient(pl.h1, pl.url)
	req := connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "build-bot"})
	req.Header().Set("Authorization", "APIKey "+pl.ops)
	if res, err := client.GetKey(t.Context(), req); err != nil || res.Msg.GetKey().GetDescription() != "called by ops" {
		t.Errorf("Connect GetKey with the APIKey scheme = %v, %v", res, err)
	}
}

// BenchmarkGetKey is one GetKey through the whole front of a control-plane
// process (token check, scope check, stub handler) over loopback HTTP/1.1,
// as REST (transcoded) and as Connect JSON: what the transcoder adds.
func BenchmarkGetKey(b *testing.B) {
	pl := startPlane(b)
	b.Run("REST", func(b *testing.B) {
		for b.Loop() {
			req, _ := http.NewRequestWithContext(b.Context(), "GET", pl.url+"/cloud/v3/inference/team-a/api_keys/build-bot", nil)
			req.Header.Set("Authorization", "APIKey "+pl.ops)
			res, err := pl.h1.Do(req)
			if err != nil || res.StatusCode != http.StatusOK {
				b.Fatal(res, err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
	b.Run("Connect", func(b *testing.B) {
		client := keyv1connect.NewKeyServiceClient(pl.h1, pl.url, connect.WithProtoJSON())
		for b.Loop() {
			req := connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "build-bot"})
			req.Header().Set("Authorization", "Bearer "+pl.ops)
			if _, err := client.GetKey(b.Context(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
