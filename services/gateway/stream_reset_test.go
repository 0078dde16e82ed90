package gateway_test

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/natstest"
)

// TestRecreatedStream: the event stream deleted and created again under a
// running gateway (NATS-side data loss, an operator's mistake). The
// gateway must never admit a request from the map of the stream that no
// longer exists: it refuses with 503 gateway_not_ready while the stream
// is gone, rebuilds from the new stream, and then answers from that alone
// — a key of the old stream is unknown, /readyz names the new stream.
func TestRecreatedStream(t *testing.T) { eachFront(t, testRecreatedStream) }

func testRecreatedStream(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	old, _ := b.key("old-key", nil)
	seq := b.deployment("chat", up.URL, true, []string{"old-key"})
	g, srv := startGatewayOn(t, b, front, gateway.Config{})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", old); a.status != 200 {
		t.Fatalf("before: %d %s; want 200", a.status, a.code)
	}
	before := g.Status()

	js, err := jetstream.New(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(t.Context(), "INFERGATE_EVENTS"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "gateway not ready once the stream is gone", func() bool { return !g.Ready() })
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", old); a.status != 503 || a.code != "gateway_not_ready" {
		t.Fatalf("stream gone: %d %s; want 503 gateway_not_ready", a.status, a.code)
	}

	b.store = natstest.EventStore(t, js) // the operator creates it again
	b.live = aggregate.LiveKeys{}
	fresh, _ := b.key("new-key", nil)
	seq = b.deployment("chat", up.URL, true, []string{"new-key"})
	eventually(t, "ready on the new stream", func() bool { return g.Ready() && g.Applied() >= seq })
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", old); a.status != 401 || a.code != "invalid_api_key" {
		t.Fatalf("old stream's key on the new stream: %d %s; want 401 invalid_api_key", a.status, a.code)
	}
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", fresh); a.status != 200 {
		t.Fatalf("new stream's key: %d %s; want 200", a.status, a.code)
	}
	after := g.Status()
	if after.Stream == before.Stream || after.Stream == "none" || after.Resets <= before.Resets {
		t.Fatalf("status after: stream %q resets %d; before: stream %q resets %d", after.Stream, after.Resets, before.Stream, before.Resets)
	}
	var ready struct {
		Stream string `json:"stream"`
	}
	if err := json.Unmarshal([]byte(get(t, srv, "", "/readyz").body), &ready); err != nil || ready.Stream != after.Stream {
		t.Fatalf("/readyz stream = %q (%v); want %q", ready.Stream, err, after.Stream)
	}
}
