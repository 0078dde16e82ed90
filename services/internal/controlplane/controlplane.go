// Package controlplane is the process plumbing every control-plane service
// shares: the NATS connection and event store, the read model (PostgreSQL
// or memory) with its projector, the admin tokens, and an HTTP server with
// Connect, gRPC and gRPC-Web on one port plus gRPC health and reflection.
package controlplane

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/gen/infergate/task/v1/taskv1connect"

	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natslog"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/readmodel/postgres"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/tasks"
)

// Config is a control-plane process's configuration. Every field has a
// flag and an environment variable (the flag wins).
type Config struct {
	// Addr is where the API listens.
	Addr string
	// NATSURL is the NATS server or cluster (comma-separated URLs).
	NATSURL string
	// NATSNkey is the nkey seed file of the process's NATS user (natsauth);
	// empty: connect without authentication.
	NATSNkey string
	// NATSCA is a CA file for the NATS servers' TLS certificates; empty:
	// the system's roots.
	NATSCA string
	// Identity is the process's NATS role; default natsauth.ControlPlane.
	Identity natsauth.Role
	// StreamReplicas is the replica count the event stream must have (3 on
	// a production cluster); 0 accepts what it has. A process never
	// changes the stream: `infergate admin stream` does.
	StreamReplicas int
	// AdminTokensFile is the JSON file of admin tokens. Required.
	AdminTokensFile string
	// DatabaseURL selects the PostgreSQL read model; empty means memory.
	DatabaseURL string
	// DatabaseSchema is the PostgreSQL schema of this service's read model.
	DatabaseSchema string
	// ShutdownGrace bounds the wait for open requests at shutdown.
	ShutdownGrace time.Duration
	// PropagationTimeout bounds how long a write waits for the gateways'
	// receipts when the call does not say.
	PropagationTimeout time.Duration
	// NoReadModel skips the read model and its projector, for a service
	// that answers from the stream alone (audit).
	NoReadModel bool
	// Usage opens the usage projection (Plane.Usage), in the read
	// model's database when there is one; run it with RunUsage.
	Usage bool
}

// Env returns the environment variable name, or def when it is unset.
func Env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// RegisterFlags defines the shared flags on fs with defaults from the
// environment; addr and schema are the service's own defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet, addr, schema string) {
	replicas, err := strconv.Atoi(Env("INFERGATE_STREAM_REPLICAS", "0"))
	if err != nil {
		replicas = -1 // Validate reports it
	}
	grace, _ := time.ParseDuration(Env("INFERGATE_SHUTDOWN_GRACE", "15s"))
	fs.StringVar(&c.Addr, "addr", Env("INFERGATE_ADDR", addr), "listen address of the API (env INFERGATE_ADDR)")
	fs.StringVar(&c.NATSURL, "nats-url", Env("INFERGATE_NATS_URL", nats.DefaultURL), "NATS server URLs, comma-separated (env INFERGATE_NATS_URL)")
	fs.StringVar(&c.NATSNkey, "nats-nkey", Env("INFERGATE_NATS_NKEY", ""), "NATS nkey seed file of this process's NATS user (env INFERGATE_NATS_NKEY)")
	fs.StringVar(&c.NATSCA, "nats-ca", Env("INFERGATE_NATS_CA", ""), "CA file for the NATS servers' TLS certificates; default the system's (env INFERGATE_NATS_CA)")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", replicas, "replicas the event stream must have, else refuse to start; 0 accepts what it has. The stream is created and changed only by \"infergate admin stream\" (env INFERGATE_STREAM_REPLICAS)")
	fs.StringVar(&c.AdminTokensFile, "admin-tokens-file", Env("INFERGATE_ADMIN_TOKENS_FILE", ""), "JSON file of admin tokens (env INFERGATE_ADMIN_TOKENS_FILE)")
	fs.StringVar(&c.DatabaseURL, "database-url", Env("INFERGATE_DATABASE_URL", ""), "PostgreSQL URL for the read model; empty keeps it in memory (env INFERGATE_DATABASE_URL)")
	fs.StringVar(&c.DatabaseSchema, "database-schema", Env("INFERGATE_DATABASE_SCHEMA", schema), "PostgreSQL schema of the read model (env INFERGATE_DATABASE_SCHEMA)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", grace, "how long open requests may take at shutdown (env INFERGATE_SHUTDOWN_GRACE)")
	prop, _ := time.ParseDuration(Env("INFERGATE_PROPAGATION_TIMEOUT", "2s"))
	fs.DurationVar(&c.PropagationTimeout, "propagation-timeout", prop, "how long writes wait for every live gateway to apply them (env INFERGATE_PROPAGATION_TIMEOUT)")
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("--addr is required"))
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("--nats-url is required"))
	}
	if c.AdminTokensFile == "" {
		errs = append(errs, errors.New("--admin-tokens-file is required"))
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		errs = append(errs, fmt.Errorf("--stream-replicas %d is not in 0..5", c.StreamReplicas))
	}
	return errors.Join(errs...)
}

// Plane is an opened control-plane process: connected, projected and
// ready to serve.
type Plane struct {
	Events    *eventstore.Store
	Reads     readmodel.Store
	Projector *readmodel.Projector
	// Tracker follows the gateways' receipts; it is the services'
	// propagation.Waiter.
	Tracker *receipts.Tracker
	Tokens  *adminauth.Tokens
	Log     *slog.Logger
	// JS is the plane's JetStream context (the snapshotter's bucket).
	JS jetstream.JetStream
	// Usage is the usage projection; nil unless Config.Usage.
	Usage readmodel.UsageStore
	// Tasks are the tasks this process's changes answer with (REST's
	// task ids), followed on Tracker; TaskService serves them.
	Tasks *tasks.Registry

	closers []func()
}

// Open connects to NATS, opens the event store and the read model, and
// loads the admin tokens. Start the projector with RunProjector.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Plane, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tokens, err := adminauth.LoadFile(cfg.AdminTokensFile)
	if err != nil {
		return nil, err
	}
	auth, err := natsauth.Identity{Role: cmp.Or(cfg.Identity, natsauth.ControlPlane)}.ClientOptions(cfg.NATSNkey, cfg.NATSCA)
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.Name("infergate"), nats.MaxReconnects(-1)}
	opts = append(opts, natslog.Options(log, "writes fail as unavailable; reads are answered from the read model")...)
	opts = append(opts, auth...)
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	p := &Plane{Tokens: tokens, Log: log, closers: []func(){nc.Close}}
	if err := p.openStores(ctx, nc, cfg); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// OpenWith opens a plane on an existing NATS connection and token set (the
// one-process stack). The caller keeps ownership of nc.
func OpenWith(ctx context.Context, nc *nats.Conn, tokens *adminauth.Tokens, cfg Config, log *slog.Logger) (*Plane, error) {
	p := &Plane{Tokens: tokens, Log: log}
	if err := p.openStores(ctx, nc, cfg); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Plane) openStores(ctx context.Context, nc *nats.Conn, cfg Config) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	p.JS = js
	// Bind and verify only: a process started with other settings fails
	// here and leaves the stream as its owner made it.
	if p.Events, err = eventstore.Open(ctx, js, eventstore.Config{Replicas: cfg.StreamReplicas}); err != nil {
		return err
	}
	p.Events.SetLogger(p.Log)
	bound := p.Events.Config()
	p.Log.Info("event stream bound", "stream", bound.Stream, "replicas", bound.Replicas,
		"replicas_checked", cfg.StreamReplicas != 0, "duplicate_window", bound.DuplicateWindow, "memory", bound.Memory)
	switch {
	case cfg.NoReadModel:
	case cfg.DatabaseURL == "":
		p.Reads = readmodel.NewMemory()
	default:
		pg, err := postgres.Open(ctx, postgres.Config{URL: cfg.DatabaseURL, Schema: cfg.DatabaseSchema})
		if err != nil {
			return err
		}
		p.Reads = pg
		p.closers = append(p.closers, pg.Close)
	}
	if p.Reads != nil {
		p.Projector = readmodel.NewProjector(p.Events, p.Reads, p.Log)
	}
	if cfg.Usage {
		if pg, ok := p.Reads.(*postgres.Store); ok {
			p.Usage = pg.Usage()
		} else {
			p.Usage = readmodel.NewUsageMemory()
		}
	}
	if p.Tracker, err = receipts.NewTracker(nc, p.Events.Identity); err != nil {
		return err
	}
	p.closers = append(p.closers, p.Tracker.Close)
	p.Tasks = tasks.New(tasks.Config{Waiter: p.Tracker})
	p.closers = append(p.closers, p.Tasks.Close)
	return nil
}

// RunUsage binds the usage stream — waiting for its owner to create it
// (`infergate admin stream create --stream usage`), so a control plane
// upgraded before the stream exists still starts — and projects it into
// Usage until ctx ends. A stream that differs from its declaration is an
// error.
func (p *Plane) RunUsage(ctx context.Context) error {
	if p.Usage == nil {
		return errors.New("controlplane: no usage projection (Config.Usage)")
	}
	warned := false
	for {
		stream, err := eventstore.Open(ctx, p.JS, eventstore.UsageConfig())
		if err == nil {
			return readmodel.NewUsageProjector(stream, p.Usage, p.Log).Run(ctx)
		}
		if errors.Is(err, eventstore.ErrStreamMismatch) {
			return err
		}
		if !warned {
			p.Log.Warn("usage stream not available yet; usage answers stay empty until it is", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// TaskService returns the path and handler of infergate.task.v1.TaskService
// for the plane's tasks; mount it with the service's own handlers.
func (p *Plane) TaskService() (string, http.Handler) {
	return taskv1connect.NewTaskServiceHandler(tasks.NewServer(p.Tasks), p.HandlerOptions()...)
}

// Close releases what Open acquired.
func (p *Plane) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// HandlerOptions are the options every control-plane handler is built
// with: the admin-token interceptor (the per-project scope check; Serve
// has authenticated the token before the body was read), the message size
// limits (limits.go), and no gzip for answers under 1 KiB (it saves
// nothing there and cost 15 % of CreateKey's CPU; see
// docs/benchmarks.md).
func (p *Plane) HandlerOptions() []connect.HandlerOption {
	return append([]connect.HandlerOption{
		connect.WithInterceptors(adminauth.NewInterceptor(p.Tokens)),
		connect.WithCompressMinBytes(1024),
	}, limitOptions()...)
}

// Mux serves the handlers plus gRPC health and reflection for the named
// services, the latter two with the same message limits as the handlers,
// and the REST surface of the named services' annotated methods
// (rest.go) on every other path, with the OpenAPI document. Annotations
// the transcoder cannot serve (two methods on one route) make every REST
// route answer 500 with the reason; `make gen` refuses them first.
func Mux(handlers map[string]http.Handler, services ...string) *http.ServeMux {
	mux := http.NewServeMux()
	for path, h := range handlers {
		mux.Handle(path, h)
	}
	rest, err := restHandler(handlers, services)
	if err != nil {
		rest = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			adminauth.WriteRESTError(w, connect.CodeInternal, err.Error())
		})
	}
	mux.Handle("/", rest)
	mux.HandleFunc(OpenAPIPath, serveOpenAPI)
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...), limitOptions()...))
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, limitOptions()...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, limitOptions()...))
	return mux
}

// healthPath is the one path Serve answers without an admin token, so
// load balancers and orchestrators can probe the process.
const healthPath = "/" + grpchealth.HealthV1ServiceName + "/"

// consolePath is the web console's subtree (package console), also open:
// the console signs admins in with its own cookie and passes their token
// on to the API as "Authorization: Bearer", where it is checked. A process
// that does not mount the console answers 404 there.
const consolePath = "/console"

// Serve runs the projector and serves handler on ln until ctx ends; it
// waits for the read model to catch up before it accepts calls. Every
// request but gRPC health, the console's pages and the OpenAPI document
// (OpenAPIPath, exactly) must carry a valid admin token, checked from the
// headers before handler reads a byte of the body
// (adminauth.NewMiddleware); reflection, the REST routes and unknown paths
// included.
func (p *Plane) Serve(ctx context.Context, ln net.Listener, handler http.Handler, grace time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	projErr := make(chan error, 1)
	if p.Projector == nil {
		projErr <- nil
	} else {
		go func() { projErr <- p.Projector.Run(ctx) }()
		if err := p.Projector.WaitCaughtUp(ctx); err != nil {
			_ = ln.Close()
			return fmt.Errorf("read model did not catch up: %w", err)
		}
	}
	p.Log.Info("serving", "addr", ln.Addr().String())
	serveErr := httpserver.Serve(ctx, httpserver.New(ln.Addr().String(), publicOpenAPI(adminauth.NewMiddleware(p.Tokens, handler, healthPath, consolePath))), ln, grace)
	cancel()
	if err := <-projErr; err != nil && !errors.Is(err, context.Canceled) {
		return errors.Join(serveErr, err)
	}
	return serveErr
}
