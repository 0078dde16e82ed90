// Package faults_test is infergate's fault suite (issue 10, point 5): the
// real binaries — infergate-keys, infergate-deployments, infergate-audit
// and infergate-gateway — each as its own process, against a NATS server
// with JetStream file storage that is itself a child process (so it can be
// killed with SIGKILL and started again on the same files and port), and
// PostgreSQL read models, each in a fresh schema. Every scenario injects
// one fault while load runs, then checks the promises a user relies on:
// an acknowledged write is never lost, a confirmed change is enforced, and
// no gateway admits a request on state that no longer exists.
//
// Every wait is bounded and waits on a condition. Each scenario logs its
// figures on a line starting "FIGURES" (docs/reliability.md quotes them).
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
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	auditv1connect "github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/pgtest"
)

// streamName is the event stream every service binds.
const streamName = "INFERGATE_EVENTS"

// waitLong bounds a wait for a process or the system to reach a state; the
// machine is a busy 2-core one, often running -race binaries.
const waitLong = 30 * time.Second

// Binaries, built by the first test that needs them, once per test
// binary run, into a directory TestMain removes.
var bins struct {
	dir                                   string
	nats, keys, deployments, audit, gatew string
}

var buildOnce = sync.OnceValue(build)

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// build compiles the service binaries and the NATS server, with the race
// detector when this test binary has it (so the packages `go test -race`
// compiled are reused, and races under faults are caught).
func build() error {
	dir, err := os.MkdirTemp("", "infergate-faults-bin-")
	if err != nil {
		return err
	}
	bins.dir = dir
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	const mod = "github.com/infergate/infergate/services/"
	args = append(args,
		"./testdata/natsd",
		mod+"keys/cmd/infergate-keys",
		mod+"deployments/cmd/infergate-deployments",
		mod+"audit/cmd/infergate-audit",
		mod+"gateway/cmd/infergate-gateway",
	)
	start := time.Now()
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "faults: built the binaries in %s (race=%v)\n", time.Since(start).Round(time.Millisecond), raceEnabled)
	bins.nats = filepath.Join(dir, "natsd")
	bins.keys = filepath.Join(dir, "infergate-keys")
	bins.deployments = filepath.Join(dir, "infergate-deployments")
	bins.audit = filepath.Join(dir, "infergate-audit")
	bins.gatew = filepath.Join(dir, "infergate-gateway")
	return nil
}

// skipShort skips a fault scenario under -short.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: real processes; skipped with -short")
	}
}

// ---------------------------------------------------------------------
// Child processes.

// proc is one child process: started, killed, restarted with the same
// arguments. Its output is kept (the last 256 KiB) and shown when the test
// fails.
type proc struct {
	t    *testing.T
	name string
	bin  string
	args []string

	mu   sync.Mutex // mu protects the fields below
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // the exit, once done is closed
	// expectExit marks an exit the test caused (kill, stop).
	expectExit bool
}

func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, bin: bin, args: args, out: &tailBuffer{max: 256 << 10}}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", p.name, p.out.tail(25))
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, p.args...)
	// Only what the flags say, no INFERGATE_* from the test's environment,
	// except that the demo upstream on loopback is allowed: through the
	// environment, which a binary without an upstream policy ignores.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "INFERGATE_") })
	cmd.Env = append(cmd.Env, "INFERGATE_UPSTREAM_ALLOW=127.0.0.1")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err, p.expectExit = cmd, done, nil, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// exited reports whether the process has ended by itself, and how.
func (p *proc) exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return !p.expectExit, p.err
	default:
		return false, nil
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	p.expectExit = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart starts the process again, with the same arguments, after kill.
func (p *proc) restart() {
	p.t.Helper()
	p.kill()
	fmt.Fprintf(p.out, "=== restarted by the test at %s ===\n", time.Now().Format(time.RFC3339Nano))
	p.start()
}

// wait waits for the process to exit by itself (at most d) and returns how.
func (p *proc) wait(d time.Duration) (error, bool) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		p.expectExit = true
		return p.err, true
	case <-time.After(d):
		return nil, false
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex // mu protects buf and written
	buf     []byte
	written int // bytes ever written
	max     int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.written += len(p)
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// mark is a position in the output, for since.
func (b *tailBuffer) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.written
}

// since is what was written after mark (as much of it as is kept).
func (b *tailBuffer) since(mark int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(b.written-mark, len(b.buf))
	return string(b.buf[len(b.buf)-n:])
}

// tail is the last n lines.
func (b *tailBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort is a loopback port free right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ---------------------------------------------------------------------
// The stack.

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
	s.nats = startProc(t, "natsd", bins.nats, "--store-dir", filepath.Join(s.dir, "nats"), "--port", strconv.Itoa(s.natsPort))
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
			s.t.Fatalf("natsd exited: %v\n%s", err, s.nats.out.tail(20))
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

// ---------------------------------------------------------------------
// Control-plane helpers.

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

// ---------------------------------------------------------------------
// Gateway requests.

// ask sends one request for a deployment through a gateway with a key and
// returns the status (0 for a transport error) and the error code, if any.
func (s *stack) ask(g *gatewayProc, project, dep, secret string) (int, string) {
	ctx, cancel := callCtx(3 * time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", g.url+"/d/"+project+"/"+dep+"/v1/models", nil)
	if secret != "" {
		req.Header.Set("X-API-Key", secret)
	}
	res, err := s.gwHTTP.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if res.StatusCode != 200 {
		_ = json.Unmarshal(body, &e)
	}
	return res.StatusCode, e.Error.Code
}

// waitAnswer waits until every gateway answers the key with want.
func (s *stack) waitAnswer(project, dep, secret string, want int) {
	s.t.Helper()
	for _, g := range s.gateways {
		waitUntil(s.t, waitLong, fmt.Sprintf("%s answers %d for %s/%s", g.id, want, project, dep), func() error {
			if got, code := s.ask(g, project, dep, secret); got != want {
				return fmt.Errorf("got %d %s", got, code)
			}
			return nil
		})
	}
}

// traffic sends requests with one key to every gateway, one client per
// gateway, until stop, and records every answer.
type traffic struct {
	mu      sync.Mutex // mu protects answers
	answers []answer
	stop    context.CancelFunc
	done    sync.WaitGroup
}

type answer struct {
	gateway string
	at      time.Time // when the request was sent
	status  int
	code    string
}

func (s *stack) startTraffic(project, dep, secret string) *traffic {
	ctx, stop := context.WithCancel(context.Background())
	tr := &traffic{stop: stop}
	for _, g := range s.gateways {
		tr.done.Go(func() {
			for ctx.Err() == nil {
				at := time.Now()
				st, code := s.ask(g, project, dep, secret)
				tr.mu.Lock()
				tr.answers = append(tr.answers, answer{g.id, at, st, code})
				tr.mu.Unlock()
				// A client's pace, not a wait for anything.
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
	}
	s.t.Cleanup(tr.halt)
	return tr
}

// halt stops the traffic and waits for the clients.
func (tr *traffic) halt() {
	tr.stop()
	tr.done.Wait()
}

// since is every answer to a request sent at or after t.
func (tr *traffic) since(t time.Time) []answer {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []answer
	for _, a := range tr.answers {
		if !a.at.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// between is every answer to a request sent in [from, to).
func (tr *traffic) between(from, to time.Time) []answer {
	var out []answer
	for _, a := range tr.since(from) {
		if a.at.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// tally counts answers by status, e.g. "200×41 401×3".
func tally(as []answer) string {
	n := map[int]int{}
	for _, a := range as {
		n[a.status]++
	}
	var codes []int
	for c := range n {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", c, n[c]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// countStatus is how many answers had the status.
func countStatus(as []answer, status int) int {
	n := 0
	for _, a := range as {
		if a.status == status {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------
// Writers: CreateKey under load.

// writers runs CreateKey calls from n clients, each with a unique name,
// until stopped, and records every outcome.
type writers struct {
	project string
	mu      sync.Mutex // mu protects the fields below
	results []writeResult
	stop    context.CancelFunc
	done    sync.WaitGroup
}

type writeResult struct {
	name       string
	start, end time.Time
	secret     string // set on success
	err        error
}

// startWriters starts n CreateKey clients; each call is bounded by
// callTimeout. Names are <prefix>-<client>-<n>.
func (s *stack) startWriters(project, prefix string, n int, callTimeout time.Duration) *writers {
	ctx, stop := context.WithCancel(context.Background())
	w := &writers{project: project, stop: stop}
	for c := range n {
		w.done.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("%s-%d-%04d", prefix, c, i)
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				start := time.Now()
				res, err := s.keys.CreateKey(cctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name}))
				cancel()
				r := writeResult{name: name, start: start, end: time.Now(), err: err}
				if err == nil {
					r.secret = res.Msg.GetSecret()
				} else if ctx.Err() != nil {
					return // stopped mid-call: neither outcome is the system's
				}
				w.mu.Lock()
				w.results = append(w.results, r)
				w.mu.Unlock()
				if err != nil {
					// A client backs off a little after an error.
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		})
	}
	s.t.Cleanup(w.halt)
	return w
}

func (w *writers) halt() {
	w.stop()
	w.done.Wait()
}

// snapshot is every result so far.
func (w *writers) snapshot() []writeResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.results)
}

// acked is every successful result.
func acked(rs []writeResult) []writeResult {
	return slices.DeleteFunc(slices.Clone(rs), func(r writeResult) bool { return r.err != nil })
}

// failed is every failed result.
func failed(rs []writeResult) []writeResult {
	return slices.DeleteFunc(slices.Clone(rs), func(r writeResult) bool { return r.err == nil })
}

// startedIn is every result of a call started in [from, to).
func startedIn(rs []writeResult, from, to time.Time) []writeResult {
	return slices.DeleteFunc(slices.Clone(rs), func(r writeResult) bool { return r.start.Before(from) || !r.start.Before(to) })
}

// errorSummary counts failures by Connect code, e.g. "unavailable×3".
func errorSummary(rs []writeResult) string {
	n := map[string]int{}
	for _, r := range rs {
		if r.err != nil {
			n[connect.CodeOf(r.err).String()]++
		}
	}
	var parts []string
	for c, k := range n {
		parts = append(parts, fmt.Sprintf("%s×%d", c, k))
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// waitWrites waits until cond holds for the results so far.
func (w *writers) waitWrites(t *testing.T, d time.Duration, what string, cond func([]writeResult) bool) {
	t.Helper()
	waitUntil(t, d, what, func() error {
		if rs := w.snapshot(); !cond(rs) {
			return fmt.Errorf("%d results: %d acknowledged, errors %s", len(rs), len(acked(rs)), errorSummary(rs))
		}
		return nil
	})
}

// ---------------------------------------------------------------------
// The stream, replayed by the test itself.

// replay is what the stream says, read message by message.
type replay struct {
	// keys counts KeyCreated per project/name; live holds the keys not
	// deleted since.
	created map[string]int
	live    map[string]bool
	// deployments: live deployments by project/name.
	deployments map[string]bool
	last        uint64
}

// replayStream reads the whole stream now.
func (s *stack) replayStream() replay {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	st, err := s.js.Stream(ctx, streamName)
	if err != nil {
		s.t.Fatalf("replay: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatalf("replay: %v", err)
	}
	r := replay{created: map[string]int{}, live: map[string]bool{}, deployments: map[string]bool{}, last: info.State.LastSeq}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if err != nil {
			s.t.Fatalf("replay: message %d: %v", seq, err)
		}
		// infergate.events.<project>.<type>.<name>
		parts := strings.SplitN(msg.Subject, ".", 5)
		if len(parts) != 5 {
			continue
		}
		id := parts[2] + "/" + parts[4]
		var b eventv1.Batch
		if err := proto.Unmarshal(msg.Data, &b); err != nil {
			s.t.Fatalf("replay: message %d: %v", seq, err)
		}
		for _, e := range b.GetEvents() {
			switch {
			case e.GetKeyCreated() != nil:
				r.created[id]++
				r.live[id] = true
			case e.GetKeyDeleted() != nil:
				delete(r.live, id)
			case e.GetDeploymentCreated() != nil:
				r.deployments[id] = true
			case e.GetDeploymentDeleted() != nil:
				delete(r.deployments, id)
			}
		}
	}
	return r
}

// liveKeys is the sorted names of the project's live keys.
func (r replay) liveKeys(project string) []string {
	return namesIn(r.live, project)
}

func (r replay) liveDeployments(project string) []string {
	return namesIn(r.deployments, project)
}

func namesIn(m map[string]bool, project string) []string {
	var out []string
	for id := range m {
		if p, name, _ := strings.Cut(id, "/"); p == project {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// duplicates is every name in names more than once.
func duplicates(names []string) []string {
	seen := map[string]int{}
	var dup []string
	for _, n := range names {
		if seen[n]++; seen[n] == 2 {
			dup = append(dup, n)
		}
	}
	return dup
}

// diff says what a has that b lacks and the other way round, briefly.
func diff(a, b []string) string {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, x := range a {
		inA[x] = true
	}
	for _, x := range b {
		inB[x] = true
	}
	var onlyA, onlyB []string
	for x := range inA {
		if !inB[x] {
			onlyA = append(onlyA, x)
		}
	}
	for x := range inB {
		if !inA[x] {
			onlyB = append(onlyB, x)
		}
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	return fmt.Sprintf("%d only in the first %s, %d only in the second %s", len(onlyA), brief(onlyA), len(onlyB), brief(onlyB))
}

func brief(xs []string) string {
	if len(xs) > 5 {
		return fmt.Sprint(xs[:5]) + "…"
	}
	return fmt.Sprint(xs)
}

// ---------------------------------------------------------------------
// Waiting and figures.

// waitUntil polls cond until it returns nil, failing the test with cond's
// last error after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	if err := poll(d, cond); err != nil {
		t.Fatalf("waited %s for %s: %v", d, what, err)
	}
}

// poll calls cond until it returns nil or d passes; it returns cond's last
// error then.
func poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// figures collects a scenario's numbers and logs them on one line.
type figures struct {
	mu    sync.Mutex // mu protects kv
	kv    []string
	fault string
}

func newFigures(t *testing.T, fault string) *figures {
	f := &figures{fault: fault}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		t.Logf("FIGURES fault=%q %s (GOMAXPROCS=%d, race=%v)", f.fault, strings.Join(f.kv, " "), runtime.GOMAXPROCS(0), raceEnabled)
	})
	return f
}

func (f *figures) set(key string, value any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kv = append(f.kv, fmt.Sprintf("%s=%v", key, value))
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// percentile is the p-th percentile (0..100) of durations.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*p/100)]
}

// ---------------------------------------------------------------------
// A TCP proxy whose link can be cut, for a database that goes away.

// tcpProxy forwards connections to a target; cut closes every open one
// and refuses new ones until mend.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // mu protects the fields below
	up    bool
	conns map[net.Conn]struct{}
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, up: true, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrack(c)
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
	wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
	wg.Wait()
}

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.up {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// cut closes every connection and refuses new ones.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = false
	for c := range p.conns {
		c.Close()
	}
}

// mend accepts connections again.
func (p *tcpProxy) mend() {
	p.mu.Lock()
	p.up = true
	p.mu.Unlock()
}
