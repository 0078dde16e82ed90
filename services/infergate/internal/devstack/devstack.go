// Package devstack runs the whole of infergate in one process — what
// `infergate dev` (and `make run`) starts: an embedded NATS server with
// JetStream keeping its files under the data dir, the key, deployment and
// audit services on one control-plane address (with the web console at
// /console/), one edge gateway, and with
// --demo the demo model upstream, reachable only through the gateway
// (demo.go).
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/gen/infergate/task/v1/taskv1connect"
	"github.com/infergate/infergate/gen/infergate/usage/v1/usagev1connect"
	"github.com/infergate/infergate/services/audit"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/console"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natslog"
	"github.com/infergate/infergate/services/internal/snapshots"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
	"github.com/infergate/infergate/services/internal/usageservice"
	"github.com/infergate/infergate/services/keys"
)

// Files in the data dir.
const (
	// TokenFile holds the generated admin token (mode 0600) for the CLI.
	TokenFile = "admin-token"
	// APIURLFile holds the control-plane URL for the CLI.
	APIURLFile = "api-url"
	// NATSKeysDir holds each part's NATS nkey seed (mode 0600); the
	// embedded server knows only their public keys (docs/security.md).
	NATSKeysDir = "nats-keys"
	// GatewayID is the stack's gateway's id, which its NATS user's
	// receipt subject names.
	GatewayID = "dev"
)

// Config is the one-process stack's configuration (SPEC §6).
type Config struct {
	DataDir         string // default ./.infergate
	APIAddr         string // default 127.0.0.1:8080
	GatewayAddr     string // default 127.0.0.1:8000
	NATSAddr        string // default 127.0.0.1:0 (a free port)
	BaseDomain      string // default localhost
	Region          string // default local
	AdminTokensFile string // else one generated token for every project
	DatabaseURL     string // else memory read models
	Demo            bool   // create a demo key and deployment
	// NoHTTP1FastPath serves the gateway through net/http only, without
	// its HTTP/1.1 fast path (docs/gateway.md).
	NoHTTP1FastPath bool
	// StatusInterval and StatusTimeout tune the deployment status checker.
	StatusInterval, StatusTimeout time.Duration
	// UsageFlushInterval is how often the gateways publish usage counts
	// (0: the gateway's default, 10 s).
	UsageFlushInterval time.Duration
	// Regions, if any, makes the embedded server the hub of those
	// regions, each with its own leaf NATS server, mirror and gateway
	// (regions.go; docs/multi-region.md). None: one server, one gateway.
	Regions []string
	// RegionMaxStaleness is the regions' gateways' staleness bound;
	// 0: the gateway's default (5m).
	RegionMaxStaleness time.Duration
	// RegionsAddr is where the regions' link switches listen; default
	// 127.0.0.1:0 (a free port).
	RegionsAddr string
	// GatewayNow is the gateway's clock (key expiry and the end of a
	// rotated secret's grace are checked against it); default time.Now.
	// Tests move it.
	GatewayNow func() time.Time
	// Out receives the banner; default os.Stdout.
	Out io.Writer
	// Log receives the services' logs; default discards below warnings.
	Log *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.DataDir, ".infergate")
	def(&c.APIAddr, "127.0.0.1:8080")
	def(&c.GatewayAddr, "127.0.0.1:8000")
	def(&c.NATSAddr, "127.0.0.1:0")
	def(&c.BaseDomain, "localhost")
	def(&c.Region, "local")
	def(&c.RegionsAddr, "127.0.0.1:0")
	if c.StatusInterval == 0 {
		c.StatusInterval = 250 * time.Millisecond
	}
	if c.StatusTimeout == 0 {
		c.StatusTimeout = 2 * time.Minute
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
}

// Stack describes a running stack.
type Stack struct {
	APIURL     string
	GatewayURL string
	// ConsoleURL is the web console (package console) on the API's port.
	ConsoleURL string
	NATSURL    string
	// Token is the admin token for every project, when the stack made it
	// (empty with AdminTokensFile).
	Token   string
	Gateway *gateway.Gateway
	// Demo is set when Config.Demo asked for a demo.
	Demo *Demo
	// DemoModelAddr is the demo model's own loopback listener, with
	// Config.Demo; it refuses every request that does not come through
	// the gateway (demo.go).
	DemoModelAddr string
	// Regions are the regions of Config.Regions; RegionsURL is where
	// their links are cut (POST /regions/<name>/cut) and healed.
	Regions    []*Region
	RegionsURL string

	gatewayPort string
}

// Run starts the stack, calls ready once every part serves, and runs
// until ctx ends.
func Run(ctx context.Context, cfg Config, ready func(*Stack)) error {
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	tokens, token, err := adminTokens(cfg)
	if err != nil {
		return err
	}
	if err := validRegions(cfg.Regions, cfg.Region); err != nil {
		return fmt.Errorf("--regions: %w", err)
	}
	natsHost, natsPort, err := splitAddr(cfg.NATSAddr)
	if err != nil {
		return fmt.Errorf("--nats-addr: %w", err)
	}
	// Each part connects as its own NATS user with least privilege: the
	// control plane, audit (read only) and the gateway (reads, and
	// publishes its receipts on its own subject).
	keysDir := filepath.Join(cfg.DataDir, NATSKeysDir)
	ids := natsIdentities{
		plane:   natsauth.Identity{Role: natsauth.ControlPlane},
		audit:   natsauth.Identity{Role: natsauth.Audit},
		gateway: natsauth.GatewayIdentity(cfg.Region, GatewayID),
	}
	users, err := natsauth.Users(keysDir, ids.plane, ids.audit, ids.gateway)
	if err != nil {
		return err
	}
	nsCfg := natsembed.Config{StoreDir: filepath.Join(cfg.DataDir, "nats"), Host: natsHost, Port: natsPort, Users: users}
	if len(cfg.Regions) > 0 {
		// The hub: its own JetStream domain, and the regions' leaf users.
		leafUsers, err := hubUsers(keysDir, cfg.Regions)
		if err != nil {
			return err
		}
		nsCfg.Users = append(nsCfg.Users, leafUsers...)
		nsCfg.Domain, nsCfg.LeafPort = eventstore.DefaultHubDomain, -1
	}
	ns, err := natsembed.Start(nsCfg)
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	connect := func(id natsauth.Identity) (*nats.Conn, error) {
		opts, err := id.ClientOptions(id.SeedFile(keysDir), "")
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Name("infergate-dev-"+string(id.Role)), nats.MaxReconnects(-1))
		return ns.Connect(append(opts, natslog.Options(cfg.Log, "writes fail as unavailable; the gateway serves from its map")...)...)
	}
	nc, err := connect(ids.plane)
	if err != nil {
		return err
	}
	defer nc.Close()

	// The one-process stack is also the stream's owner: it creates the
	// stream on first start (what `infergate admin stream create` does in
	// production) and verifies it afterwards, like every other process.
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := eventstore.EnsureStream(ctx, js, eventstore.Config{}); err != nil {
		return err
	}
	// And of the usage stream, which its gateways publish their counts to.
	if err := eventstore.EnsureStream(ctx, js, eventstore.UsageConfig()); err != nil {
		return err
	}
	plane, err := controlplane.OpenWith(ctx, nc, tokens, controlplane.Config{
		DatabaseURL: cfg.DatabaseURL, DatabaseSchema: "infergate_dev", Usage: true,
	}, cfg.Log)
	if err != nil {
		return err
	}
	defer plane.Close()
	snapshotter, err := openSnapshotter(ctx, plane, len(cfg.Regions) > 0, cfg.Log)
	if err != nil {
		return err
	}
	auditNC, auditEvents, err := bindAs(ctx, connect, ids.audit)
	if err != nil {
		return err
	}
	defer auditNC.Close()
	gwNC, gwEvents, err := bindAs(ctx, connect, ids.gateway)
	if err != nil {
		return err
	}
	defer gwNC.Close()
	gwJS, err := jetstream.New(gwNC)
	if err != nil {
		return err
	}
	gwSnaps, err := snapshots.Open(ctx, gwJS, snapshots.Config{ReadOnly: true})
	if err != nil {
		return err
	}

	apiLn, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	gwLn, err := net.Listen("tcp", cfg.GatewayAddr)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	st := &Stack{
		APIURL:      "http://" + apiLn.Addr().String(),
		ConsoleURL:  "http://" + apiLn.Addr().String() + console.Path,
		GatewayURL:  "http://" + cfg.BaseDomain + ":" + port(gwLn.Addr()),
		NATSURL:     ns.ClientURL(),
		Token:       token,
		gatewayPort: port(gwLn.Addr()),
	}
	var demoModel *demoUpstream
	if cfg.Demo {
		if demoModel, err = listenDemoUpstream(); err != nil {
			apiLn.Close()
			gwLn.Close()
			return err
		}
		st.DemoModelAddr = demoModel.ln.Addr().String()
	}

	kpath, kh, err := keys.NewHandler(keys.Config{
		Events: plane.Events, Reads: plane.Reads, Projector: plane.Projector, Log: cfg.Log, Propagation: plane.Tracker,
		Tasks: plane.Tasks,
	}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	// The demo model, and a developer's own model servers, are on this
	// machine: the dev stack allows loopback upstreams (link-local and
	// unspecified addresses stay refused).
	upstreams := upstreampolicy.MustParse(upstreampolicy.Loopback)
	dpath, dh, err := deployments.NewHandler(deployments.Config{
		Events: plane.Events, Reads: plane.Reads, Projector: plane.Projector, Log: cfg.Log, GatewayURL: st.GatewayURL,
		Propagation: plane.Tracker, Upstreams: upstreams, Tasks: plane.Tasks,
	}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	hist, err := audit.NewHistory(audit.HistoryConfig{Events: auditEvents, Log: cfg.Log})
	if err != nil {
		return err
	}
	apath, ah, err := audit.NewHandler(audit.Config{Events: auditEvents, History: hist, Log: cfg.Log}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	upath, uh, err := usageservice.NewHandler(usageservice.Config{Usage: plane.Usage, Log: cfg.Log}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	checker, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{
		Events: plane.Events, Interval: cfg.StatusInterval, Timeout: cfg.StatusTimeout, Log: cfg.Log, Upstreams: upstreams,
	})
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{
		Events: gwEvents, NATS: gwNC, Region: cfg.Region, BaseDomain: cfg.BaseDomain, ID: GatewayID, Log: cfg.Log,
		Snapshots: gwSnaps, Upstreams: upstreams, Now: cfg.GatewayNow,
		Usage: gateway.Usage{FlushInterval: cfg.UsageFlushInterval},
	})
	if err != nil {
		return err
	}
	st.Gateway = gw
	for _, name := range cfg.Regions {
		r, err := startRegion(ctx, cfg, keysDir, ns.LeafURL(), js, name)
		if err != nil {
			return err
		}
		defer r.close()
		st.Regions = append(st.Regions, r)
	}
	var regionsLn net.Listener
	if len(st.Regions) > 0 {
		if regionsLn, err = net.Listen("tcp", cfg.RegionsAddr); err != nil {
			return fmt.Errorf("regions control: %w", err)
		}
		st.RegionsURL = "http://" + regionsLn.Addr().String()
	}
	// The console calls the public API over loopback, with the signed-in
	// admin's token, like any other client.
	cons, err := console.New(console.Config{
		KeysURL: st.APIURL, DeploymentsURL: st.APIURL, AuditURL: st.APIURL, Tokens: tokens, Log: cfg.Log,
	})
	if err != nil {
		return err
	}
	tpath, th := plane.TaskService()
	mux := controlplane.Mux(map[string]http.Handler{kpath: kh, dpath: dh, apath: ah, tpath: th, upath: uh, console.Path: cons},
		keyv1connect.KeyServiceName, deploymentv1connect.DeploymentServiceName, auditv1connect.AuditServiceName,
		taskv1connect.TaskServiceName, usagev1connect.UsageServiceName)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // mu protects errs
		errs []error
	)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, context.Canceled) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				cancel()
			}
		}()
	}
	run("control plane", func() error { return plane.Serve(ctx, apiLn, mux, 5*time.Second) })
	run("status checker", func() error { return checker.Run(ctx) })
	run("audit history", func() error { return hist.Run(ctx) })
	run("snapshotter", func() error { return snapshotter.Run(ctx) })
	run("usage projection", func() error { return plane.RunUsage(ctx) })
	run("gateway", func() error { return gw.Run(ctx) })
	if demoModel != nil {
		run("demo model", func() error { return demoModel.serve(ctx) })
	}
	run("gateway server", func() error {
		front := gateway.NewFront(httpserver.New(gwLn.Addr().String(), gw.Handler()), !cfg.NoHTTP1FastPath, gw.Bounds())
		front.Use(gw)
		return front.Serve(ctx, gwLn, 5*time.Second)
	})
	for _, r := range st.Regions {
		run("gateway "+r.Name, func() error { return r.run(ctx, !cfg.NoHTTP1FastPath) })
	}
	if regionsLn != nil {
		run("regions control", func() error {
			srv := httpserver.New(regionsLn.Addr().String(), regionsControl(st.Regions, cfg.Log))
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(regionsLn); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}

	if err := st.waitReady(ctx, plane); err == nil {
		if err := os.WriteFile(filepath.Join(cfg.DataDir, APIURLFile), []byte(st.APIURL+"\n"), 0o600); err != nil {
			cancel()
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		} else if cfg.Demo {
			// A demo cut short by ctx's end is no failure: asked to stop.
			if st.Demo, err = ensureDemo(ctx, st, token, demoModel.url()); err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("demo: %w", err))
				mu.Unlock()
				cancel()
			}
		}
		if ctx.Err() == nil {
			printBanner(cfg, st)
			if ready != nil {
				ready(st)
			}
		}
	}
	<-ctx.Done()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return errors.Join(errs...)
}

type natsIdentities struct{ plane, audit, gateway natsauth.Identity }

// bindAs connects as id and binds to the event stream, which the stack
// has made sure of as the control plane: audit and the gateway may not
// create or change it.
func bindAs(ctx context.Context, connect func(natsauth.Identity) (*nats.Conn, error), id natsauth.Identity) (*nats.Conn, *eventstore.Store, error) {
	nc, err := connect(id)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	store, err := eventstore.Open(ctx, js, eventstore.Config{})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, store, nil
}

// openSnapshotter opens the snapshot bucket as the control plane, the one
// writer of snapshots. With regions it saves one within seconds of every
// change (a demo's history is short), so a region's restarted gateway can
// be seen starting from the region's copy.
func openSnapshotter(ctx context.Context, plane *controlplane.Plane, regions bool, log *slog.Logger) (*snapshots.Snapshotter, error) {
	store, err := snapshots.Open(ctx, plane.JS, snapshots.Config{})
	if err != nil {
		return nil, err
	}
	cfg := snapshots.SnapshotterConfig{Events: plane.Events, Store: store, Log: log}
	if regions {
		cfg.Every, cfg.Check = 1, 2*time.Second
	}
	return snapshots.NewSnapshotter(cfg)
}

// waitReady returns once the read model and the gateway have caught up.
func (st *Stack) waitReady(ctx context.Context, plane *controlplane.Plane) error {
	if err := plane.Projector.WaitCaughtUp(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	ready := func() bool {
		for _, r := range st.Regions {
			if !r.Gateway().Ready() {
				return false
			}
		}
		return st.Gateway.Ready()
	}
	for !ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// adminTokens loads the operator's tokens file, or loads (or makes) the
// stack's own token in the data dir.
func adminTokens(cfg Config) (*adminauth.Tokens, string, error) {
	if cfg.AdminTokensFile != "" {
		t, err := adminauth.LoadFile(cfg.AdminTokensFile)
		return t, "", err
	}
	path := filepath.Join(cfg.DataDir, TokenFile)
	data, err := os.ReadFile(path)
	token := strings.TrimSpace(string(data))
	if errors.Is(err, os.ErrNotExist) || token == "" {
		if token, _, err = adminauth.New("dev", []string{adminauth.AllProjects}); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			return nil, "", err
		}
	} else if err != nil {
		return nil, "", err
	}
	t, err := adminauth.FromToken("dev", token, []string{adminauth.AllProjects})
	return t, token, err
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var n int
	if _, err := fmt.Sscanf(p, "%d", &n); err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if n == 0 {
		n = -1
	}
	return host, n, nil
}

func port(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}
