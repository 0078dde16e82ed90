// Command infergate-keys runs the key service (infergate.key.v1.KeyService)
// and the usage service (infergate.usage.v1.UsageService, with the usage
// projection it answers from) as their own process against an external
// NATS cluster and, optionally, PostgreSQL. Flags fall back to INFERGATE_*
// environment variables; see -help.
package main

import (
	"context"
	"net/http"

	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/gen/infergate/usage/v1/usagev1connect"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/usageservice"
	"github.com/infergate/infergate/services/keys"
)

func main() {
	controlplane.Process{
		Name: "infergate-keys", Addr: "127.0.0.1:8081", Schema: "infergate_keys",
		Configure: func(cfg *controlplane.Config) { cfg.Usage = true },
		Build: func(p *controlplane.Plane, cfg controlplane.Config) (controlplane.Service, error) {
			path, h, err := keys.NewHandler(keys.Config{
				Events:    p.Events,
				Reads:     p.Reads,
				Projector: p.Projector,
				Log:       p.Log,
				// Writes wait for the gateways' receipts.
				Propagation:        p.Tracker,
				PropagationTimeout: cfg.PropagationTimeout,
				// Changes answer with tasks the plane's TaskService serves.
				Tasks: p.Tasks,
			}, p.HandlerOptions()...)
			if err != nil {
				return controlplane.Service{}, err
			}
			upath, uh, err := usageservice.NewHandler(usageservice.Config{Usage: p.Usage, Log: p.Log}, p.HandlerOptions()...)
			return controlplane.Service{
				Handlers:   map[string]http.Handler{path: h, upath: uh},
				Names:      []string{keyv1connect.KeyServiceName, usagev1connect.UsageServiceName},
				Background: []func(context.Context) error{p.RunUsage},
			}, err
		},
	}.Main()
}
