// Package deployments is the deployment service's public face inside the
// repository: it builds the infergate.deployment.v1.DeploymentService
// handler and the upstream status checker for the service's own process
// (cmd/infergate-deployments) and for the one-process stack.
package deployments

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/services/deployments/internal/deployservice"
	"github.com/infergate/infergate/services/deployments/internal/statuscheck"
)

// Config is what the deployment service needs; see deployservice.Config.
type Config = deployservice.Config

// StatusCheckConfig tunes the upstream status checker.
type StatusCheckConfig = statuscheck.Config

// StatusChecker moves deployments from DEPLOYING to DEPLOYED or FAILED.
type StatusChecker = statuscheck.Checker

// NewHandler returns the Connect/gRPC/gRPC-Web handler and the path to
// mount it on.
func NewHandler(cfg Config, opts ...connect.HandlerOption) (string, http.Handler, error) {
	srv, err := deployservice.New(cfg)
	if err != nil {
		return "", nil, err
	}
	path, h := deploymentv1connect.NewDeploymentServiceHandler(srv, opts...)
	return path, h, nil
}

// NewStatusChecker returns a checker; run it with Run(ctx).
func NewStatusChecker(cfg StatusCheckConfig) (*StatusChecker, error) {
	return statuscheck.New(cfg)
}
