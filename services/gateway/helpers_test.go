package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

const project = "team-a"

// backend is a real NATS server with JetStream, restartable on the same
// port and store, and an event store on a connection that reconnects.
type backend struct {
	t     *testing.T
	dir   string
	port  int
	srv   *natsembed.Server
	nc    *nats.Conn
	store *eventstore.Store
	live  aggregate.LiveKeys
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{t: t, dir: t.TempDir(), live: aggregate.LiveKeys{}}
	b.start()
	u, err := url.Parse(b.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	b.port = mustAtoi(t, u.Port())
	nc, err := nats.Connect(b.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	b.store = natstest.EventStore(t, js)
	return b
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("port %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// start (re)starts the server on the same port and store directory.
func (b *backend) start() {
	b.t.Helper()
	s, err := natsembed.Start(natsembed.Config{StoreDir: b.dir, Port: b.port})
	if err != nil {
		b.t.Fatal(err)
	}
	b.srv = s
	b.t.Cleanup(s.Shutdown)
}

func (b *backend) meta() aggregate.Meta {
	return aggregate.Meta{Actor: "test", Project: project, Now: time.Now(), NewID: uuid.NewString}
}

// key creates a key and returns its secret and the change's sequence.
func (b *backend) key(name string, expires *time.Time) (string, uint64) {
	b.t.Helper()
	secret, err := apikey.Generate()
	if err != nil {
		b.t.Fatal(err)
	}
	var id string
	seq := b.decide(eventstore.TypeKey, name, func(recs []eventstore.Record) ([]*eventv1.Event, error) {
		evs, err := aggregate.KeyFrom(name, eventstore.Events(recs)).Create(b.meta(), aggregate.NewKey{
			Name: name, ExpiresAt: expires, Hash: apikey.Sum(secret), Hint: apikey.Hint(secret),
		})
		if err == nil {
			id = evs[0].GetKeyCreated().GetKeyId()
		}
		return evs, err
	})
	b.live[name] = id
	return secret, seq
}

// rotate gives key name a new secret; the old one works for grace.
func (b *backend) rotate(name string, grace time.Duration) (string, uint64) {
	b.t.Helper()
	secret, err := apikey.Generate()
	if err != nil {
		b.t.Fatal(err)
	}
	seq := b.decide(eventstore.TypeKey, name, func(recs []eventstore.Record) ([]*eventv1.Event, error) {
		return aggregate.KeyFrom(name, eventstore.Events(recs)).Rotate(b.meta(), grace, aggregate.NewSecret{
			Hash: apikey.Sum(secret), Hint: apikey.Hint(secret),
		})
	})
	return secret, seq
}

func (b *backend) deleteKey(name string) uint64 {
	b.t.Helper()
	delete(b.live, name)
	return b.decide(eventstore.TypeKey, name, func(recs []eventstore.Record) ([]*eventv1.Event, error) {
		return aggregate.KeyFrom(name, eventstore.Events(recs)).Delete(b.meta())
	})
}

// dep runs a command on a deployment.
func (b *backend) dep(name string, cmd func(aggregate.Deployment, aggregate.Meta) ([]*eventv1.Event, error)) uint64 {
	b.t.Helper()
	return b.decide(eventstore.TypeDeployment, name, func(recs []eventstore.Record) ([]*eventv1.Event, error) {
		return cmd(aggregate.DeploymentFrom(name, eventstore.Events(recs)), b.meta())
	})
}

// deployment creates a deployment and marks it DEPLOYED.
func (b *backend) deployment(name, upstream string, auth bool, keys []string, regions ...string) uint64 {
	b.t.Helper()
	b.dep(name, func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Create(m, aggregate.NewDeployment{
			Name: name, Model: "demo", UpstreamURL: upstream, Regions: regions, AuthEnabled: auth, Keys: keys,
		}, b.live)
	})
	return b.status(name, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED)
}

func (b *backend) status(name string, s eventv1.DeploymentStatus) uint64 {
	b.t.Helper()
	return b.dep(name, func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.SetStatus(m, s, "")
	})
}

func (b *backend) decide(typ, name string, fn eventstore.DecideFunc) uint64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := b.store.Decide(ctx, eventstore.Aggregate{Project: project, Type: typ, Name: name}, "", 0, fn)
	if err != nil {
		b.t.Fatalf("%s %s: %v", typ, name, err)
	}
	return res.Sequence
}

// frontEnd is how a test gateway is served: the HTTP/1.1 fast path in
// front of net/http (what the gateway process runs), or net/http alone.
// Behavioural tests run through both, so any difference fails a test.
type frontEnd struct {
	name string
	fast bool
}

var fronts = []frontEnd{{"fastpath", true}, {"net-http", false}}

// eachFront runs test once per front end, in parallel.
func eachFront(t *testing.T, test func(*testing.T, frontEnd)) {
	t.Parallel()
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			test(t, f)
		})
	}
}

// startGateway runs a gateway on b until the test ends and serves it with
// the fast path on.
func startGateway(t *testing.T, b *backend, cfg gateway.Config) (*gateway.Gateway, *httptest.Server) {
	t.Helper()
	return startGatewayOn(t, b, fronts[0], cfg)
}

// startGatewayOn runs a gateway on b until the test ends and serves it
// through front. The *httptest.Server only lends its URL and client: the
// gateway's own front end (gateway.Front, as the process runs it) serves
// the port.
func startGatewayOn(t *testing.T, b *backend, front frontEnd, cfg gateway.Config) (*gateway.Gateway, *httptest.Server) {
	t.Helper()
	g, srv, _ := runGatewayOn(t, b, front, cfg)
	return g, srv
}

// runGatewayOn is startGatewayOn, and stop ends the gateway's Run (its
// following of the stream, its snapshots) before the test does.
func runGatewayOn(t *testing.T, b *backend, front frontEnd, cfg gateway.Config) (*gateway.Gateway, *httptest.Server, func()) {
	t.Helper()
	cfg.Events = b.store
	if cfg.Upstreams == nil {
		// The test upstreams are real servers on loopback, which the
		// default policy refuses: allowed here, in this one place.
		cfg.Upstreams = upstreampolicy.MustParse(upstreampolicy.Loopback)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != context.Canceled {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	srv := serveFront(t, g, front.fast)
	return g, srv, stop
}

// serveFront serves g on a loopback port through gateway.Front until the
// test ends.
func serveFront(t *testing.T, g *gateway.Gateway, fast bool) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := gateway.NewFront(httpserver.New(ln.Addr().String(), g.Handler()), fast, g.Bounds())
	front.Use(g)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- front.Serve(ctx, ln, 5*time.Second) }()
	// A shell for its URL and client; it serves nothing.
	shell := httptest.NewUnstartedServer(http.NotFoundHandler())
	_ = shell.Listener.Close()
	shell.Listener = &idleListener{addr: ln.Addr(), done: make(chan struct{})}
	shell.Start()
	t.Cleanup(func() {
		shell.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return shell
}

// idleListener accepts nothing until closed.
type idleListener struct {
	addr net.Addr
	once sync.Once
	done chan struct{}
}

func (l *idleListener) Accept() (net.Conn, error) { <-l.done; return nil, net.ErrClosed }
func (l *idleListener) Close() error              { l.once.Do(func() { close(l.done) }); return nil }
func (l *idleListener) Addr() net.Addr            { return l.addr }

// eventually waits for cond; a timeout fails the test with what.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitApplied(t *testing.T, g *gateway.Gateway, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.WaitApplied(ctx, seq); err != nil {
		t.Fatalf("gateway did not apply sequence %d (applied %d): %v", seq, g.Applied(), err)
	}
	// Applied is not ready: a gateway is ready once it has caught up with
	// the stream as it was when it started, which may end after seq (a
	// restarted gateway answered 503 gateway_not_ready in between; seen
	// in TestUsageCounts on CI).
	eventually(t, "gateway ready", g.Ready)
}

// recorder is an upstream that records what it received.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex // mu protects the fields below
	reqs []seen
}

type seen struct {
	path   string
	query  string
	host   string
	header http.Header
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, seen{req.URL.Path, req.URL.RawQuery, req.Host, req.Header.Clone()})
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) last(t *testing.T) seen {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("upstream got no request")
	}
	return r.reqs[len(r.reqs)-1]
}

// answer is a gateway response.
type answer struct {
	status int
	code   string // the OpenAI-style error code, if any
	typ    string
	body   string
	header http.Header
}

// get sends a request to the gateway with the Host and headers given.
func get(t *testing.T, srv *httptest.Server, host, path string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{"model":"demo"}`))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, body: string(body), header: resp.Header}
	var e struct {
		Error struct{ Message, Type, Code string } `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil {
		a.code, a.typ = e.Error.Code, e.Error.Type
	}
	return a
}
