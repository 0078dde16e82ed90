// Package audit is the audit service's public face inside the repository:
// it builds the infergate.audit.v1.AuditService handler for the service's
// own process (cmd/infergate-audit) and for the one-process stack.
package audit

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/services/audit/internal/auditservice"
)

// Config is what the audit service needs; see auditservice.Config.
type Config = auditservice.Config

// NewHandler returns the Connect/gRPC/gRPC-Web handler and the path to
// mount it on.
func NewHandler(cfg Config, opts ...connect.HandlerOption) (string, http.Handler, error) {
	srv, err := auditservice.New(cfg)
	if err != nil {
		return "", nil, err
	}
	path, h := auditv1connect.NewAuditServiceHandler(srv, opts...)
	return path, h, nil
}
