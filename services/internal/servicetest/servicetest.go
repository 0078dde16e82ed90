// Package servicetest starts the real parts a control-plane service test
// needs — an embedded NATS server with JetStream, the event store, a read
// model (memory or PostgreSQL) and its projector — and serves handlers
// over HTTP/1.1 and h2c the way production does.
package servicetest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/pgtest"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/readmodel/postgres"
)

// Read-model kinds.
const (
	Memory   = "memory"
	Postgres = "postgres"
)

// Kinds are the read-model kinds every service test runs against.
func Kinds() []string { return []string{Memory, Postgres} }

// Backend is a running event store with a projected read model.
type Backend struct {
	Kind string
	NATS *natsembed.Server
	// Conn is the connection Events uses.
	Conn   *nats.Conn
	Events *eventstore.Store
	// Reads and Projector change on Restart.
	Reads     readmodel.Store
	Projector *readmodel.Projector
	// Tokens admits OpsToken (every project), TeamToken (team-a only) and
	// OtherToken (team-b only).
	Tokens                          *adminauth.Tokens
	OpsToken, TeamToken, OtherToken string
	// Logs captures everything the services log.
	Logs *LogBuffer

	pgURL, pgSchema string
	stop            func()
}

// New starts a backend with a read model of the given kind.
func New(t *testing.T, kind string) *Backend {
	t.Helper()
	b := &Backend{Kind: kind, Logs: &LogBuffer{}}
	b.NATS = natstest.Start(t)
	js := natstest.JetStreamOn(t, b.NATS)
	b.Conn = js.Conn()
	b.Events = natstest.EventStore(t, js)
	if kind == Postgres {
		b.pgURL = pgtest.URL(t)
		b.pgSchema = pgtest.Schema(t)
	}
	var entries []adminauth.Entry
	for _, tok := range []struct {
		dst      *string
		name     string
		projects []string
	}{
		{&b.OpsToken, "ops", []string{adminauth.AllProjects}},
		{&b.TeamToken, "team-a-admin", []string{"team-a"}},
		{&b.OtherToken, "team-b-admin", []string{"team-b"}},
	} {
		token, entry, err := adminauth.New(tok.name, tok.projects)
		if err != nil {
			t.Fatal(err)
		}
		*tok.dst = token
		entries = append(entries, entry)
	}
	var err error
	if b.Tokens, err = adminauth.FromEntries(entries); err != nil {
		t.Fatal(err)
	}
	b.startReads(t)
	t.Cleanup(func() { b.stop() })
	return b
}

// Logger logs into b.Logs.
func (b *Backend) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (b *Backend) startReads(t *testing.T) {
	t.Helper()
	var closeStore func()
	switch b.Kind {
	case Memory:
		b.Reads = readmodel.NewMemory()
		closeStore = func() {}
	case Postgres:
		s, err := postgres.Open(t.Context(), postgres.Config{URL: b.pgURL, Schema: b.pgSchema})
		if err != nil {
			t.Fatalf("servicetest: %v", err)
		}
		b.Reads, closeStore = s, s.Close
	default:
		t.Fatalf("servicetest: unknown read model kind %q", b.Kind)
	}
	b.Projector = readmodel.NewProjector(b.Events, b.Reads, b.Logger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Projector.Run(ctx) }()
	b.stop = func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("servicetest: projector: %v", err)
		}
		closeStore()
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if err := b.Projector.WaitCaughtUp(wctx); err != nil {
		t.Fatalf("servicetest: projector did not catch up: %v", err)
	}
}

// Restart stops the read model and its projector and starts them again:
// a memory read model is rebuilt by replay, a PostgreSQL one resumes from
// its checkpoint. Services built on the old ones must be built again.
func (b *Backend) Restart(t *testing.T) {
	t.Helper()
	b.stop()
	b.startReads(t)
}

// Serve serves handlers (path, handler pairs as Connect's constructors
// return them) with the admin-token interceptor, over HTTP/1.1 and h2c,
// and returns the base URL.
func (b *Backend) Serve(t *testing.T, mount func(opts ...connect.HandlerOption) map[string]http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	for path, h := range mount(connect.WithInterceptors(adminauth.NewInterceptor(b.Tokens))) {
		mux.Handle(path, h)
	}
	srv := httptest.NewUnstartedServer(mux)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// ClientOptions authenticate a Connect client with token.
func ClientOptions(token string) []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(adminauth.NewClientInterceptor(token))}
}

// H2CClient is an HTTP client that speaks h2c, for gRPC calls.
func H2CClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

// LogBuffer is a concurrency-safe log sink.
type LogBuffer struct {
	mu  sync.Mutex // mu protects buf
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newOps() (string, adminauth.Entry, error) {
	return adminauth.New("ops", []string{adminauth.AllProjects})
}

// WaitFor retries call until it succeeds or 20 s pass.
func WaitFor(t *testing.T, what string, call func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := call(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WantCode fails the test unless err carries the Connect code.
func WantCode(t *testing.T, err error, code connect.Code, what string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: error %v, want code %s", what, err, code)
	}
}

// EachKind runs f as a parallel subtest for every read-model kind.
func EachKind(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f(t, kind)
		})
	}
}
