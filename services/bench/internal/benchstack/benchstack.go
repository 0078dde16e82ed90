// Package benchstack runs infergate's real parts in one process for the
// benchmarks: an embedded NATS server with JetStream file storage, the key
// and deployment services behind the Connect API (with admin auth, the
// read model and the gateways' receipts tracker), the deployment status
// checker, and any number of edge gateways, each on its own NATS
// connection and HTTP listener, as separate gateway processes would be.
package benchstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
	"github.com/infergate/infergate/services/keys"
)

// upstreams is the stack's upstream policy: its demo upstream is on
// loopback, which the default policy refuses.
var upstreams = upstreampolicy.MustParse(upstreampolicy.Loopback)

// Config says what to run.
type Config struct {
	// Dir holds the NATS store. Required.
	Dir string
	// Gateways is how many edge gateways to start.
	Gateways int
	// Log receives the parts' logs; default discards.
	Log *slog.Logger
	// SyncAlways runs NATS with sync_interval: always (fsync before every
	// acknowledgement), as deploy/ recommends for production.
	SyncAlways bool
}

// Gateway is one running edge gateway.
type Gateway struct {
	*gateway.Gateway
	// URL is the gateway's HTTP address, http://127.0.0.1:port.
	URL string
}

// Stack is a running stack. Close stops it.
type Stack struct {
	NATS  *natsembed.Server
	Plane *controlplane.Plane
	// APIURL is the control plane's address and Token an admin token for
	// every project.
	APIURL, Token string
	// Client is an HTTP/1.1 client with enough idle connections for many
	// concurrent calls; Keys and Deployments use it.
	Client      *http.Client
	Keys        keyv1connect.KeyServiceClient
	Deployments deploymentv1connect.DeploymentServiceClient
	Gateways    []*Gateway
	// UpstreamURL is a demo model (services/internal/demomodel) that
	// streams a chunk every 20 ms, for deployments to point at.
	UpstreamURL string

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closers []func()
}

// Start starts a stack and returns once the control plane serves and every
// gateway is ready and reporting.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("benchstack: Dir is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Stack{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.NATS, err = natsembed.Start(natsembed.Config{StoreDir: filepath.Join(cfg.Dir, "nats"), SyncAlways: cfg.SyncAlways}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.NATS.Shutdown)
	nc, err := s.NATS.Connect(nats.Name("bench-control-plane"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, nc.Close)
	token, _, err := adminauth.New("bench", []string{adminauth.AllProjects})
	if err != nil {
		return nil, err
	}
	tokens, err := adminauth.FromToken("bench", token, []string{adminauth.AllProjects})
	if err != nil {
		return nil, err
	}
	s.Token = token
	// The stack owns its stream, as `infergate dev` does.
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := eventstore.EnsureStream(ctx, js, eventstore.Config{}); err != nil {
		return nil, err
	}
	// And the usage stream its gateways publish their counts to, so the
	// figures include usage counting as a real gateway does it.
	if err := eventstore.EnsureStream(ctx, js, eventstore.UsageConfig()); err != nil {
		return nil, err
	}
	if s.Plane, err = controlplane.OpenWith(ctx, nc, tokens, controlplane.Config{}, cfg.Log); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.Plane.Close)

	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.APIURL = "http://" + apiLn.Addr().String()
	kpath, kh, err := keys.NewHandler(keys.Config{
		Events: s.Plane.Events, Reads: s.Plane.Reads, Projector: s.Plane.Projector, Log: cfg.Log, Propagation: s.Plane.Tracker,
	}, s.Plane.HandlerOptions()...)
	if err != nil {
		return nil, err
	}
	dpath, dh, err := deployments.NewHandler(deployments.Config{
		Events: s.Plane.Events, Reads: s.Plane.Reads, Projector: s.Plane.Projector, Log: cfg.Log,
		GatewayURL: "http://localhost:8000", Propagation: s.Plane.Tracker, Upstreams: upstreams,
	}, s.Plane.HandlerOptions()...)
	if err != nil {
		return nil, err
	}
	checker, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{
		Events: s.Plane.Events, Interval: 20 * time.Millisecond, Log: cfg.Log, Upstreams: upstreams,
	})
	if err != nil {
		return nil, err
	}
	mux := controlplane.Mux(map[string]http.Handler{kpath: kh, dpath: dh},
		keyv1connect.KeyServiceName, deploymentv1connect.DeploymentServiceName)
	s.wg.Go(func() { _ = s.Plane.Serve(runCtx, apiLn, mux, time.Second) })
	s.wg.Go(func() { _ = checker.Run(runCtx) })

	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.UpstreamURL = "http://" + upLn.Addr().String()
	up := httpserver.New(upLn.Addr().String(), (&demomodel.Server{ChunkDelay: 20 * time.Millisecond}).Handler(""))
	s.wg.Go(func() { _ = httpserver.Serve(runCtx, up, upLn, time.Second) })

	s.Client = &http.Client{Transport: &http.Transport{
		MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute,
	}}
	opts := connect.WithInterceptors(adminauth.NewClientInterceptor(token))
	s.Keys = keyv1connect.NewKeyServiceClient(s.Client, s.APIURL, opts)
	s.Deployments = deploymentv1connect.NewDeploymentServiceClient(s.Client, s.APIURL, opts)

	for i := range cfg.Gateways {
		g, err := s.startGateway(runCtx, fmt.Sprintf("bench-gw-%d", i+1), cfg.Log)
		if err != nil {
			return nil, err
		}
		s.Gateways = append(s.Gateways, g)
	}
	if err := s.Plane.Projector.WaitCaughtUp(ctx); err != nil {
		return nil, err
	}
	if err := s.WaitGateways(ctx, cfg.Gateways); err != nil {
		return nil, err
	}
	return s, nil
}

// startGateway runs a gateway on its own NATS connection and listener.
func (s *Stack) startGateway(ctx context.Context, id string, log *slog.Logger) (*Gateway, error) {
	nc, err := s.NATS.Connect(nats.Name(id))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	store, err := eventstore.Open(ctx, js, eventstore.Config{})
	if err != nil {
		return nil, err
	}
	gw, err := gateway.New(gateway.Config{Events: store, NATS: nc, ID: id, Log: log, Upstreams: upstreams})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.wg.Go(func() { _ = gw.Run(ctx) })
	srv := httpserver.New(ln.Addr().String(), gw.Handler())
	srv.ReadTimeout, srv.WriteTimeout = 0, 0
	// As the gateway process serves it: the HTTP/1.1 fast path in front,
	// unless INFERGATE_HTTP1_FASTPATH=false (as for the process).
	front := gateway.NewFront(srv, os.Getenv("INFERGATE_HTTP1_FASTPATH") != "false", gw.Bounds())
	front.Use(gw)
	s.wg.Go(func() { _ = front.Serve(ctx, ln, time.Second) })
	return &Gateway{Gateway: gw, URL: "http://" + ln.Addr().String()}, nil
}

// WaitGateways waits until the control plane's tracker sees n live, ready
// gateways.
func (s *Stack) WaitGateways(ctx context.Context, n int) error {
	for {
		ready := 0
		for _, g := range s.Plane.Tracker.Gateways() {
			if g.Ready {
				ready++
			}
		}
		if ready >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("benchstack: %d of %d gateways reporting: %w", ready, n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// CreateKey creates a key through the API and returns its secret.
func (s *Stack) CreateKey(ctx context.Context, project, name string) (string, error) {
	res, err := s.Keys.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name}))
	if err != nil {
		return "", err
	}
	return res.Msg.GetSecret(), nil
}

// Deploy creates a deployment with auth on and the keys linked, through the
// API, and waits until the status checker has made it DEPLOYED and every
// gateway has applied that.
func (s *Stack) Deploy(ctx context.Context, project, name, upstream string, keys ...string) error {
	_, err := s.Deployments.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: project, Name: name, Model: "bench-model", UpstreamUrl: upstream, AuthEnabled: true, ApiKeys: keys,
	}))
	if err != nil {
		return err
	}
	for {
		res, err := s.Deployments.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: name}))
		if err != nil {
			return err
		}
		if res.Msg.GetDeployment().GetStatus() == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	last, err := s.Plane.Events.LastSequence(ctx)
	if err != nil {
		return err
	}
	for _, g := range s.Gateways {
		if err := g.WaitApplied(ctx, last); err != nil {
			return err
		}
	}
	return nil
}

// Close stops everything Start started.
func (s *Stack) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.Client != nil {
		s.Client.CloseIdleConnections()
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}
