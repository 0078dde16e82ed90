package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/natsauth"
)

// syncBuffer is a bytes.Buffer safe for the stack's goroutines.
type syncBuffer struct {
	mu  sync.Mutex // mu protects buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDevNATSNeedsItsUsers: the dev stack's embedded NATS lets in only the
// users it generated, each part connects as its own (the attack —
// publishing an event by hand — is refused even with the gateway's
// seed), and the seeds stay in the data dir: mode 0600, never printed or
// logged.
func TestDevNATSNeedsItsUsers(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	var out, logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *devstack.Stack, 1)
	done := make(chan error, 1)
	go func() {
		done <- devstack.Run(ctx, devstack.Config{
			DataDir: dataDir, APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0",
			Demo: true, Out: &out,
			Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		}, func(st *devstack.Stack) { ready <- st })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devstack.Run: %v", err)
		}
	})
	var st *devstack.Stack
	select {
	case st = <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("devstack.Run returned before the stack was ready: %v", err)
	case <-time.After(e2eTimeout):
		t.Fatalf("stack not ready after %s", e2eTimeout)
	}

	if nc, err := nats.Connect(st.NATSURL); err == nil {
		nc.Close()
		t.Error("connected to the dev NATS without credentials")
	}

	keysDir := filepath.Join(dataDir, devstack.NATSKeysDir)
	if fi, err := os.Stat(keysDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, %v; want a directory of mode 0700", keysDir, fi.Mode(), err)
	}
	gw := natsauth.GatewayIdentity("local", devstack.GatewayID)
	ids := []natsauth.Identity{{Role: natsauth.ControlPlane}, {Role: natsauth.Audit}, gw}
	var seeds []string
	for _, id := range ids {
		path := id.SeedFile(keysDir)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("%s: %v", id.Name(), err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, strings.TrimSpace(string(data)))
	}
	// Every part did what it does within its permissions: no violation
	// was reported on any connection (natslog logs them as "NATS error").
	if strings.Contains(logs.String(), "NATS error") {
		t.Errorf("the stack's NATS users lack a permission:\n%s", logs.String())
	}
	for _, seed := range seeds {
		// The private part; the printed NATS URL and the log must hold
		// none of it.
		if strings.Contains(out.String(), seed[2:]) || strings.Contains(logs.String(), seed[2:]) {
			t.Error("a NATS seed was printed or logged")
		}
	}

	// The gateway's seed gets in, but cannot append an event.
	opts, err := gw.ClientOptions(gw.SeedFile(keysDir), "")
	if err != nil {
		t.Fatal(err)
	}
	violation := make(chan error, 1)
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			select {
			case violation <- err:
			default:
			}
		}
	}))
	nc, err := nats.Connect(st.NATSURL, opts...)
	if err != nil {
		t.Fatalf("connect with the gateway's seed: %v", err)
	}
	defer nc.Close()
	subject := "infergate.events.default.deployment.demo"
	if err := nc.Publish(subject, []byte("DeploymentAuthDisabled")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violation:
		if !strings.Contains(err.Error(), subject) {
			t.Errorf("violation for another subject: %v", err)
		}
	case <-time.After(e2eTimeout):
		t.Error("publishing an event with the gateway's seed was not refused")
	}
}
