// Command infergate-audit runs the audit service
// (infergate.audit.v1.AuditService) as its own process against an external
// NATS cluster. It keeps no store: every answer is a replay of the stream,
// sped up by checkpoints it keeps in memory. Flags fall back to INFERGATE_*
// environment variables; see -help.
package main

import (
	"context"
	"net/http"

	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/services/audit"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/internal/natsauth"
)

func main() {
	controlplane.Process{
		Name: "infergate-audit", Addr: "127.0.0.1:8083", Schema: "infergate_audit",
		Configure: func(cfg *controlplane.Config) {
			cfg.NoReadModel = true        // every answer is a replay of the stream
			cfg.Identity = natsauth.Audit // it only reads
		},
		Build: func(p *controlplane.Plane, _ controlplane.Config) (controlplane.Service, error) {
			hist, err := audit.NewHistory(audit.HistoryConfig{Events: p.Events, Log: p.Log})
			if err != nil {
				return controlplane.Service{}, err
			}
			path, h, err := audit.NewHandler(audit.Config{Events: p.Events, History: hist, Log: p.Log}, p.HandlerOptions()...)
			return controlplane.Service{
				Handlers:   map[string]http.Handler{path: h},
				Names:      []string{auditv1connect.AuditServiceName},
				Background: []func(context.Context) error{hist.Run},
			}, err
		},
	}.Main()
}
