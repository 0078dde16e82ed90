package proxy

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/infergate/infergate/services/gateway/internal/h1"
	"github.com/infergate/infergate/services/internal/apikey"
)

func TestCredentialField(t *testing.T) {
	t.Parallel()
	key, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, value string
		strip       bool
	}{
		{"X-API-Key", "anything", true},
		{"x-api-key", "", true},
		{"X_API_KEY", "x", true},
		{"x-api_key", "x", true},
		{"XApiKey", "x", true},
		{"-x--api__key-", "x", true},
		{"X-Api-Keys", "x", false},
		{"X-Api-Ke", "x", false},
		{"Api-Key", "x", false},
		{"X-Api-Kez", "x", false},
		{"X\x00Api-Key", "x", false},
		{"Authorization", "Bearer " + key, true},
		{"Authorization", "Bearer\t" + key, true},
		{"Authorization", "Basic " + key, true},
		{"Authorization", key, true},
		{"Authorization", "Basic " + b64(key+":"), true},
		{"Authorization", "basic " + b64("u:"+key), true},
		{"Authorization", "Basic " + b64("u:p"), false},
		{"Authorization", "Basic !!!" + b64(key), false}, // not base64 from the start: nothing decodes
		{"Authorization", "Bearer sk-upstream", false},
		{"Authorization", "Bearer " + key[:len(key)-1], false},
		{"Authorization", "Bearer " + key[:len(key)-1] + "x" + key, true},
		{"X-Custom", "v=" + key + ";", true},
		{"X-Custom", "ig_ig_ig_", false},
		{"Proxy-Authorization", "Basic " + b64(key+":"), false}, // hop-by-hop: dropped by both front ends anyway
	} {
		if got := credentialField(tc.name, tc.value); got != tc.strip {
			t.Errorf("credentialField(%q, %q) = %v, want %v", tc.name, tc.value, got, tc.strip)
		}
	}
}

func TestStripQuery(t *testing.T) {
	key, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	esc := func(s string) string { // every byte escaped
		var b []byte
		for i := 0; i < len(s); i++ {
			b = append(b, fmt.Sprintf("%%%02X", s[i])...)
		}
		return string(b)
	}
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a=1&b=%20x&c", "a=1&b=%20x&c"},
		{"api_key=" + key, ""},
		{"api_key=" + key + "&stream=true", "stream=true"},
		{"a=1&key=" + key + "&b=2", "a=1&b=2"},
		{"token=prefix" + key + "suffix&a=1", "a=1"},
		{key + "=1&a=1", "a=1"},
		{"key=ig%5F" + key[3:] + "&a=%zz", "a=%zz"},
		{"key=" + esc(key) + "&a=1", "a=1"},
		{"key=%" + key + "&a=1", "a=1"},
		{"key=ig_not-a-key&a=1", "key=ig_not-a-key&a=1"},
		{"key=" + key[:len(key)-1] + "&a=1", "key=" + key[:len(key)-1] + "&a=1"},
	} {
		if got := stripQuery(tc.in); got != tc.want {
			t.Errorf("stripQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = stripQuery("model=a&stream=true") }); n != 0 {
		t.Errorf("a query without a key or an escape: %v allocations", n)
	}
}

func TestStripCredentials(t *testing.T) {
	t.Parallel()
	key, _ := apikey.Generate()
	h := http.Header{
		"X-Api-Key":     {key},
		"X_api_key":     {"x"},
		"Authorization": {"Bearer sk-upstream", "Bearer " + key, "Basic " + key},
		"Accept":        {"application/json"},
		"X-Custom":      {key},
	}
	stripCredentials(h)
	want := http.Header{"Authorization": {"Bearer sk-upstream"}, "Accept": {"application/json"}}
	if len(h) != len(want) || !slices.Equal(h["Authorization"], want["Authorization"]) || !slices.Equal(h["Accept"], want["Accept"]) {
		t.Errorf("after stripCredentials: %v, want %v", h, want)
	}
	stripCredentials(nil) // a request without trailers
}

// typicalFields is an OpenAI SDK's request as the fast path sees it, plus
// an upstream's own Basic credentials (the costliest field to check).
func typicalFields(key string) []h1.Field {
	return []h1.Field{
		{Name: "Host", Value: "model-chat.team-a.localhost:8000", Drop: true},
		{Name: "User-Agent", Value: "OpenAI/Python 1.40.0"},
		{Name: "Accept", Value: "application/json"},
		{Name: "Content-Type", Value: "application/json"},
		{Name: "X-Stainless-Lang", Value: "python"},
		{Name: "X-API-Key", Value: key},
		{Name: "Authorization", Value: "Basic dXNlcjpwYXNzd29yZA=="},
		{Name: "Content-Length", Value: "87", Drop: true},
	}
}

// The fast path's credential check allocates nothing.
func TestStripFieldsDoesNotAllocate(t *testing.T) {
	key, _ := apikey.Generate()
	fields := typicalFields(key)
	fields = append(fields, h1.Field{Name: "Authorization", Value: "Bearer " + key})
	if n := testing.AllocsPerRun(100, func() {
		for i := range fields {
			fields[i].Drop = false
		}
		dropCredentials(fields)
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
	if !fields[5].Drop || fields[6].Drop || !fields[8].Drop {
		t.Errorf("fields after the check: %+v", fields)
	}
}

func BenchmarkStripFields(b *testing.B) {
	key, _ := apikey.Generate()
	fields := typicalFields(key)
	b.ReportAllocs()
	for b.Loop() {
		for i := range fields {
			fields[i].Drop = false
		}
		dropCredentials(fields)
	}
}

func BenchmarkStripFieldsNoBasic(b *testing.B) {
	key, _ := apikey.Generate()
	fields := typicalFields(key)
	fields[6].Value = "Bearer sk-upstream-token"
	b.ReportAllocs()
	for b.Loop() {
		for i := range fields {
			fields[i].Drop = false
		}
		dropCredentials(fields)
	}
}
