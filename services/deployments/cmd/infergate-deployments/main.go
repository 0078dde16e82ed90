// Command infergate-deployments runs the deployment service
// (infergate.deployment.v1.DeploymentService) and its upstream status
// checker as their own process against an external NATS cluster and,
// optionally, PostgreSQL. Flags fall back to INFERGATE_* environment
// variables; see -help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/internal/controlplane"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "infergate-deployments:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg            controlplane.Config
		gatewayURL     string
		statusTimeout  time.Duration
		statusInterval time.Duration
	)
	fs := flag.NewFlagSet("infergate-deployments", flag.ExitOnError)
	cfg.RegisterFlags(fs, "127.0.0.1:8082", "infergate_deployments")
	fs.StringVar(&gatewayURL, "gateway-url", controlplane.Env("INFERGATE_GATEWAY_URL", "http://localhost:8000"),
		"public URL of the edge gateways; endpoint URLs are model-<name>.<project>.<its host> (env INFERGATE_GATEWAY_URL)")
	fs.DurationVar(&statusTimeout, "status-timeout", 2*time.Minute, "how long a new deployment's upstream has to answer before it is FAILED")
	fs.DurationVar(&statusInterval, "status-interval", time.Second, "how often a deploying upstream is probed")
	_ = fs.Parse(os.Args[1:])

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	plane, err := controlplane.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer plane.Close()
	path, h, err := deployments.NewHandler(deployments.Config{
		Events:     plane.Events,
		Reads:      plane.Reads,
		Projector:  plane.Projector,
		GatewayURL: gatewayURL,
		Log:        log,
		// Writes wait for the gateways' receipts.
		Propagation:        plane.Tracker,
		PropagationTimeout: cfg.PropagationTimeout,
	}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	checker, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{
		Events: plane.Events, Timeout: statusTimeout, Interval: statusInterval, Log: log,
	})
	if err != nil {
		return err
	}
	checkErr := make(chan error, 1)
	go func() { checkErr <- checker.Run(ctx) }()
	mux := controlplane.Mux(map[string]http.Handler{path: h}, deploymentv1connect.DeploymentServiceName)
	serveErr := plane.Serve(ctx, ln, mux, cfg.ShutdownGrace)
	stop()
	return errors.Join(serveErr, <-checkErr)
}
