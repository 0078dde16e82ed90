// Command infergate-keys runs the key service (infergate.key.v1.KeyService)
// as its own process against an external NATS cluster and, optionally,
// PostgreSQL. Flags fall back to INFERGATE_* environment variables; see
// -help.
package main

import (
	"net/http"

	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/keys"
)

func main() {
	controlplane.Process{
		Name: "infergate-keys", Addr: "127.0.0.1:8081", Schema: "infergate_keys",
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
			return controlplane.Service{
				Handlers: map[string]http.Handler{path: h},
				Names:    []string{keyv1connect.KeyServiceName},
			}, err
		},
	}.Main()
}
