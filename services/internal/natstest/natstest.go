// Package natstest gives tests a real embedded NATS server with JetStream,
// stopped when the test ends.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/natsembed"
)

// Start starts a server on a free port with its store in a temporary
// directory.
func Start(t testing.TB) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection to s, closed when the test ends.
func Connect(t testing.TB, s *natsembed.Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream starts a server and returns a JetStream context on a fresh
// connection to it.
func JetStream(t testing.TB) (*natsembed.Server, jetstream.JetStream) {
	t.Helper()
	s := Start(t)
	js, err := jetstream.New(Connect(t, s))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return s, js
}

// JetStreamOn returns a JetStream context on a fresh connection to s.
func JetStreamOn(t testing.TB, s *natsembed.Server) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(Connect(t, s))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return js
}
