package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	auditv1connect "github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/pgtest"
)

// stack is one system under test: a NATS child process with file storage
// and the service processes started on it.
type stack struct {
	t        *testing.T
	dir      string
	natsPort int
	natsURL  string
	nats     *proc
	// nc is the test's own NATS connection, for the stream (as an
	// operator's tools would use it); it reconnects after a NATS restart.
	nc *nats.Conn
	js jetstream.JetStream

	tokensFile, token string
	upstream          string

	keysProc, depsProc, auditProc *proc
	keys                          keyv1connect.KeyServiceClient
	deps                          deploymentv1connect.DeploymentServiceClient
	audit                         auditv1connect.AuditServiceClient
	gateways                      []*gatewayProc
	// http carries control-plane calls; gwHTTP gateway requests.
	http, gwHTTP *http.Client
}

// gatewayProc is one running infergate-gateway.
type gatewayProc struct {
	*proc
	id, url string
}

// newStack starts NATS (file storage, a child process on a port of its
// own, never the system's 4222) and creates the event stream as an
// operator would. Services are started with the start* methods.
func newStack(t *testing.T) *stack {
	t.Helper()
	skipShort(t)
	if err := buildOnce(); err != nil {
		t.Fatalf("faults: %v", err)
	}
	s := &stack{t: t, dir: t.TempDir(), natsPort: freePort(t)}
	s.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort)
	s.nats = startProc(t, "nats", bins.nats, "--store-dir", filepath.Join(s.dir, "nats"), "--port", strconv.Itoa(s.natsPort))
	s.waitNATS()
	nc, err := nats.Connect(s.natsURL, nats.Name("faults-test"), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s.nc = nc
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	s.createStream(1, 0)

	token, entry, err := adminauth.New("ops", []string{adminauth.AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	s.token = token
	s.tokensFile = filepath.Join(s.dir, "tokens.json")
	data := `[{"name":"` + entry.Name + `","sha256":"` + entry.SHA256 + `","projects":["*"]}]`
	if err := os.WriteFile(s.tokensFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}

	up := &http.Server{Handler: (&demomodel.Server{}).Handler(""), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { _ = up.Close() })
	s.upstream = "http://" + ln.Addr().String()

	s.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second,
	}}
	s.gwHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second,
	}}
	t.Cleanup(s.http.CloseIdleConnections)
	t.Cleanup(s.gwHTTP.CloseIdleConnections)
	return s
}

// waitNATS waits until the NATS child accepts connections with JetStream.
func (s *stack) waitNATS() {
	s.t.Helper()
	waitUntil(s.t, waitLong, "NATS child process accepts JetStream calls", func() error {
		if gone, err := s.nats.exited(); gone {
			s.t.Fatalf("NATS exited: %v\n%s", err, s.nats.out.tail(20))
		}
		nc, err := nats.Connect(s.natsURL, nats.Timeout(time.Second))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err
	})
}

// killNATS kills the NATS server with SIGKILL: no flush, no goodbye.
func (s *stack) killNATS() { s.nats.kill() }

// restartNATS starts NATS again on the same files and port.
func (s *stack) restartNATS() {
	s.t.Helper()
	s.nats.restart()
	s.waitNATS()
}

// createStream creates the event stream as an operator does before any
// service starts (issue 10 point 1: services bind, they do not create),
// with the configuration infergate declares for it. dupWindow 0 is the
// default 2 minutes.
//
// It speaks JetStream directly rather than through an eventstore helper so
// it makes the same stream before and after the stream-owner change (where
// `infergate admin stream create` calls eventstore.CreateStream).
func (s *stack) createStream(replicas int, dupWindow time.Duration) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if dupWindow == 0 {
		dupWindow = 2 * time.Minute
	}
	_, err := s.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:              streamName,
		Description:       "infergate events: the source of truth",
		Subjects:          []string{"infergate.events.>"},
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		Duplicates:        dupWindow,
		AllowDirect:       true,
		DenyDelete:        true,
		DenyPurge:         true,
		// Declared since link at creation (issue 15): a key and its links
		// are one atomic batch.
		AllowAtomicPublish: true,
	})
	if err != nil {
		s.t.Fatalf("create the event stream: %v", err)
	}
}

// streamConfig is the stream's configuration and creation time now.
func (s *stack) streamInfo() *jetstream.StreamInfo {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, streamName)
	if err != nil {
		s.t.Fatalf("stream %s: %v", streamName, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatalf("stream %s: %v", streamName, err)
	}
	return info
}

// serviceArgs are the flags every control-plane process gets.
func (s *stack) serviceArgs(addr string, extra ...string) []string {
	return append([]string{
		"--addr", addr, "--nats-url", s.natsURL, "--admin-tokens-file", s.tokensFile,
		"--shutdown-grace", "2s", "--propagation-timeout", "2s",
	}, extra...)
}

// pgArgs point a service at a fresh PostgreSQL schema, reached at dbURL
// (the test server, or a proxy in front of it).
func pgArgs(t *testing.T, dbURL string) []string {
	t.Helper()
	return []string{"--database-url", dbURL, "--database-schema", pgtest.Schema(t)}
}

// startKeys starts infergate-keys with extra flags (a read model, say) and
// waits until it answers.
func (s *stack) startKeys(extra ...string) {
	s.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	s.keysProc = startProc(s.t, "infergate-keys", bins.keys, s.serviceArgs(addr, extra...)...)
	s.keys = keyv1connect.NewKeyServiceClient(s.http, "http://"+addr, s.clientOpts())
	s.waitKeys()
}

func (s *stack) waitKeys() {
	s.t.Helper()
	s.waitServing(s.keysProc, func(ctx context.Context) error {
		_, err := s.keys.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "probe"}))
		return err
	})
}

// startDeployments starts infergate-deployments (with its status checker
// probing every 50 ms) and waits until it answers.
func (s *stack) startDeployments(extra ...string) {
	s.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	args := s.serviceArgs(addr, append([]string{"--gateway-url", "http://localhost:8000", "--status-interval", "50ms"}, extra...)...)
	s.depsProc = startProc(s.t, "infergate-deployments", bins.deployments, args...)
	s.deps = deploymentv1connect.NewDeploymentServiceClient(s.http, "http://"+addr, s.clientOpts())
	s.waitServing(s.depsProc, func(ctx context.Context) error {
		_, err := s.deps.ListDeployments(ctx, connect.NewRequest(&deploymentv1.ListDeploymentsRequest{Project: "probe"}))
		return err
	})
}

// startAudit starts infergate-audit and waits until it answers.
func (s *stack) startAudit(extra ...string) {
	s.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	s.auditProc = startProc(s.t, "infergate-audit", bins.audit, s.serviceArgs(addr, extra...)...)
	s.audit = auditv1connect.NewAuditServiceClient(s.http, "http://"+addr, s.clientOpts())
	s.waitServing(s.auditProc, func(ctx context.Context) error {
		return httpOK(ctx, s.http, "http://"+addr+"/grpc.health.v1.Health/Check", `{}`)
	})
}

// startGateway starts an infergate-gateway and waits until /readyz is 200.
func (s *stack) startGateway(id string) *gatewayProc {
	s.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	p := startProc(s.t, "infergate-gateway "+id, bins.gatew,
		"--addr", addr, "--nats-url", s.natsURL, "--id", id, "--region", "local",
		"--log-level", "info", "--shutdown-grace", "1s")
	g := &gatewayProc{proc: p, id: id, url: "http://" + addr}
	s.gateways = append(s.gateways, g)
	s.waitServing(p, func(ctx context.Context) error {
		st, err := s.gatewayStatus(ctx, g)
		if err == nil && !st.Ready {
			err = errors.New("not ready")
		}
		return err
	})
	return g
}

// gatewayStatus is a gateway's /readyz.
type gatewayStatus struct {
	Ready           bool   `json:"ready"`
	Stale           bool   `json:"stale"`
	AppliedSequence uint64 `json:"applied_sequence"`
	StreamLast      uint64 `json:"stream_last_sequence"`
	NATSConnected   bool   `json:"nats_connected"`
}

func (s *stack) gatewayStatus(ctx context.Context, g *gatewayProc) (gatewayStatus, error) {
	var st gatewayStatus
	req, _ := http.NewRequestWithContext(ctx, "GET", g.url+"/readyz", nil)
	res, err := s.gwHTTP.Do(req)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("readyz %d: %q", res.StatusCode, body)
	}
	return st, nil
}

// waitServing waits until probe succeeds, failing at once if the process
// exits.
func (s *stack) waitServing(p *proc, probe func(context.Context) error) {
	s.t.Helper()
	waitUntil(s.t, waitLong, p.name+" serves", func() error {
		if gone, err := p.exited(); gone {
			s.t.Fatalf("%s exited before it served: %v\n%s", p.name, err, p.out.tail(20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return probe(ctx)
	})
}

// procs is every process of the stack but NATS.
func (s *stack) procs() []*proc {
	var ps []*proc
	for _, p := range []*proc{s.keysProc, s.depsProc, s.auditProc} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	for _, g := range s.gateways {
		ps = append(ps, g.proc)
	}
	return ps
}

// requireAlive fails the test if a service process has ended by itself:
// a fault must not take a process down with it.
func (s *stack) requireAlive(during string) {
	s.t.Helper()
	for _, p := range s.procs() {
		if gone, err := p.exited(); gone {
			s.t.Fatalf("%s exited (%v) %s: a fault must not end a process; its last output:\n%s", p.name, err, during, p.out.tail(15))
		}
	}
}

func (s *stack) clientOpts() connect.ClientOption {
	return connect.WithInterceptors(adminauth.NewClientInterceptor(s.token))
}

// httpOK POSTs a JSON body and wants a 200.
func httpOK(ctx context.Context, c *http.Client, url, body string) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

// ctx is a context for one call.
func callCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// createKey creates a key and returns its secret, failing the test on error.
func (s *stack) createKey(project, name string) string {
	s.t.Helper()
	ctx, cancel := callCtx(10 * time.Second)
	defer cancel()
	res, err := s.keys.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name}))
	if err != nil {
		s.t.Fatalf("CreateKey %s/%s: %v", project, name, err)
	}
	return res.Msg.GetSecret()
}

// deploy creates a deployment with auth on and the keys linked, and waits
// until the status checker has made it DEPLOYED.
func (s *stack) deploy(project, name string, keys ...string) {
	s.t.Helper()
	ctx, cancel := callCtx(10 * time.Second)
	defer cancel()
	_, err := s.deps.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: project, Name: name, Model: "demo", UpstreamUrl: s.upstream, AuthEnabled: true, ApiKeys: keys,
	}))
	if err != nil {
		s.t.Fatalf("CreateDeployment %s/%s: %v", project, name, err)
	}
	s.waitDeployed(project, name)
}

func (s *stack) waitDeployed(project, name string) {
	s.t.Helper()
	waitUntil(s.t, waitLong, "deployment "+project+"/"+name+" DEPLOYED", func() error {
		ctx, cancel := callCtx(2 * time.Second)
		defer cancel()
		res, err := s.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: name}))
		if err != nil {
			return err
		}
		if st := res.Msg.GetDeployment().GetStatus(); st != deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
			return fmt.Errorf("status %s", st)
		}
		return nil
	})
}

// listKeys is every key name the key service's read model lists for the
// project, page by page, in its order (duplicates kept, so a test can see
// them).
func (s *stack) listKeys(ctx context.Context, project string) ([]string, error) {
	var names []string
	token := ""
	for {
		res, err := s.keys.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: project, PageSize: 1000, PageToken: token}))
		if err != nil {
			return nil, err
		}
		for _, k := range res.Msg.GetKeys() {
			names = append(names, k.GetName())
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			return names, nil
		}
	}
}

// listDeployments is every deployment name the deployment service's read
// model lists for the project.
func (s *stack) listDeployments(ctx context.Context, project string) ([]string, error) {
	var names []string
	token := ""
	for {
		res, err := s.deps.ListDeployments(ctx, connect.NewRequest(&deploymentv1.ListDeploymentsRequest{Project: project, PageSize: 1000, PageToken: token}))
		if err != nil {
			return nil, err
		}
		for _, d := range res.Msg.GetDeployments() {
			names = append(names, d.GetName())
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			return names, nil
		}
	}
}
