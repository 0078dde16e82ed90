// Package natstest gives tests a real embedded NATS server with JetStream,
// stopped when the test ends, and the event stream on it.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/snapshots"
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

// EventStore creates the event stream as declared when it is missing (as
// `infergate admin stream create` would; eventstore.EnsureStream) and opens
// a store on js. Every test that needs the stream gets it here: services
// and gateways only bind to it.
func EventStore(t testing.TB, js jetstream.JetStream) *eventstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Right after a stream was deleted, creating it again on file storage
	// can fail for a moment ("error creating store for stream") while the
	// server removes the old files: try again until the deadline.
	for {
		err := eventstore.EnsureStream(ctx, js, eventstore.Config{})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("natstest: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := eventstore.Open(ctx, js, eventstore.Config{})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return s
}

// Cluster starts n servers clustered with JetStream (for replicated
// streams), stopped when the test ends, and returns their client URLs,
// comma-separated, once the JetStream meta leader sees every server.
func Cluster(t testing.TB, n int) string {
	t.Helper()
	routePorts := make([]int, n)
	var routes []*url.URL
	for i := range routePorts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		routePorts[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[i])})
	}
	var urls []string
	var servers []*server.Server
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  routes,
		})
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
	}
	for _, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("natstest: cluster server not ready")
		}
		urls = append(urls, s.ClientURL())
	}
	deadline := time.Now().Add(30 * time.Second)
	for tick := time.NewTicker(20 * time.Millisecond); ; <-tick.C {
		for _, s := range servers {
			if len(s.JetStreamClusterPeers()) == n {
				tick.Stop()
				return strings.Join(urls, ",")
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("natstest: the JetStream cluster did not form in 30s")
		}
	}
}

// Hub starts the hub's server: JetStream domain "hub", accepting regions'
// leaf-node connections (LeafURL). Stopped when the test ends.
func Hub(t testing.TB) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), ServerName: "hub",
		Domain: eventstore.DefaultHubDomain, LeafPort: -1})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Leaf starts a region's leaf server: its own JetStream domain (the
// region's name), connected to the hub at leafURL (the hub's LeafURL, or a
// proxy in front of it). It returns once the link is up.
func Leaf(t testing.TB, region, leafURL string) *natsembed.Server {
	t.Helper()
	u, err := url.Parse(leafURL)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	s, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), ServerName: "leaf-" + region,
		Domain: region, LeafRemotes: []*url.URL{u}})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(s.Shutdown)
	deadline := time.Now().Add(10 * time.Second)
	for s.LeafNodes() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("natstest: leaf %s did not connect to %s", region, leafURL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// Mirror creates the region's mirrors of the hub's stream and snapshot
// bucket on leaf (as `infergate admin stream create-mirror` does) and
// opens a store on the stream's, checking the origin's life through the
// hub's domain. It returns the store and its connection to the leaf
// server (a region's gateway sends its receipts on it, and reads the
// region's snapshots: snapshots.Open).
func Mirror(t testing.TB, leaf *natsembed.Server) (*eventstore.Store, *nats.Conn) {
	t.Helper()
	nc := Connect(t, leaf)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	hub, err := jetstream.NewWithDomain(nc, eventstore.DefaultHubDomain)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The hub's JetStream API may not answer through a link just up until
	// the link's interest has spread: retry until the bound.
	for {
		_, err := eventstore.CreateMirror(ctx, js, hub, eventstore.MirrorConfig{Region: leaf.Domain()})
		if err == nil {
			_, err = snapshots.CreateMirror(ctx, js, hub, snapshots.MirrorConfig{Region: leaf.Domain()})
		}
		if err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) || ctx.Err() != nil {
			t.Fatalf("natstest: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := eventstore.OpenMirror(ctx, js, hub, eventstore.MirrorConfig{})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return s, nc
}
