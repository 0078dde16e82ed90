package controlplane

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/infergate/infergate/gen/infergate/task/v1/taskv1connect"
)

// Service is what one control-plane process serves.
type Service struct {
	// Handlers are the Connect handlers by path.
	Handlers map[string]http.Handler
	// Names are the gRPC service names, for health and reflection.
	Names []string
	// Background tasks run until shutdown (a status checker, a history
	// index); an error from one stops the process.
	Background []func(context.Context) error
}

// Process describes a control-plane binary.
type Process struct {
	// Name is the binary's name, for flags and errors.
	Name string
	// Addr and Schema are its default listen address and read-model schema.
	Addr, Schema string
	// Flags registers the process's own flags.
	Flags func(fs *flag.FlagSet)
	// Configure adjusts the shared config after parsing (e.g. NoReadModel).
	Configure func(cfg *Config)
	// Build makes the service on the opened plane.
	Build func(p *Plane, cfg Config) (Service, error)
}

// Main runs the process: flags (with INFERGATE_* environment fallbacks),
// NATS, event store, read model and projector, the service, until SIGINT
// or SIGTERM, then a graceful shutdown. It exits non-zero on failure, and
// 0 when SIGINT or SIGTERM stopped it, whatever it was doing or waiting
// for then (NATS, the stream, the read model catching up).
func (pr Process) Main() {
	if err := pr.run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", pr.Name, err)
		os.Exit(1)
	}
}

func (pr Process) run(args []string) error {
	var cfg Config
	fs := flag.NewFlagSet(pr.Name, flag.ExitOnError)
	cfg.RegisterFlags(fs, pr.Addr, pr.Schema)
	if pr.Flags != nil {
		pr.Flags(fs)
	}
	_ = fs.Parse(args)
	if pr.Configure != nil {
		pr.Configure(&cfg)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := pr.serve(ctx, cfg, log)
	if ctx.Err() != nil {
		// Asked to stop: whatever was under way ended because of it.
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Info("stopped by signal", "err", err)
		}
		return nil
	}
	return err
}

func (pr Process) serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	plane, err := Open(ctx, cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer plane.Close()
	svc, err := pr.Build(plane, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // mu protects errs
		errs []error
	)
	for _, task := range svc.Background {
		wg.Go(func() {
			if err := task(ctx); err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	taskPath, taskHandler := plane.TaskService()
	handlers := maps.Clone(svc.Handlers)
	handlers[taskPath] = taskHandler
	mux := Mux(handlers, append(svc.Names, taskv1connect.TaskServiceName)...)
	serveErr := plane.Serve(ctx, ln, mux, cfg.ShutdownGrace)
	cancel()
	wg.Wait()
	return errors.Join(append(errs, serveErr)...)
}
