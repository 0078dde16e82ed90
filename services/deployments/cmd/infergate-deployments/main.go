// Command infergate-deployments runs the deployment service
// (infergate.deployment.v1.DeploymentService) and its upstream status
// checker as their own process against an external NATS cluster and,
// optionally, PostgreSQL; with --console it also serves the web console
// (console.go). Flags fall back to INFERGATE_* environment
// variables; see -help.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/services/deployments"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/snapshots"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

func main() {
	var (
		gatewayURL     string
		statusTimeout  time.Duration
		statusInterval time.Duration
		cons           consoleFlags
		upstreamAllow  string
		snapshotBucket string
		snapshotEvery  uint64
	)
	controlplane.Process{
		Name: "infergate-deployments", Addr: "127.0.0.1:8082", Schema: "infergate_deployments",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&gatewayURL, "gateway-url", controlplane.Env("INFERGATE_GATEWAY_URL", "http://localhost:8000"),
				"public URL of the edge gateways; endpoint URLs are model-<name>.<project>.<its host> (env INFERGATE_GATEWAY_URL)")
			fs.DurationVar(&statusTimeout, "status-timeout", 2*time.Minute, "how long a new deployment's upstream has to answer before it is FAILED")
			fs.DurationVar(&statusInterval, "status-interval", time.Second, "how often a deploying upstream is probed")
			cons.register(fs)
			fs.StringVar(&upstreamAllow, "upstream-allow", controlplane.Env("INFERGATE_UPSTREAM_ALLOW", ""),
				"upstream addresses allowed despite the default policy (which refuses loopback, link-local and unspecified addresses): CIDRs, addresses and host names, comma-separated (env INFERGATE_UPSTREAM_ALLOW)")
			fs.StringVar(&snapshotBucket, "snapshot-bucket", controlplane.Env("INFERGATE_SNAPSHOT_BUCKET", snapshots.DefaultBucket),
				"object store bucket this process saves auth map snapshots to, for gateways to start from (env INFERGATE_SNAPSHOT_BUCKET)")
			every, err := strconv.ParseUint(controlplane.Env("INFERGATE_SNAPSHOT_EVERY", strconv.Itoa(snapshots.DefaultEvery)), 10, 64)
			if err != nil {
				every = snapshots.DefaultEvery
			}
			fs.Uint64Var(&snapshotEvery, "snapshot-every", every,
				"save an auth map snapshot every this many stream records; 0: save none (env INFERGATE_SNAPSHOT_EVERY)")
		},
		Build: func(p *controlplane.Plane, cfg controlplane.Config) (controlplane.Service, error) {
			upstreams, err := upstreampolicy.Parse(upstreamAllow)
			if err != nil {
				return controlplane.Service{}, fmt.Errorf("--upstream-allow: %w", err)
			}
			path, h, err := deployments.NewHandler(deployments.Config{
				Events:     p.Events,
				Reads:      p.Reads,
				Projector:  p.Projector,
				GatewayURL: gatewayURL,
				Log:        p.Log,
				// Writes wait for the gateways' receipts.
				Propagation:        p.Tracker,
				PropagationTimeout: cfg.PropagationTimeout,
				// Changes answer with tasks the plane's TaskService serves.
				Tasks:     p.Tasks,
				Upstreams: upstreams,
			}, p.HandlerOptions()...)
			if err != nil {
				return controlplane.Service{}, err
			}
			checker, err := deployments.NewStatusChecker(deployments.StatusCheckConfig{
				Events: p.Events, Timeout: statusTimeout, Interval: statusInterval, Log: p.Log, Upstreams: upstreams,
			})
			if err != nil {
				return controlplane.Service{}, err
			}
			handlers := map[string]http.Handler{path: h}
			if err := cons.mount(handlers, p, cfg); err != nil {
				return controlplane.Service{}, err
			}
			background := []func(context.Context) error{checker.Run}
			if snapshotEvery > 0 {
				// The control plane is the one writer of snapshots; gateways
				// only read them (docs/security.md).
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				store, err := snapshots.Open(ctx, p.JS, snapshots.Config{Bucket: snapshotBucket, Replicas: p.Events.Config().Replicas})
				if err != nil {
					return controlplane.Service{}, err
				}
				snap, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: p.Events, Store: store, Every: snapshotEvery, Log: p.Log})
				if err != nil {
					return controlplane.Service{}, err
				}
				background = append(background, snap.Run)
			}
			return controlplane.Service{
				Handlers:   handlers,
				Names:      []string{deploymentv1connect.DeploymentServiceName},
				Background: background,
			}, nil
		},
	}.Main()
}
