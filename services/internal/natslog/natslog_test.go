package natslog_test

import (
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natslog"
)

// TestOncePerTransition: a connection that loses its server and keeps
// failing to reconnect logs the loss once, and the return once.
func TestOncePerTransition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.ClientURL())
	port, _ := strconv.Atoi(u.Port())

	var logs buffer
	var failedAttempts atomic.Int64
	opts := append(natslog.Options(slog.New(slog.NewTextHandler(&logs, nil)), "testing"),
		nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.ReconnectErrHandler(func(*nats.Conn, error) { failedAttempts.Add(1) }))
	nc, err := srv.Connect(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	srv.Shutdown()
	waitUntil(t, "several failed reconnects", func() bool { return failedAttempts.Load() >= 3 })
	if n := strings.Count(logs.String(), "NATS disconnected; testing"); n != 1 {
		t.Errorf("logged the disconnect %d times, want once:\n%s", n, logs.String())
	}

	srv, err = natsembed.Start(natsembed.Config{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	waitUntil(t, "reconnected", nc.IsConnected)
	waitUntil(t, "the reconnect logged", func() bool { return strings.Contains(logs.String(), "NATS reconnected") })
	nc.Close()
	waitUntil(t, "the close logged", func() bool { return strings.Contains(logs.String(), "NATS connection closed") })
	for line, want := range map[string]int{"NATS disconnected": 1, "NATS reconnected": 1, "NATS connection closed": 1} {
		if n := strings.Count(logs.String(), line); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", line, n, want, logs.String())
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type buffer struct {
	mu sync.Mutex // mu protects b
	b  strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
