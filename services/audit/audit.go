// Package audit is the audit service's public face inside the repository:
// it builds the infergate.audit.v1.AuditService handler for the service's
// own process (cmd/infergate-audit) and for the one-process stack.
package audit

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/services/audit/internal/auditservice"
	"github.com/infergate/infergate/services/audit/internal/history"
)

// Config is what the audit service needs; see auditservice.Config.
type Config = auditservice.Config

// History keeps checkpoints of every project's auth state along the
// stream; see history.Index. Run it with Run(ctx).
type History = history.Index

// HistoryConfig tunes a History.
type HistoryConfig = history.Config

// NewHistory returns a History to pass in Config.History.
func NewHistory(cfg HistoryConfig) (*History, error) { return history.New(cfg) }

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
