// Package keys is the key service's public face inside the repository: it
// builds the infergate.key.v1.KeyService handler for the service's own
// process (cmd/infergate-keys) and for the one-process stack.
package keys

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/keys/internal/keyservice"
)

// Config is what the key service needs; see keyservice.Config.
type Config = keyservice.Config

// NewHandler returns the Connect/gRPC/gRPC-Web handler and the path to
// mount it on.
func NewHandler(cfg Config, opts ...connect.HandlerOption) (string, http.Handler, error) {
	srv, err := keyservice.New(cfg)
	if err != nil {
		return "", nil, err
	}
	path, h := keyv1connect.NewKeyServiceHandler(srv, opts...)
	return path, h, nil
}
